"""The shared datamodule: settings, batches, per-category selection and DDP sharding."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from adzoo.data import AnomalyDataModule, MVTecLayoutSource, generated_source
from adzoo.data.datamodule import UnrepeatedDistributedSampler


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gen")
    return generated_source(root, image_size=32, n_train=4, n_test_good=2, n_test_per_defect=1)


def test_unified_batches_carry_every_field(source) -> None:
    dm = AnomalyDataModule(source, image_size=24, batch_size=5)
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) >= {"image", "mask", "label", "category", "path", "has_mask"}
    assert batch["image"].shape[1:] == (3, 24, 24) and batch["mask"].shape[1:] == (1, 24, 24)
    assert len(set(dm.categories)) >= 6
    categories = {c for b in dm.test_dataloader() for c in b["category"]}
    assert categories == set(dm.categories)


def test_separate_setting_gives_one_category_each(source) -> None:
    dm = AnomalyDataModule(source, image_size=16, setting="separate")
    one = dm.for_category(dm.categories[0])
    assert one.categories == [dm.categories[0]]
    assert {c for b in one.train_dataloader() for c in b["category"]} == {dm.categories[0]}


def test_bad_keys_are_named(source) -> None:
    with pytest.raises(ValueError, match=r"data\.setting"):
        AnomalyDataModule(source, setting="both")
    with pytest.raises(ValueError, match=r"data\.image_size"):
        AnomalyDataModule(source, image_size=-3)
    with pytest.raises(ValueError, match=r"data\.categories"):
        AnomalyDataModule(source, categories=["no_such_category"])


def test_fingerprint_is_stable(source) -> None:
    a = AnomalyDataModule(source).fingerprint()
    b = AnomalyDataModule(source).fingerprint()
    assert a == b and a["files"] > 0


def test_fingerprint_follows_content_and_names_not_location(source, tmp_path: Path) -> None:
    """results.json must tell two data sets apart by what was read: same files anywhere → same fingerprint."""
    copy = tmp_path / "copy"
    shutil.copytree(source.root, copy)
    original = AnomalyDataModule(source).fingerprint()
    assert AnomalyDataModule(MVTecLayoutSource(copy)).fingerprint() == original
    assert original["kind"] == "content"

    image = copy / "fabric" / "train" / "good" / "000.png"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # same size, one byte different
    image.write_bytes(bytes(data))
    edited = AnomalyDataModule(MVTecLayoutSource(copy)).fingerprint()
    assert edited != original and edited["files"] == original["files"]

    shutil.copy(source.root / "fabric" / "train" / "good" / "000.png", image)  # restored bytes: same again
    assert AnomalyDataModule(MVTecLayoutSource(copy)).fingerprint() == original
    image.rename(image.with_name("900.png"))
    renamed = AnomalyDataModule(MVTecLayoutSource(copy)).fingerprint()
    assert renamed != original and renamed["files"] == original["files"]


def test_unrepeated_sampler_covers_each_index_once() -> None:
    shards = [list(UnrepeatedDistributedSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


def test_generated_root_is_reused(tmp_path: Path) -> None:
    a = generated_source(tmp_path, image_size=16, n_train=2, n_test_good=1, n_test_per_defect=1)
    b = generated_source(tmp_path, image_size=16, n_train=2, n_test_good=1, n_test_per_defect=1)
    assert a.root == b.root


def test_duplicate_categories_are_used_once_with_a_warning(source, caplog: pytest.LogCaptureFixture) -> None:
    first, second = source.categories()[:2]
    with caplog.at_level(logging.WARNING, logger="adzoo.data.types"):
        dm = AnomalyDataModule(source, image_size=16, categories=[first, first, second, first])
    assert dm.categories == [first, second]
    expected = len(source.train_dataset([first, second], 16))
    assert len(dm.train_set) == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and repr(first) in warnings[0] and repr(second) not in warnings[0]


def test_validate_runs_the_source_check_when_there_is_one(source) -> None:
    AnomalyDataModule(source, image_size=16).validate()  # the generated set is valid

    class InMemory:
        """A source without files, hence without ``validate``."""

        def __init__(self) -> None:
            self.inner = source

        def categories(self) -> list[str]:
            return self.inner.categories()

        def has_masks(self, category: str) -> bool:
            return True

        def train_dataset(self, categories, image_size):
            return self.inner.train_dataset(categories, image_size)

        def test_dataset(self, categories, image_size):
            return self.inner.test_dataset(categories, image_size)

    AnomalyDataModule(InMemory(), image_size=16).validate()  # nothing to check, and no AttributeError
