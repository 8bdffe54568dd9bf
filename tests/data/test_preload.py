"""Decode once: preloaded splits serve exactly what lazy reading gives, within their memory budget."""

from __future__ import annotations

import logging

import pytest
import torch

from adzoo.data import AnomalyDataModule, generated_source
from adzoo.data.preload import PreloadedDataset, default_workers, preload_splits


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gen")
    return generated_source(root, image_size=32, n_train=4, n_test_good=2, n_test_per_defect=1)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("image_size", [32, 24])
def test_preloaded_items_equal_lazy_reads_bit_for_bit(source, image_size: int) -> None:
    lazy = source.test_dataset(source.categories(), image_size)
    preloaded = PreloadedDataset(lazy, threads=2)
    assert len(preloaded) == len(lazy)
    for index in range(len(lazy)):
        _same(preloaded[index], lazy[index])
    # 8-bit PNGs at their own size are held as exact uint8 (4x smaller); resized ones as float32.
    assert preloaded.uint8 == (len(lazy) if image_size == 32 else 0)
    preloaded[0]["image"].zero_()  # a caller that writes into a sample does not change the store
    _same(preloaded[0], lazy[0])


def test_a_datamodule_preloads_every_split_and_needs_no_loader_workers(source) -> None:
    dm = AnomalyDataModule(source, image_size=32, batch_size=4, val_fraction=0.25, val_anomalies="confetti")
    described = dm.describe()
    assert described["preloaded"] == ["train", "validation", "test"]
    assert described["loader_workers"] == {"train": 0, "validation": 0, "test": 0}
    lazy = AnomalyDataModule(source, image_size=32, batch_size=4, val_fraction=0.25, val_anomalies="confetti",
                             preload=False)  # fmt: skip
    assert lazy.describe()["loader_workers"]["train"] == default_workers()
    for name in ("train", "val", "test"):
        fast, slow = getattr(dm, f"{name}_set"), getattr(lazy, f"{name}_set")
        for index in range(len(slow)):
            _same(fast[index], slow[index])


def test_auto_stops_at_the_first_split_over_budget_and_keeps_the_rest_lazy(source, caplog) -> None:
    train = source.train_dataset(source.categories(), 32)
    test = source.test_dataset(source.categories(), 32)
    item_bytes = 3 * 32 * 32 + 32 * 32  # uint8 image + bool mask
    budget_gb = (len(train) * item_bytes + 10) / 1024**3  # room for train, not for test
    with caplog.at_level(logging.INFO, logger="adzoo.data.preload"):
        out = preload_splits({"train": train, "validation": None, "test": test}, "auto", budget_gb, 2**40)
    assert isinstance(out["train"], PreloadedDataset) and out["validation"] is None and out["test"] is test
    assert "the test split" in caplog.text and "read lazily" in caplog.text
    out = preload_splits({"train": train, "test": test}, "auto", 64.0, available=1000)  # half of free memory
    assert out == {"train": train, "test": test}
    assert preload_splits({"train": train}, False, 64.0, 2**40)["train"] is train
    assert isinstance(preload_splits({"train": train}, True, 0.0, 0)["train"], PreloadedDataset)


def test_default_workers_leave_one_core_to_training() -> None:
    assert [default_workers(c) for c in (1, 2, 3, 8, 64)] == [0, 1, 2, 4, 4]


def test_bad_loader_settings_are_named(source) -> None:
    with pytest.raises(ValueError, match=r"data\.num_workers must be auto or an integer >= 0, got -1"):
        AnomalyDataModule(source, num_workers=-1)
    with pytest.raises(ValueError, match=r"data\.preload must be one of auto, true, false; got 'yes'"):
        AnomalyDataModule(source, preload="yes")
    with pytest.raises(ValueError, match=r"data\.preload_max_gb"):
        AnomalyDataModule(source, preload_max_gb=-1)
    dm = AnomalyDataModule(source, num_workers=3)
    assert dm.workers_for(dm.train_set) == 3  # an explicit count wins, preloaded or not


def test_preloaded_and_lazy_runs_give_identical_metrics(compose_cfg, tmp_path) -> None:
    """The real path: a patch-kNN run reading through preloaded splits equals one reading lazily."""
    from adzoo.engine import run
    from tests.conftest import TINY_DATA, TINY_METHOD

    overrides = ["method=patchknn", *TINY_DATA, *TINY_METHOD["patchknn"], "data.categories=[pill,wood]"]
    fast = run(compose_cfg(*overrides, run_dir=tmp_path / "preloaded"))
    slow = run(compose_cfg(*overrides, "data.preload=false", "data.num_workers=0", run_dir=tmp_path / "lazy"))
    assert fast["data"]["preloaded"] == ["train", "validation", "test"] and slow["data"]["preloaded"] == []
    assert fast["metrics"] == slow["metrics"]
