"""AU-sPRO as the metric callback's optional ``pixel_spro``: through the real engine on a tiny MVTec LOCO AD tree,
equal to :func:`au_spro` on the same maps and defects, merged across ranks, and skipped with one warning where the
source has no per-defect ground truth."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adzoo.callbacks import anomaly_metrics
from adzoo.callbacks.anomaly_metrics import AnomalyMetrics
from adzoo.data import AnomalyDataModule
from adzoo.data.mvtec_loco import MVTecLOCOSource
from adzoo.metrics.spro import au_spro, resize_channels
from tests.data.test_mvtec_loco import loco_tree

SIZE = 16


def _scored(source: MVTecLOCOSource, maps: dict[str, np.ndarray], max_fpr: float) -> dict[str, float]:
    """au_spro per category, straight from the maps and the source's defects resized to the maps' size."""
    out = {}
    for category in source.categories():
        paths = [r.path for r in source._test[category]]
        channels = [resize_channels(source.defect_channels(p), maps[p].shape) for p in paths]
        out[category] = au_spro([maps[p] for p in paths], channels, max_fpr)
    return out


def test_engine_run_reports_pixel_spro_per_category(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run
    from adzoo.predict import load_model

    root = loco_tree(tmp_path / "loco")
    cfg = compose_cfg(
        "data=mvtec_loco", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn", "callbacks.metrics.spro_max_fpr=0.05",
    )  # fmt: skip
    run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    metrics = written["metrics"]
    assert metrics["conventions"]["spro_max_fpr"] == 0.05
    assert set(metrics["per_category"]) == {"breakfast_box", "juice_bottle"}
    for values in metrics["per_category"].values():
        assert 0.0 <= values["pixel_spro"] <= 1.0
    assert metrics["mean"]["pixel_spro"] == pytest.approx(
        sum(v["pixel_spro"] for v in metrics["per_category"].values()) / 2
    )
    # The same number from the trained model's maps of the test images.
    model, config = load_model(tmp_path / "run")
    source = MVTecLOCOSource(root)
    test = source.test_dataset(source.categories(), config["data"]["image_size"])
    maps = {}
    with torch.no_grad():  # in the test loop's batches of 4 (data.eval_batch_size), so the maps are the same floats
        for start in range(0, len(test), 4):
            items = [test[i] for i in range(start, min(start + 4, len(test)))]
            batch = model(torch.stack([s["image"] for s in items])).anomaly_map[:, 0].float().numpy()
            maps.update(zip([s["path"] for s in items], batch))
    expected = _scored(source, maps, 0.05)
    for category, value in expected.items():
        assert metrics["per_category"][category]["pixel_spro"] == pytest.approx(value, abs=1e-9)


def _batches(dm: AnomalyDataModule, seed: int = 0):
    """The test split in batches of 3, with maps that find the defects partly (so sPRO is neither 0 nor 1)."""
    g = torch.Generator().manual_seed(seed)
    test = dm.test_set
    items = [test[i] for i in range(len(test))]
    for start in range(0, len(items), 3):
        chunk = items[start : start + 3]
        masks = torch.stack([s["mask"] for s in chunk])
        maps = torch.rand(len(chunk), 1, SIZE, SIZE, generator=g) + 0.6 * masks * torch.rand(masks.shape, generator=g)
        outputs = {
            "pred_score": maps.flatten(1).amax(1),
            "anomaly_map": maps,
            "label": torch.tensor([s["label"] for s in chunk]),
            "mask": masks,
            "category": [s["category"] for s in chunk],
            "path": [s["path"] for s in chunk],
            "has_mask": torch.tensor([s["has_mask"] for s in chunk]),
        }
        yield outputs, {"image": torch.stack([s["image"] for s in chunk])}


def _callback(source, max_fpr: float | None = 0.05) -> AnomalyMetrics:
    cb = AnomalyMetrics(log_images=0, spro_max_fpr=max_fpr)
    cb.on_test_epoch_start(SimpleNamespace(datamodule=SimpleNamespace(source=source)), None)
    return cb


def test_pixel_spro_equals_au_spro_on_the_maps_and_merges_across_ranks(tmp_path: Path, monkeypatch) -> None:
    source = MVTecLOCOSource(loco_tree(tmp_path / "loco"))
    dm = AnomalyDataModule(source, name="mvtec_loco", image_size=SIZE, batch_size=3, preload=False)
    cb, rank0, rank1 = _callback(source), _callback(source), _callback(source)
    maps: dict[str, np.ndarray] = {}
    for n, (outputs, batch) in enumerate(_batches(dm)):
        cb._update(outputs, batch, keep_images=True)
        (rank0 if n % 2 == 0 else rank1)._update(outputs, batch, keep_images=True)
        maps.update(zip(outputs["path"], outputs["anomaly_map"][:, 0].numpy()))
        union = torch.stack([torch.from_numpy(np.logical_or.reduce(
            [c for c, _ in resize_channels(source.defect_channels(p), (SIZE, SIZE))] or [np.zeros((SIZE, SIZE), bool)]
        )) for p in outputs["path"]])  # fmt: skip
        assert torch.equal(union, outputs["mask"][:, 0] > 0.5)  # the channels' union is the datamodule's mask
    results = cb.compute()[0]
    expected = _scored(source, maps, 0.05)
    for category, value in expected.items():
        assert results["per_category"][category]["pixel_spro"] == pytest.approx(value, abs=1e-12)
        assert 0.0 < value < 1.0

    # Two ranks: each gathers the other's states (adzoo.utils.distributed.gather_objects, faked here).
    seen: list = []
    monkeypatch.setattr(anomaly_metrics, "gather_objects", lambda obj: seen.append(obj) or [obj])
    rank1._gathered()
    monkeypatch.setattr(anomaly_metrics, "gather_objects", lambda obj: [obj, seen[0]])
    merged = rank0.compute()[0]
    for category, value in expected.items():
        assert merged["per_category"][category]["pixel_spro"] == pytest.approx(value, abs=1e-12)


def test_without_defect_channels_one_warning_and_no_pixel_spro(tmp_path: Path, caplog) -> None:
    source = MVTecLOCOSource(loco_tree(tmp_path / "loco"))
    dm = AnomalyDataModule(source, name="mvtec_loco", image_size=SIZE, batch_size=3, preload=False)
    plain = SimpleNamespace(categories=source.categories)  # a source without defect_channels
    cb = AnomalyMetrics(log_images=0, spro_max_fpr=0.05)
    with caplog.at_level(logging.WARNING, logger=anomaly_metrics.__name__):
        for _ in range(2):  # two test epochs, one warning
            cb.on_test_epoch_start(SimpleNamespace(datamodule=SimpleNamespace(source=plain)), None)
            for outputs, batch in _batches(dm):
                cb._update(outputs, batch, keep_images=True)
            results = cb.compute()[0]
    warnings = [r.getMessage() for r in caplog.records if "spro_max_fpr" in r.getMessage()]
    assert len(warnings) == 1 and "SimpleNamespace has no per-defect ground truth" in warnings[0]
    assert all("pixel_spro" not in m for m in results["per_category"].values())
    assert all(0.0 <= m["pixel_auroc"] <= 1.0 for m in results["per_category"].values())  # the rest is scored

    off = _callback(source, None)  # off by default: nothing kept, nothing added
    for outputs, batch in _batches(dm):
        off._update(outputs, batch, keep_images=True)
    assert all(not s.spro for s in off._states.values())
    assert all("pixel_spro" not in m for m in off.compute()[0]["per_category"].values())


def test_a_category_without_defects_scores_nan_and_bad_limits_are_refused(tmp_path: Path) -> None:
    source = MVTecLOCOSource(loco_tree(tmp_path / "loco"))
    dm = AnomalyDataModule(source, name="mvtec_loco", image_size=SIZE, batch_size=3, preload=False)
    cb = _callback(source)
    for outputs, batch in _batches(dm):
        keep = [i for i, label in enumerate(outputs["label"].tolist()) if label == 0]  # good images only
        outputs = {k: [v[i] for i in keep] if isinstance(v, list) else v[keep] for k, v in outputs.items()}
        if keep:
            cb._update(outputs, {"image": batch["image"][keep]}, keep_images=True)
    assert all(math.isnan(m["pixel_spro"]) for m in cb.compute()[0]["per_category"].values())
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"spro_max_fpr must be in \(0, 1\] or null"):
            AnomalyMetrics(spro_max_fpr=bad)
