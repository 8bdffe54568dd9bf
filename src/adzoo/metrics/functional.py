"""Exact, threshold-free metrics shared by every method: AUROC, AP, F1-max and AUPRO.

Scores are used as they are: higher means more anomalous, no sigmoid, no clipping, and an AUROC below
0.5 is reported as such. Degenerate inputs (a single class, or no anomalous region / no normal pixel for
AUPRO) return ``float('nan')`` instead of raising, so one empty category cannot kill a whole evaluation.

How it stays fast and exact. Every curve here is piecewise linear through the points at all distinct
thresholds. Between two consecutive distinct *positive* scores only negatives cross the threshold, so
the ROC and PRO curves move horizontally there, precision only drops, and recall does not change. The
curves are therefore fully described by, for each distinct positive score ``v`` (descending), the
counts strictly above ``v`` and at-or-above ``v``. The positives are grouped by one (small) sort; the
negatives are sorted once and counted by binary search. No per-pixel gather of a global argsort is
needed, and the results equal sklearn's curve-over-every-threshold definitions (AUROC is even computed
in exact integer arithmetic). The streaming back-end feeds histogram bins through the same formulas.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from adzoo.metrics._tensor import (
    as_bhw,
    as_bool,
    as_scores,
    finite_minmax,
    sort_values,
    split_by_mask,
)
from adzoo.metrics.connected import label_numpy, region_weights

__all__ = ["aupro", "auroc", "average_precision", "binary_metrics", "f1_max", "pixel_metrics"]


class Groups(NamedTuple):
    """Cumulative counts at each group of tied scores, groups in descending score order (host arrays).

    ``*_gt`` counts items strictly above the group's score, ``*_ge`` at or above it (int64). ``pro_*``
    are the summed region overlaps (float64), present only when AUPRO is wanted. These O(#groups)
    arrays are all the curves need, so the final arithmetic runs in numpy whatever the device.
    """

    tp_gt: np.ndarray
    tp_ge: np.ndarray
    fp_gt: np.ndarray
    fp_ge: np.ndarray
    pro_gt: np.ndarray | None = None
    pro_ge: np.ndarray | None = None


def _shift(ge: np.ndarray) -> np.ndarray:
    """``gt`` from ``ge``: what is strictly above group j is what was at-or-above group j-1 (last axis)."""
    return np.concatenate([np.zeros_like(ge[..., :1]), ge[..., :-1]], axis=-1)


def _groups_from(tp_ge: np.ndarray, fp_gt: np.ndarray, fp_ge: np.ndarray, pro_ge: np.ndarray | None) -> Groups:
    if pro_ge is None:
        return Groups(_shift(tp_ge), tp_ge, fp_gt, fp_ge)
    return Groups(_shift(tp_ge), tp_ge, fp_gt, fp_ge, _shift(pro_ge), pro_ge)


def _positive_groups(pos: Tensor, neg_sorted: Tensor, pos_weights: Tensor | None = None) -> Groups:
    """Group the positives by distinct score (descending) and count the negatives above / tied with each.

    ``neg_sorted`` is ascending. The per-item work runs on the tensors' device (numpy kernels for CPU
    tensors); only the per-group arrays come back to the host.
    """
    n, n_neg = pos.numel(), neg_sorted.numel()
    if pos.device.type == "cpu":
        p = pos.numpy()
        if pos_weights is None:
            desc, w_desc = np.sort(p)[::-1], None
        else:
            order = np.argsort(p)[::-1]
            desc, w_desc = p[order], pos_weights.numpy()[order]
        is_start = np.empty(n, dtype=bool)
        is_start[:1] = True
        np.not_equal(desc[1:], desc[:-1], out=is_start[1:])
        starts = np.flatnonzero(is_start)
        ends = np.append(starts[1:], n) - 1
        values_asc = desc[starts][::-1]  # ascending queries search faster
        neg = neg_sorted.numpy()
        fp_ge = (n_neg - np.searchsorted(neg, values_asc, side="left"))[::-1]
        fp_gt = (n_neg - np.searchsorted(neg, values_asc, side="right"))[::-1]
        pro_ge = None if w_desc is None else np.cumsum(w_desc, dtype=np.float64)[ends]
        return _groups_from(ends + 1, fp_gt, fp_ge, pro_ge)
    desc_t, order_t = torch.sort(pos, descending=True)
    is_start_t = torch.ones(n, dtype=torch.bool, device=pos.device)
    is_start_t[1:] = desc_t[1:] != desc_t[:-1]
    starts_t = torch.nonzero(is_start_t).squeeze(1)
    ends_t = torch.cat([starts_t[1:], starts_t.new_full((1,), n)]) - 1
    values = desc_t[starts_t]
    fp_ge_t = n_neg - torch.searchsorted(neg_sorted, values, side="left")
    fp_gt_t = n_neg - torch.searchsorted(neg_sorted, values, side="right")
    pro_ge_np = None
    if pos_weights is not None:
        pro_ge_np = pos_weights[order_t].to(torch.float64).cumsum(0)[ends_t].cpu().numpy()
    return _groups_from((ends_t + 1).cpu().numpy(), fp_gt_t.cpu().numpy(), fp_ge_t.cpu().numpy(), pro_ge_np)


def _interleave(gt: np.ndarray, ge: np.ndarray, start: float | int, end: float | int | np.ndarray) -> np.ndarray:
    """Curve coordinates start, gt_1, ge_1, gt_2, ge_2, ..., end (the exact curve's vertices) along the last
    axis; leading axes are a batch (bootstrap resamples), ``end`` is a scalar or one value per batch item."""
    out = np.empty((*gt.shape[:-1], 2 * gt.shape[-1] + 2), dtype=np.result_type(gt, ge))
    out[..., 0], out[..., -1] = start, end
    out[..., 1:-1:2], out[..., 2:-1:2] = gt, ge
    return out


# The curve formulas below take Groups arrays with the groups on the last axis. One-dimensional groups give a
# float; (R, G) groups (R bootstrap resamples of the same groups, with integer multiplicities) give R values, and
# then n_pos / n_neg / n_regions are arrays of R counts.


def _auroc_from_groups(g: Groups, n_pos: int | np.ndarray, n_neg: int | np.ndarray) -> float | np.ndarray:
    """Trapezoid under the ROC in integer arithmetic: exact, ties count one half."""
    x = _interleave(g.fp_gt, g.fp_ge, 0, n_neg).astype(np.int64)
    y = _interleave(g.tp_gt, g.tp_ge, 0, n_pos).astype(np.int64)
    area2 = (np.diff(x) * (y[..., 1:] + y[..., :-1])).sum(axis=-1)
    if area2.ndim == 0:
        return int(area2) / (2 * n_pos * n_neg)
    return area2 / (2.0 * np.asarray(n_pos, dtype=np.float64) * n_neg)


def _ap_from_groups(g: Groups, n_pos: int | np.ndarray) -> float | np.ndarray:
    """sum_n (R_n - R_{n-1}) P_n over tied-threshold groups (sklearn's average_precision_score)."""
    d_tp = (g.tp_ge - g.tp_gt).astype(np.float64)
    predicted = (g.tp_ge + g.fp_ge).astype(np.float64)
    precision = np.divide(g.tp_ge, predicted, out=np.zeros_like(predicted), where=predicted > 0)
    total = (d_tp * precision).sum(axis=-1)
    return float(total) / n_pos if total.ndim == 0 else total / n_pos


def _f1max_from_groups(g: Groups, n_pos: int | np.ndarray) -> float | np.ndarray:
    """Max F1 = 2TP / (P + TP + FP); along negatives-only runs F1 only falls, so groups suffice."""
    n_pos = np.asarray(n_pos)[..., None]
    best = (2.0 * g.tp_ge / (n_pos + g.tp_ge + g.fp_ge).astype(np.float64)).max(axis=-1)
    return float(best) if best.ndim == 0 else best


def _integrate_to_limit(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoid area under pro(fpr) from 0 to ``limit`` divided by ``limit``.

    ``fpr`` is non-decreasing and starts at 0. The curve is cut by linear interpolation at exactly
    ``limit``; if it never gets that far it is integrated to its last point and still divided by
    ``limit`` (cannot happen with background pixels present and ``limit <= 1``).
    """
    i = int(np.searchsorted(fpr, limit, side="right"))  # first point beyond the limit
    x, y = fpr[:i], pro[:i]
    if i < fpr.size:
        x0, x1, y0, y1 = fpr[i - 1], fpr[i], pro[i - 1], pro[i]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)  # x1 > limit >= x0, so no division by 0
        x, y = np.append(x, limit), np.append(y, y_lim)
    return float((np.diff(x) * (y[1:] + y[:-1])).sum() / 2) / limit


def _integrate_to_limit_batched(fpr: np.ndarray, pro: np.ndarray, limit: float) -> np.ndarray:
    """:func:`_integrate_to_limit` for (R, P) curves at once: each segment is cut at ``limit`` in place, and
    segments that start beyond it add nothing (the same trapezoids, summed in another order)."""
    x0, x1, y0, y1 = fpr[:, :-1], fpr[:, 1:], pro[:, :-1], pro[:, 1:]
    x_end = np.minimum(x1, limit)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_cut = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
    y_end = np.where(x1 <= limit, y1, y_cut)
    area = np.where(x0 < limit, (x_end - x0) * (y0 + y_end), 0.0)
    return area.sum(axis=-1) / 2 / limit


def _aupro_from_groups(
    g: Groups, n_bg: int | np.ndarray, n_regions: int | np.ndarray, limit: float
) -> float | np.ndarray:
    """Normalised area under mean-PRO vs FPR up to ``limit``, from grouped cumulative sums."""
    if g.pro_gt is None or g.pro_ge is None:
        raise ValueError("AUPRO needs region-overlap sums in the groups")
    n_bg_f = np.asarray(n_bg, dtype=np.float64)
    n_regions_f = np.asarray(n_regions, dtype=np.float64)
    fpr = _interleave(g.fp_gt.astype(np.float64), g.fp_ge.astype(np.float64), 0.0, n_bg_f)
    pro = _interleave(g.pro_gt, g.pro_ge, 0.0, n_regions_f)
    if fpr.ndim == 1:
        return _integrate_to_limit(fpr / n_bg_f, pro / n_regions_f, limit)
    return _integrate_to_limit_batched(fpr / n_bg_f[:, None], pro / n_regions_f[:, None], limit)


def _check_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def _split(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten and split scores into (positives, negatives)."""
    s = as_scores(scores).reshape(-1)
    t = as_bool(targets).reshape(-1)
    if s.numel() != t.numel():
        raise ValueError(f"scores ({s.numel()}) and targets ({t.numel()}) differ in size")
    if s.numel():
        finite_minmax(s)
    t = t.to(s.device)
    return split_by_mask(s, t)


_NAN_BINARY = {"auroc": math.nan, "ap": math.nan, "f1max": math.nan}


def binary_metrics(scores: Tensor, targets: Tensor) -> dict[str, float]:
    """AUROC, AP and F1-max from one sort. Keys ``auroc``, ``ap``, ``f1max``; NaN if one class is absent.

    Args:
        scores: any shape, higher = more anomalous.
        targets: same number of elements, {0, 1} (or bool).
    """
    pos, neg = _split(scores, targets)
    n_pos, n_neg = pos.numel(), neg.numel()
    if n_pos == 0 or n_neg == 0:
        return dict(_NAN_BINARY)
    g = _positive_groups(pos, sort_values(neg))
    return {
        "auroc": _auroc_from_groups(g, n_pos, n_neg),
        "ap": _ap_from_groups(g, n_pos),
        "f1max": _f1max_from_groups(g, n_pos),
    }


def auroc(scores: Tensor, targets: Tensor) -> float:
    """Area under the ROC curve, ties handled like ``sklearn.metrics.roc_auc_score``; NaN if one class."""
    return binary_metrics(scores, targets)["auroc"]


def average_precision(scores: Tensor, targets: Tensor) -> float:
    """Average precision as in ``sklearn.metrics.average_precision_score``; NaN if one class."""
    return binary_metrics(scores, targets)["ap"]


def f1_max(scores: Tensor, targets: Tensor) -> float:
    """Best F1 over all distinct thresholds (predict anomalous when score >= threshold); NaN if one class."""
    return binary_metrics(scores, targets)["f1max"]


def _fg_split(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """(foreground scores, foreground region weights, background scores, number of regions)."""
    m = as_scores(as_bhw(maps, "maps"))
    fg = as_bool(as_bhw(masks, "masks"))
    if m.shape != fg.shape:
        raise ValueError(f"maps {tuple(m.shape)} and masks {tuple(fg.shape)} differ in shape")
    if m.numel():
        finite_minmax(m, "maps")
    fg_np = fg.cpu().numpy()
    labels, n_regions = label_numpy(fg_np)
    weights = torch.from_numpy(region_weights(labels, fg_np)).to(m.device)
    pos, neg = split_by_mask(m, fg.to(m.device))
    return pos, weights, neg, n_regions


def _aupro_core(pos: Tensor, weights: Tensor, neg: Tensor, n_regions: int, limit: float) -> float:
    """AUPRO from pixels already split into foreground (with region weights) and background."""
    n_bg = neg.numel()
    if n_regions == 0 or n_bg == 0:
        return math.nan
    g = _positive_groups(pos, sort_values(neg), weights)
    return _aupro_from_groups(g, n_bg, n_regions, limit)


def aupro(maps: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD definition).

    Regions are the 8-connected components of each image's mask; PRO(t) is the mean over all regions of
    all images of the fraction of the region's pixels scoring >= t; FPR(t) is the fraction of all
    normal pixels scoring >= t. The curve (through every distinct threshold, starting at (0, 0)) is
    integrated with the trapezoid rule up to exactly ``fpr_limit`` (linear interpolation there) and
    divided by ``fpr_limit``.

    Args:
        maps: (N, H, W) or (N, 1, H, W) anomaly maps.
        masks: same shape, {0, 1}.
        fpr_limit: in (0, 1].

    Returns:
        A float in [0, 1]; NaN when there is no anomalous pixel or no normal pixel.
    """
    _check_limit(fpr_limit)
    pos, weights, neg, n_regions = _fg_split(maps, masks)
    return _aupro_core(pos, weights, neg, n_regions, fpr_limit)


def pixel_metrics_from_split(
    pos: Tensor, weights: Tensor, neg: Tensor, n_regions: int, fpr_limit: float = 0.3
) -> dict[str, float]:
    """All four pixel metrics from pixels already split into foreground (with region weights) and
    background; one sort of each, shared by the binary metrics and AUPRO."""
    n_pos, n_neg = pos.numel(), neg.numel()
    if n_pos == 0 or n_neg == 0:
        return dict.fromkeys(("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"), math.nan)
    g = _positive_groups(pos, sort_values(neg), weights)
    return {
        "pixel_auroc": _auroc_from_groups(g, n_pos, n_neg),
        "pixel_ap": _ap_from_groups(g, n_pos),
        "pixel_f1max": _f1max_from_groups(g, n_pos),
        "pixel_aupro": _aupro_from_groups(g, n_neg, n_regions, fpr_limit),
    }


def pixel_metrics(maps: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> dict[str, float]:
    """Exact ``pixel_auroc``, ``pixel_ap``, ``pixel_f1max`` and ``pixel_aupro`` of a batch of maps."""
    _check_limit(fpr_limit)
    return pixel_metrics_from_split(*_fg_split(maps, masks), fpr_limit=fpr_limit)


def category_mean(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean over categories of every metric, NaN where no category has a value (the macro average that every
    table's mean row shows)."""
    keys = sorted({k for m in per_category.values() for k in m})
    mean = {}
    for key in keys:
        values = [m[key] for m in per_category.values() if key in m and not math.isnan(m[key])]
        mean[key] = sum(values) / len(values) if values else math.nan
    return mean
