"""Bounds on adzoo's metrics when the scores they count are only known to within a float tolerance.

Two runs that compose their batches differently (another process count, thread count, BLAS blocking) give
per-image scores and maps that agree to a float32 tolerance, not bit for bit. The metrics count orderings
exactly, so a near-tie that flips moves them: comparing two runs' metrics with a fixed tiny tolerance passes
on one machine and fails on another. What can be asserted instead: the raw outputs agree to a stated ``tol``,
and every metric of the second run lies in the interval that ``tol`` allows around the first run's scores.

:func:`binary_bounds` and :func:`pixel_bounds` give that interval, from the reference scores alone, for every
score vector ``s'`` with ``|s'_i - s_i| <= tol`` for all i:

* AUROC, F1-max and AUPRO never decrease when a positive's score rises or a negative's falls (whatever the
  ties: each is a pairwise count with ties ½, a max over thresholds of a function increasing in TP and decreasing
  in FP, or the area under a PRO-vs-FPR curve that then dominates pointwise). Every ``s'`` in the box is reached
  from ``worst = s + tol·(neg - pos)`` by such moves and reaches ``best = s + tol·(pos - neg)``, so the metric
  of ``s'`` lies between the metric of ``worst`` and of ``best``.
* AP is not monotone that way: tying two positives raises it. It is bounded term by term instead:
  ``AP = mean over positives i of TP(>= s_i) / N(>= s_i)``; an item more than ``2·tol`` above (below) ``s_i``
  stays above (below) ``s'_i``, and the items within ``2·tol`` can land on either side, which bounds each term.

``tests/metrics/test_tolerance_bounds.py`` checks these claims on random perturbations with many ties.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from adzoo.metrics import binary_metrics, pixel_metrics

# A hair wider than 2·tol, so that float64 rounding of s_i ± 2·tol never classifies a near-boundary item as sure.
_WINDOW = 2.0 * (1.0 + 1e-9)


def _shifted(scores: Tensor, positive: Tensor, tol: float, favour: bool) -> Tensor:
    """``scores`` in float64 with positives moved up and negatives down by ``tol`` (``favour``) or the reverse."""
    sign = torch.where(positive.bool(), 1.0, -1.0).to(torch.float64)
    return scores.to(torch.float64) + (tol if favour else -tol) * sign


def ap_bounds(pos: np.ndarray, neg: np.ndarray, tol: float) -> tuple[float, float]:
    """(lowest, highest) average precision of any scores within ``tol`` of positives ``pos``, negatives ``neg``."""
    pos, neg = np.sort(np.asarray(pos, np.float64)), np.sort(np.asarray(neg, np.float64))
    every = np.sort(np.concatenate([pos, neg]))
    window = _WINDOW * tol
    upper, lower = pos + window, pos - window

    def above(sorted_values: np.ndarray, edge: np.ndarray) -> np.ndarray:
        return sorted_values.size - np.searchsorted(sorted_values, edge, side="right")

    def within(sorted_values: np.ndarray) -> np.ndarray:
        return np.searchsorted(sorted_values, upper, side="right") - np.searchsorted(sorted_values, lower, "left")

    sure_pos, sure_all = above(pos, upper), above(every, upper)  # surely at or above s'_i (i itself excluded)
    maybe_pos, maybe_neg = within(pos) - 1, within(neg)  # may land on either side (i itself excluded)
    low = (1 + sure_pos) / (1 + sure_all + maybe_neg)
    high = (1 + sure_pos + maybe_pos) / (1 + sure_all + maybe_pos)
    return float(low.mean()), float(high.mean())


def binary_bounds(scores: Tensor, labels: Tensor, tol: float) -> dict[str, tuple[float, float]]:
    """(lowest, highest) ``auroc``, ``ap`` and ``f1max`` of any scores within ``tol`` of ``scores``."""
    positive = labels.reshape(-1) > 0.5
    flat = scores.reshape(-1)
    worst = binary_metrics(_shifted(flat, positive, tol, favour=False), positive)
    best = binary_metrics(_shifted(flat, positive, tol, favour=True), positive)
    values = flat.to(torch.float64).numpy()
    return {
        "auroc": (worst["auroc"], best["auroc"]),
        "ap": ap_bounds(values[positive.numpy()], values[~positive.numpy()], tol),
        "f1max": (worst["f1max"], best["f1max"]),
    }


def pixel_bounds(maps: Tensor, masks: Tensor, tol: float, fpr_limit: float = 0.3) -> dict[str, tuple[float, float]]:
    """(lowest, highest) of each exact pixel metric over maps within ``tol`` of ``maps`` (N, H, W), per pixel."""
    positive = masks.bool()
    worst = pixel_metrics(_shifted(maps, positive, tol, favour=False), positive, fpr_limit=fpr_limit)
    best = pixel_metrics(_shifted(maps, positive, tol, favour=True), positive, fpr_limit=fpr_limit)
    values = maps.to(torch.float64).numpy()
    out = {key: (worst[key], best[key]) for key in ("pixel_auroc", "pixel_f1max", "pixel_aupro")}
    out["pixel_ap"] = ap_bounds(values[positive.numpy()], values[~positive.numpy()], tol)
    return out
