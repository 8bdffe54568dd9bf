"""Thresholds fitted on validation outputs alone: the rates they promise, their errors, the test metrics at them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adzoo.thresholds import (
    Decision,
    PixelDecisionCounts,
    ThresholdConfig,
    ThresholdError,
    ValidationOutputs,
    fit_decision,
    image_decision_metrics,
)


def _outputs(rng: np.random.Generator, n_normal: int, n_anomalous: int = 0, size: int = 8) -> ValidationOutputs:
    scores = np.concatenate([rng.normal(0, 1, n_normal), rng.normal(3, 1, n_anomalous)])
    labels = np.repeat([0, 1], [n_normal, n_anomalous])
    maps = rng.normal(0, 1, (labels.size, size, size)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[n_normal:, 2:5, 2:5] = True
    maps[masks] += 3.0
    return ValidationOutputs(scores, labels, maps, masks, "cutpaste" if n_anomalous else "none")


def test_percentile_99_gives_one_percent_false_alarms_on_held_out_normals() -> None:
    """The q-th percentile of 5,000 normal validation scores flags 1 % of 20,000 held-out normal scores: the
    false-alarm rate of an empirical quantile has sd ~ sqrt(0.01·0.99/5000) = 0.14 % and the held-out estimate
    0.07 %, so 0.5 % is over 3 sd of both together."""
    rng = np.random.default_rng(0)
    decision = fit_decision(ThresholdConfig("percentile", q=99.0), _outputs(rng, 5000))
    assert decision is not None
    held_out = rng.normal(0, 1, 20000)
    fpr = float(decision.is_anomalous(held_out).mean())
    assert abs(fpr - 0.01) < 0.005
    assert decision.validation["image_fpr"] == pytest.approx(0.01, abs=1e-3)
    assert decision.validation["normal_images"] == 5000 and "image_tpr" not in decision.validation
    pixel_fpr = decision.validation["pixel_fpr"]  # the pixel threshold keeps 0.1 % of normal pixels
    assert pixel_fpr == pytest.approx(0.001, abs=2e-4)


def test_f1_max_picks_the_best_f1_of_every_candidate_threshold() -> None:
    rng = np.random.default_rng(1)
    val = _outputs(rng, 60, 40)
    decision = fit_decision(ThresholdConfig("f1_max"), val)
    assert decision is not None

    def f1(t: float) -> float:
        return image_decision_metrics(val.scores, val.labels, t)["image_f1_thr"]

    best = max(f1(t) for t in val.scores)
    assert f1(decision.image_threshold) == pytest.approx(best)
    assert decision.pixel_threshold is not None and decision.validation["pixel_tpr"] > 0.5


def test_f1_max_without_anomalies_names_the_key() -> None:
    with pytest.raises(ThresholdError, match=r"data\.val_anomalies"):
        fit_decision(ThresholdConfig("f1_max"), _outputs(np.random.default_rng(2), 20))


def test_bad_settings_are_named() -> None:
    with pytest.raises(ThresholdError, match=r"threshold\.strategy"):
        ThresholdConfig("otsu")
    with pytest.raises(ThresholdError, match=r"threshold\.q"):
        ThresholdConfig(q=100)
    with pytest.raises(ThresholdError, match=r"threshold\.image"):
        ThresholdConfig("manual")
    with pytest.raises(ThresholdError, match=r"threshold\.image=.*finite"):
        ThresholdConfig("manual", image=float("nan"))
    decision = fit_decision(ThresholdConfig("manual", image=1.5), _outputs(np.random.default_rng(3), 10))
    assert decision is not None
    with pytest.raises(ThresholdError, match=r"threshold='inf'.*finite"):
        decision.with_image_threshold("inf")
    with pytest.raises(ThresholdError, match="needs validation images"):
        fit_decision(ThresholdConfig("percentile"), None)


def test_normalised_scores_read_one_half_at_the_threshold_and_are_not_clipped() -> None:
    decision = fit_decision(ThresholdConfig("manual", image=2.0, pixel=1.0), _outputs(np.random.default_rng(4), 50))
    assert decision is not None
    assert decision.normalise_scores(2.0) == 0.5
    width = decision.image_high - decision.image_low
    assert decision.normalise_scores(2.0 + 10 * width) == pytest.approx(10.5)  # far beyond validation: > 1
    assert decision.normalise_maps(np.float32(1.0)) == 0.5
    back = Decision.from_dict(decision.to_dict())
    assert back == decision
    assert decision.is_anomalous(np.array([1.99, 2.0])).tolist() == [False, True]  # score >= threshold


def test_manual_without_validation_images_still_decides() -> None:
    decision = fit_decision(ThresholdConfig("manual", image=0.3), None)
    assert decision is not None and decision.image_threshold == 0.3 and decision.validation["images"] == 0


def test_image_metrics_at_the_threshold() -> None:
    scores = [0.1, 0.4, 0.6, 0.9, 0.2, 0.7]
    labels = [0, 0, 0, 1, 1, 1]
    m = image_decision_metrics(scores, labels, 0.5)  # flagged: 0.6 (normal), 0.9, 0.7 (anomalous)
    assert m["image_precision_thr"] == pytest.approx(2 / 3)
    assert m["image_recall_thr"] == m["image_tpr_thr"] == pytest.approx(2 / 3)
    assert m["image_fpr_thr"] == pytest.approx(1 / 3)
    assert m["image_f1_thr"] == pytest.approx(2 / 3)
    assert image_decision_metrics([0.1, 0.2], [0, 1], 0.5)["image_precision_thr"] == 0.0  # nothing flagged
    assert math.isnan(image_decision_metrics([0.1], [0], 0.5)["image_tpr_thr"])  # no anomalous image


def test_pixel_iou_dice_and_pro_at_the_threshold() -> None:
    masks = torch.zeros(2, 6, 6)
    masks[0, 0:2, 0:2] = 1  # region A: 4 pixels
    masks[0, 4:6, 4:6] = 1  # region B: 4 pixels
    maps = torch.zeros(2, 6, 6)
    maps[0, 0:2, 0:2] = 1.0  # A fully found
    maps[0, 4, 4] = 1.0  # B: 1 of 4
    maps[1, 0, 0:2] = 1.0  # 2 false positives on the second image
    counts = PixelDecisionCounts(0.5)
    counts.update(maps, masks)
    m = counts.compute()
    tp, fp, fn = 5, 2, 3
    assert m["pixel_iou_thr"] == pytest.approx(tp / (tp + fp + fn))
    assert m["pixel_dice_thr"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["pixel_pro_thr"] == pytest.approx((1.0 + 0.25) / 2)
    split = PixelDecisionCounts(0.5)
    split.update(maps[:1], masks[:1])
    other = PixelDecisionCounts(0.5)
    other.update(maps[1:], masks[1:])
    split.merge(other.state())
    assert split.compute() == m  # what DDP ranks merge equals one pass
