"""The metric bounds of ``tests/_tolerance.py`` hold: scores moved by at most ``tol`` give metrics inside them.

Tests that compare runs which compose batches differently (DDP against one process) rely on these bounds, so
they are checked here on adversarial inputs: scores on a grid of step ``tol``, so moves of ``-tol, 0, +tol``
create and break exact ties everywhere, the case where an exact, counting metric moves the most.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adzoo.metrics import binary_metrics, pixel_metrics
from tests._tolerance import ap_bounds, binary_bounds, pixel_bounds
from tests.metrics._synth import blob_masks

TOL = 1e-3
SLACK = 1e-12  # the metrics' own float64 arithmetic


def _moved(values: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``values`` with every entry moved by at most tol: snapped to a coarser grid (which ties neighbours, the
    move that raises AP), by -tol, 0 or +tol (onto the grid: ties appear and break), or by a fraction of it."""
    v = values.to(torch.float64)
    kind = rng.integers(3)
    if kind == 0:
        offset = rng.random() * 2 * TOL
        return offset + torch.round((v - offset) / (2 * TOL)) * 2 * TOL
    steps = rng.integers(-1, 2, size=values.shape).astype(np.float64)
    if kind == 1:
        steps *= rng.random(values.shape)
    return v + torch.from_numpy(TOL * steps)


def _inside(value: float, bounds: tuple[float, float], key: str) -> None:
    low, high = bounds
    assert low - SLACK <= value <= high + SLACK, f"{key}: {value} outside [{low}, {high}]"


@pytest.mark.parametrize("seed", range(40))
def test_binary_metrics_stay_inside_the_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 40))
    labels = torch.from_numpy(rng.random(n) < 0.4)
    labels[0], labels[1] = True, False
    levels = int(rng.integers(4, 60))  # few levels: many exact ties; more: positives that a move can tie
    scores = torch.from_numpy(rng.integers(0, levels, n) * TOL)
    bounds = binary_bounds(scores, labels, TOL)
    for _ in range(30):
        got = binary_metrics(_moved(scores, rng), labels)
        for key, value in got.items():
            _inside(value, bounds[key], key)


@pytest.mark.parametrize("seed", range(10))
def test_pixel_metrics_stay_inside_the_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = blob_masks(4, 12, 12, seed=seed, level=1.0, normal_every=3)
    maps = torch.from_numpy(rng.integers(0, 6, (4, 12, 12)) * TOL) + 2 * TOL * masks
    bounds = pixel_bounds(maps, masks, TOL)
    for _ in range(15):
        got = pixel_metrics(_moved(maps, rng), masks)
        for key, value in got.items():
            _inside(value, bounds[key], key)


def test_tying_two_positives_raises_ap_so_ap_is_bounded_term_by_term() -> None:
    """Why AP does not use the shifted-scores bound: moving positives up and negatives down is not its maximum."""
    labels = torch.tensor([False, True, True])
    scores = torch.tensor([3.0, 1.0, 1.0 - TOL])
    positives_tied = binary_metrics(torch.tensor([3.0, 1.0 - TOL / 2, 1.0 - TOL / 2]), labels)["ap"]
    shifted_best = binary_metrics(scores + TOL * (2 * labels - 1), labels)["ap"]
    assert positives_tied > shifted_best
    low, high = ap_bounds(scores[labels].numpy(), scores[~labels].numpy(), TOL)
    assert low <= shifted_best and positives_tied <= high


def test_bounds_are_tight_without_near_ties() -> None:
    """Scores further than 2·tol apart cannot change order: the bounds collapse onto the metric itself."""
    labels = torch.tensor([True, False, True, False, True])
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    exact = binary_metrics(scores, labels)
    for key, (low, high) in binary_bounds(scores, labels, TOL).items():
        assert low == pytest.approx(exact[key], abs=SLACK) and high == pytest.approx(exact[key], abs=SLACK), key
