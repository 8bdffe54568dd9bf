"""The metric callback: per-category metrics equal the functional metrics on each category's data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score

from adzoo.callbacks import AnomalyMetrics
from adzoo.metrics import aupro


def _batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for b in range(3):
        n = 4
        labels = torch.tensor([0, 1, 0, 1])
        masks = torch.zeros(n, 1, 16, 16)
        masks[1, :, 2:6, 2:6] = 1
        masks[3, :, 8:12, 5:9] = 1
        maps = torch.rand(n, 1, 16, 16, generator=g) + masks * torch.rand(1, generator=g)
        categories = ["a", "a", "b", "b"] if b < 2 else ["a", "b", "a", "b"]
        outputs = {
            "pred_score": maps.flatten(1).amax(1),
            "anomaly_map": maps,
            "label": labels,
            "mask": masks,
            "category": categories,
            "path": [f"img{b}_{i}.png" for i in range(n)],
            "has_mask": torch.tensor([c == "a" for c in categories]),
        }
        yield outputs, {"image": torch.rand(n, 3, 16, 16, generator=g)}


def test_per_category_metrics_match_functional(tmp_path: Path) -> None:
    cb = AnomalyMetrics(backend="exact", pool_kernel=4, output_dir=str(tmp_path))
    collected = {"a": [], "b": []}
    for outputs, batch in _batches():
        cb._update(outputs, batch)
        for i, c in enumerate(outputs["category"]):
            collected[c].append(
                (outputs["pred_score"][i], outputs["label"][i], outputs["anomaly_map"][i, 0], outputs["mask"][i, 0])
            )
    results, rows = cb.compute()
    for category, items in collected.items():
        scores = torch.stack([s for s, *_ in items])
        labels = torch.stack([lab for _, lab, *_ in items])
        expected = roc_auc_score(labels.numpy(), scores.numpy())
        assert results["per_category"][category]["image_auroc"] == pytest.approx(expected, abs=1e-9)
    maps_a = torch.stack([m for *_, m, _ in collected["a"]])
    masks_a = torch.stack([k for *_, k in collected["a"]])
    assert results["per_category"]["a"]["pixel_aupro"] == pytest.approx(float(aupro(maps_a, masks_a > 0)), abs=1e-9)
    # category b has no pixel ground truth: skipped, and the results say so
    assert "pixel_auroc" not in results["per_category"]["b"]
    assert "pixel metrics skipped" in results["notes"]["b"]
    mean = results["mean"]["image_auroc"]
    assert math.isclose(
        mean, (results["per_category"]["a"]["image_auroc"] + results["per_category"]["b"]["image_auroc"]) / 2
    )
    assert len(rows) == 12
    cb.per_image = rows
    cb.write_predictions(tmp_path / "predictions.csv")
    assert len(list(csv.DictReader((tmp_path / "predictions.csv").read_text().splitlines()))) == 12


def test_streaming_backend_agrees_with_exact() -> None:
    exact, streaming = AnomalyMetrics(backend="exact"), AnomalyMetrics(backend="streaming", bins=4096)
    for outputs, batch in _batches(1):
        exact._update(outputs, batch)
        streaming._update(outputs, batch)
    a, b = exact.compute()[0]["per_category"]["a"], streaming.compute()[0]["per_category"]["a"]
    for key in ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"):
        assert b[key] == pytest.approx(a[key], abs=1e-3), key


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="exact"):
        AnomalyMetrics(backend="approximate")


def test_no_sigmoid_no_flip() -> None:
    cb = AnomalyMetrics(backend="exact", pool_kernel=2)
    maps = torch.full((4, 1, 4, 4), 1e6)
    maps[0] += 1.0  # the normal image scores highest: AUROC must stay below 0.5, never flipped
    outputs = {
        "pred_score": maps.flatten(1).amax(1),
        "anomaly_map": maps,
        "label": torch.tensor([0, 1, 1, 1]),
        "mask": torch.zeros(4, 1, 4, 4),
        "category": ["x"] * 4,
        "path": list("abcd"),
        "has_mask": torch.tensor([False] * 4),
    }
    cb._update(outputs, {"image": torch.zeros(4, 3, 4, 4)})
    results, _ = cb.compute()
    assert results["per_category"]["x"]["image_auroc"] < 0.5


def test_examples_mix_defects_with_the_likeliest_false_positive_and_say_what_they_show(tmp_path: Path) -> None:
    """Four places per category: three anomalous images, taking the defect types in turn, then the highest-scoring
    normal one, whichever batch it came in; examples.json gives each panel's path, label, defect type and score."""
    import json

    from adzoo.callbacks.anomaly_metrics import EXAMPLES_INDEX, defect_type

    cb = AnomalyMetrics(log_images=4, output_dir=str(tmp_path))
    normal_scores = [0.2, 0.9, 0.1, 0.5, 0.95, 0.3]  # the best normal (0.95) comes in the second batch
    for b in range(2):
        n = 8
        labels = torch.tensor([0, 1] * 4)
        scores = torch.tensor([normal_scores[3 * b + i // 2] if i % 2 == 0 else 0.5 + 0.01 * i for i in range(6)]
                              + [0.0, 0.6])  # fmt: skip
        masks = torch.zeros(n, 1, 8, 8)
        masks[labels == 1, :, 2:4, 2:4] = 1
        outputs = {
            "pred_score": scores,
            "anomaly_map": torch.rand(n, 1, 8, 8),
            "label": labels,
            "mask": masks,
            "category": ["a"] * n,
            "path": [f"/d/a/test/{'good' if i % 2 == 0 else ('crack', 'hole')[b]}/{b}{i}.png" for i in range(n)],
            "has_mask": torch.ones(n, dtype=torch.bool),
        }
        cb._update(outputs, {"image": torch.rand(n, 3, 8, 8)})
    written = cb.save_examples(tmp_path / "examples")
    index = json.loads((tmp_path / "examples" / EXAMPLES_INDEX).read_text())
    assert [p.name for p in written] == [r["file"] for r in index] == [f"a_{n}.png" for n in range(4)]
    assert [r["label"] for r in index] == [1, 1, 1, 0]
    assert [r["path"] for r in index[:3]] == [
        "/d/a/test/crack/01.png",  # one defect type after the other: crack (batch 0), then hole (batch 1)
        "/d/a/test/hole/11.png",
        "/d/a/test/crack/03.png",
    ]
    assert index[3]["path"] == "/d/a/test/good/12.png" and index[3]["score"] == pytest.approx(0.95)
    assert [r["defect"] for r in index] == ["crack", "hole", "crack", "good"]
    assert defect_type("digits/7/00012.png", 1) is None  # a path outside the MVTec layout does not name a defect


def test_examples_without_normal_images_fill_every_place_with_defects() -> None:
    cb = AnomalyMetrics(log_images=4)
    n = 6
    outputs = {
        "pred_score": torch.rand(n),
        "anomaly_map": torch.rand(n, 1, 8, 8),
        "label": torch.ones(n, dtype=torch.long),
        "mask": torch.ones(n, 1, 8, 8),
        "category": ["a"] * n,
        "path": [f"x{i}.png" for i in range(n)],
        "has_mask": torch.ones(n, dtype=torch.bool),
    }
    cb._update(outputs, {"image": torch.rand(n, 3, 8, 8)})
    assert [example.path for example, _ in cb.example_panels()["a"]] == ["x0.png", "x1.png", "x2.png", "x3.png"]
