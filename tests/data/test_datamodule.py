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
        dm = AnomalyDataModule(source, image_size=16, categories=[first, first, second, first], val_fraction=0)
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


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gen20")
    return generated_source(root, image_size=16, n_train=20, n_test_good=1, n_test_per_defect=1)


def _paths(dataset) -> list[str]:
    return [dataset[i]["path"] for i in range(len(dataset))]


def test_validation_is_held_out_from_train_per_category_and_seeded(larger) -> None:
    dm = AnomalyDataModule(larger, image_size=16, val_fraction=0.1, seed=0)
    train, val = _paths(dm.train_set), _paths(dm.val_set)
    everything = _paths(larger.train_dataset(dm.categories, 16))
    assert len(val) == 2 * len(dm.categories) and not set(train) & set(val)  # round(0.1 · 20) = 2 per category
    assert sorted(train + val) == sorted(everything)
    for category in dm.categories:
        assert sum(f"/{category}/" in p for p in val) == 2
    assert _paths(AnomalyDataModule(larger, image_size=16, val_fraction=0.1, seed=0).val_set) == val
    assert _paths(AnomalyDataModule(larger, image_size=16, val_fraction=0.1, seed=1).val_set) != val
    one = AnomalyDataModule(larger, image_size=16, val_fraction=0.1, seed=0).for_category(dm.categories[0])
    assert _paths(one.val_set) == [p for p in val if f"/{dm.categories[0]}/" in p]  # adding categories moves none
    assert {b["label"].max().item() for b in dm.val_dataloader()} == {0}
    assert set(_paths(dm.test_set)).isdisjoint(val)  # the validation loader is never the test set
    assert dm.describe()["val_images"] == len(val)


def test_no_validation_split_keeps_the_training_set_as_it_is(larger) -> None:
    dm = AnomalyDataModule(larger, image_size=16, val_fraction=0.0)
    assert dm.val_set is None and _paths(dm.train_set) == _paths(larger.train_dataset(dm.categories, 16))
    with pytest.raises(ValueError, match=r"no validation split \(data\.val_fraction=0\)"):
        dm.val_dataloader()


def test_a_split_that_leaves_nothing_to_fit_names_the_numbers(source) -> None:
    dm = AnomalyDataModule(source, image_size=16, val_fraction=0.9)  # 4 training images per category
    with pytest.raises(ValueError, match=r"data\.val_fraction=0\.9: category '\w+' has 4 training image\(s\); "
                       r"holding out 4 would leave 0 to fit on"):  # fmt: skip
        dm.setup()
    assert len(AnomalyDataModule(source, image_size=16, val_fraction=0.8).train_set) == len(dm.categories)
    with pytest.raises(ValueError, match=r"data\.val_fraction must be in \[0, 1\)"):
        AnomalyDataModule(source, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"data\.val_anomalies"):
        AnomalyDataModule(source, val_anomalies="scribbles")


def test_synthetic_validation_anomalies_come_with_exact_masks(larger) -> None:
    dm = AnomalyDataModule(larger, image_size=16, val_fraction=0.1, val_anomalies="cutpaste")
    labels = [dm.val_set[i]["label"] for i in range(len(dm.val_set))]
    assert labels.count(0) == labels.count(1) == 2 * len(dm.categories)
    for i in range(len(dm.val_set)):
        item = dm.val_set[i]
        assert bool(item["mask"].any()) == (item["label"] == 1)
    assert dm.describe()["val_anomalies"] == "cutpaste"


def test_a_shipped_validation_split_is_used_instead_of_holding_out(source, tmp_path: Path) -> None:
    copy = tmp_path / "ad2"
    shutil.copytree(source.root, copy)
    category = sorted(p.name for p in copy.iterdir() if p.is_dir())[0]
    shipped = copy / category / "validation" / "good"
    shipped.mkdir(parents=True)
    first = sorted((copy / category / "train" / "good").iterdir())[0]
    shutil.copy(first, shipped / "v000.png")
    dm = AnomalyDataModule(MVTecLayoutSource(copy), image_size=16, val_fraction=0.25, categories=[category])
    assert _paths(dm.val_set) == [str(shipped / "v000.png")]
    assert len(dm.train_set) == 4  # nothing held out of train: the data set ships its own split
    assert dm.val_source == {category: "shipped"}
