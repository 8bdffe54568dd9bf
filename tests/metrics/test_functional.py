"""Exact metrics against scikit-learn, brute force, and a slow AUPRO written from the definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from adzoo.metrics import aupro, auroc, average_precision, binary_metrics, f1_max, pixel_metrics

from ._synth import blob_masks, smooth_maps


def _random_case(seed: int, kind: str, n: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.rand(n, generator=g) < 0.3
    if kind == "continuous":
        scores = torch.randn(n, generator=g) + targets.float()
    elif kind == "ties":  # heavy ties: a handful of integer levels
        scores = torch.randint(0, 4, (n,), generator=g) + targets.long()
    elif kind == "float_ties":
        scores = torch.randint(0, 6, (n,), generator=g).float() * 0.5
    else:  # all equal
        scores = torch.full((n,), 3.0)
    return scores, targets


CASES = [(seed, kind) for seed in range(4) for kind in ("continuous", "ties", "float_ties", "constant")]


@pytest.mark.parametrize(("seed", "kind"), CASES)
def test_auroc_and_ap_match_sklearn(seed: int, kind: str) -> None:
    scores, targets = _random_case(seed, kind)
    s, t = scores.numpy(), targets.numpy()
    assert auroc(scores, targets) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert average_precision(scores, targets) == pytest.approx(average_precision_score(t, s), abs=1e-12)


def _f1_brute(scores: np.ndarray, targets: np.ndarray) -> float:
    best = 0.0
    for thr in np.unique(scores):
        pred = scores >= thr
        tp = np.sum(pred & targets)
        fp = np.sum(pred & ~targets)
        fn = np.sum(~pred & targets)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


@pytest.mark.parametrize(("seed", "kind"), CASES)
def test_f1_max_matches_brute_force(seed: int, kind: str) -> None:
    scores, targets = _random_case(seed, kind, n=300)
    expected = _f1_brute(scores.double().numpy(), targets.numpy())
    assert f1_max(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_binary_metrics_is_the_three_functions() -> None:
    scores, targets = _random_case(7, "ties")
    assert binary_metrics(scores, targets) == {
        "auroc": auroc(scores, targets),
        "ap": average_precision(scores, targets),
        "f1max": f1_max(scores, targets),
    }


@pytest.mark.parametrize("targets", [torch.zeros(10, dtype=torch.bool), torch.ones(10, dtype=torch.bool)])
def test_single_class_gives_nan(targets: torch.Tensor) -> None:
    scores = torch.randn(10)
    assert all(math.isnan(v) for v in binary_metrics(scores, targets).values())


def test_no_sigmoid_no_clipping_no_flip() -> None:
    scores = torch.tensor([1e6, 1e6, 1e6 + 1, 1e6 + 1], dtype=torch.float32)
    targets = torch.tensor([0, 0, 1, 1])
    assert auroc(scores, targets) == 1.0
    assert average_precision(scores, targets) == 1.0
    assert f1_max(scores, targets) == 1.0
    assert auroc(-scores, targets) == 0.0  # below 0.5 stays below 0.5
    big = torch.tensor([1e30, 2e30, -1e30, 5e30], dtype=torch.float64)
    assert auroc(big, torch.tensor([0, 1, 0, 1])) == 1.0


def test_scores_may_be_integers_and_targets_any_shape() -> None:
    scores = torch.tensor([[0, 1], [2, 3]])
    targets = torch.tensor([[0, 0], [1, 1]], dtype=torch.uint8)
    assert auroc(scores, targets) == 1.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="differ"):
        auroc(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(torch.zeros(1, 4, 4), torch.ones(1, 4, 4), fpr_limit=0.0)


# ------------------------------------------------------------------------------------------------
# AUPRO reference: a direct transcription of the definition, one threshold at a time.
# ------------------------------------------------------------------------------------------------


def aupro_reference(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    maps = maps.astype(np.float64)
    masks = masks.astype(bool)
    regions = []
    for m, gt in zip(maps, masks):
        labels, n = ndimage.label(gt, structure=np.ones((3, 3)))
        regions += [m[labels == i] for i in range(1, n + 1)]
    background = maps[~masks]
    if not regions or background.size == 0:
        return math.nan
    fprs, pros = [0.0], [0.0]
    for thr in sorted(np.unique(maps), reverse=True):
        fprs.append(float(np.mean(background >= thr)))
        pros.append(float(np.mean([np.mean(r >= thr) for r in regions])))
    area = 0.0
    for i in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[i - 1], fprs[i], pros[i - 1], pros[i]
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_lim) / 2
            break
    return area / limit


def _check_aupro(maps: torch.Tensor, masks: torch.Tensor, limit: float = 0.3) -> float:
    got = aupro(maps, masks, fpr_limit=limit)
    expected = aupro_reference(maps.numpy(), masks.numpy(), limit)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-9)
    return got


def test_aupro_one_region() -> None:
    maps = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 3:6, 4:8] = True
    _check_aupro(maps, masks)
    assert _check_aupro(maps + 2 * masks, masks) == pytest.approx(1.0)


@pytest.mark.parametrize("limit", [0.05, 0.3, 0.77, 1.0])
def test_aupro_many_regions_across_images(limit: float) -> None:
    masks = blob_masks(6, 20, 24, seed=3, level=1.0, normal_every=3)
    maps = smooth_maps(6, 20, 24, seed=3, masks=masks, signal=0.8)
    assert int(ndimage.label(masks[1].numpy(), np.ones((3, 3)))[1]) > 1
    _check_aupro(maps, masks, limit)


def test_aupro_diagonal_pixels_are_one_region() -> None:
    masks = torch.zeros(1, 6, 6, dtype=torch.bool)
    masks[0, 1, 1] = masks[0, 2, 2] = masks[0, 4, 4] = True  # (1,1)-(2,2) touch diagonally
    maps = torch.zeros(1, 6, 6)
    maps[0, 1, 1] = 5.0  # half of the 2-pixel region, and nothing of the lone pixel
    # Curve (0,0) -> (0, PRO) -> (1, 1), PRO = mean(1/2, 0) = 1/4 with 8-connectivity (1/3 with 4-)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx((0.25 + 1.0) / 2, abs=1e-12)


def test_aupro_no_anomalous_pixels_is_nan() -> None:
    assert math.isnan(aupro(torch.rand(2, 8, 8), torch.zeros(2, 8, 8)))


def test_aupro_no_normal_pixels_is_nan() -> None:
    assert math.isnan(aupro(torch.rand(2, 8, 8), torch.ones(2, 8, 8)))


def test_aupro_ties() -> None:
    masks = blob_masks(4, 16, 16, seed=5, level=1.0, normal_every=2)
    _check_aupro(torch.zeros(4, 16, 16), masks)  # one threshold: straight line to (1, 1)
    g = torch.Generator().manual_seed(5)
    ints = torch.randint(0, 5, (4, 16, 16), generator=g).float() + masks.float()
    for limit in (0.1, 0.3, 0.5):
        _check_aupro(ints, masks, limit)


def test_aupro_anomalies_scored_lower() -> None:
    masks = blob_masks(4, 16, 16, seed=6, level=1.0, normal_every=2)
    maps = smooth_maps(4, 16, 16, seed=6, masks=masks, signal=-3.0)
    assert _check_aupro(maps, masks) < 0.05


def test_aupro_sizes_change_between_calls_and_4d_input() -> None:
    for h, w in ((9, 13), (32, 16)):
        masks = blob_masks(3, h, w, seed=h, level=0.8, normal_every=5)
        maps = smooth_maps(3, h, w, seed=h, masks=masks, signal=0.5)
        got = _check_aupro(maps, masks)
        assert aupro(maps[:, None], masks[:, None].float()) == got


def test_pixel_metrics_agrees_with_functions() -> None:
    masks = blob_masks(5, 24, 24, seed=8, level=1.0)
    maps = smooth_maps(5, 24, 24, seed=8, masks=masks, signal=0.7)
    out = pixel_metrics(maps, masks)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel()))
    assert out["pixel_ap"] == pytest.approx(average_precision(maps, masks), abs=1e-12)
    assert out["pixel_f1max"] == pytest.approx(f1_max(maps, masks), abs=1e-12)
    assert out["pixel_aupro"] == pytest.approx(aupro(maps, masks), abs=1e-12)
