"""The objective of a search: validation metrics only, per category, and refused when it names a test metric."""

from __future__ import annotations

import pytest
import torch

from adzoo.errors import ConfigError
from adzoo.metrics import image_metrics, pixel_metrics
from adzoo.search.objective import check_objective, validation_metrics


@pytest.mark.parametrize("name", ["image_auroc", "test_image_auroc", "pixel_aupro", "test_loss"])
def test_an_objective_that_names_a_test_metric_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="names a test metric; a search is scored on the validation split only"):
        check_objective(name, 0.1, "confetti")


def test_an_objective_needs_a_validation_split_with_anomalies() -> None:
    assert check_objective("val_image_auroc", 0.1, "confetti") == "val_image_auroc"
    with pytest.raises(ConfigError, match="expected one of val_image_auroc"):
        check_objective("val_banana", 0.1, "confetti")
    with pytest.raises(ConfigError, match=r"data\.val_fraction > 0"):
        check_objective("val_image_auroc", 0.0, "confetti")
    with pytest.raises(ConfigError, match=r"data\.val_anomalies=confetti or cutpaste"):
        check_objective("val_image_auroc", 0.1, "none")


def test_validation_metrics_are_per_category_whatever_the_batches() -> None:
    g = torch.Generator().manual_seed(0)
    n = 12
    scores, labels = torch.rand(n, generator=g), torch.tensor([0, 1] * (n // 2))
    maps, masks = torch.rand(n, 1, 8, 8, generator=g), torch.rand(n, 1, 8, 8, generator=g) > 0.8
    masks[labels == 0] = False
    categories = ["a", "b", "a"] * (n // 3)

    def batch(s: slice) -> dict:
        return {"pred_score": scores[s], "label": labels[s], "anomaly_map": maps[s], "mask": masks[s].float(),
                "category": categories[s]}  # fmt: skip

    one = validation_metrics([batch(slice(0, n))], pixel=True)
    split = validation_metrics([batch(slice(0, 5)), batch(slice(5, n))], pixel=True)
    assert one == split and sorted(one) == ["a", "b"]
    keep = torch.tensor([c == "b" for c in categories])
    expected = {**image_metrics(scores[keep], labels[keep]), **pixel_metrics(maps[keep, 0], masks[keep, 0])}
    assert one["b"] == pytest.approx(expected)
    assert "pixel_auroc" not in validation_metrics([batch(slice(0, n))], pixel=False)["a"]
