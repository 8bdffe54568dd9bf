"""Per-image histograms: their sums are the streaming back-end's, and the batched bin formulas are the curves'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adzoo.metrics.functional import Groups, _aupro_from_groups, _auroc_from_groups, _shift
from adzoo.metrics.pixel import StreamingPixelMetrics
from adzoo.metrics.resample import (
    PerImageHistograms,
    load_histograms,
    pixel_metrics_from_histograms,
    save_histograms,
)
from tests.metrics._synth import blob_masks, smooth_maps


def _category(n: int = 12, size: int = 32, seed: int = 0, bins: int = 256):
    masks = blob_masks(n, size, size, seed)
    maps = smooth_maps(n, size, size, seed, masks, signal=2.0)
    acc = PerImageHistograms(bins)
    paths = [f"img{i:03d}.png" for i in range(n)]
    for b in range(0, n, 5):  # several batches, as the callback feeds them
        acc.update(maps[b : b + 5], masks[b : b + 5], paths[b : b + 5])
    hist = acc.finish()
    assert hist is not None
    return maps, masks, hist


@pytest.mark.parametrize("fpr_limit", [0.3, 1.0])
def test_summed_histograms_give_the_streaming_metrics(fpr_limit: float) -> None:
    maps, masks, hist = _category()
    streaming = StreamingPixelMetrics(bins=256, fpr_limit=fpr_limit)
    streaming.update(maps, masks)
    state = streaming.state()
    assert (hist.e, hist.q) == (state["e"], state["q"])
    dense = np.zeros((3, hist.n_images, hist.bins))
    rows = np.repeat(np.arange(hist.n_images), np.diff(hist.ptr))
    for k, values in enumerate((hist.neg, hist.pos, hist.overlap)):
        dense[k, rows, hist.col] = values
    np.testing.assert_array_equal(dense[0].sum(axis=0), state["neg"].numpy())  # the same counts in the same bins
    np.testing.assert_array_equal(dense[1].sum(axis=0), state["pos"].numpy())
    np.testing.assert_allclose(dense[2].sum(axis=0), state["overlap"].numpy(), rtol=1e-12)
    assert hist.regions.sum() == state["n_regions"]
    want, got = streaming.compute(), hist.metrics(fpr_limit)
    assert got["pixel_auroc"] == want["pixel_auroc"]  # an exact rational either way
    for key in ("pixel_ap", "pixel_f1max", "pixel_aupro"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)


def _groups_reference(w: np.ndarray, neg: np.ndarray, pos: np.ndarray, overlap: np.ndarray, regions: np.ndarray,
                      limit: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The generic tie-group curves (interleaved vertices), one resample at a time."""
    auroc, aupro = [], []
    for row in w:
        tp_ge = (row @ pos)[::-1].cumsum().astype(np.int64)
        fp_ge = (row @ neg)[::-1].cumsum().astype(np.int64)
        pro_ge = (row @ overlap)[::-1].cumsum()
        g = Groups(_shift(tp_ge), tp_ge, _shift(fp_ge), fp_ge, _shift(pro_ge), pro_ge)
        auroc.append(_auroc_from_groups(g, int(tp_ge[-1]), int(fp_ge[-1])))
        aupro.append(_aupro_from_groups(g, int(fp_ge[-1]), float(row @ regions), limit))
    return np.asarray(auroc), np.asarray(aupro)


@pytest.mark.parametrize("limit", [1e-4, 0.05, 0.3, 1.0])
def test_batched_bin_formulas_equal_the_tie_group_curves(limit: float) -> None:
    _, _, hist = _category(n=10, seed=3)
    neg, pos, overlap = hist.dense()
    rng = np.random.default_rng(round(limit * 1e4))
    w = np.stack([np.bincount(rng.integers(0, 10, 10), minlength=10) for _ in range(40)])
    fast = pixel_metrics_from_histograms(w, neg, pos, overlap, hist.regions, limit, keys=("pixel_auroc", "pixel_aupro"))
    auroc, aupro = _groups_reference(w, neg, pos, overlap, hist.regions, limit)
    np.testing.assert_array_equal(fast["pixel_auroc"], auroc)  # both exact rationals
    np.testing.assert_allclose(fast["pixel_aupro"], aupro, rtol=0, atol=1e-12)


def test_auroc_stays_exact_beyond_float64_integers() -> None:
    """Counts whose AUROC numerator passes 2**53 take the int64 path and still match the group formula."""
    rng = np.random.default_rng(5)
    neg = rng.integers(0, 2**27, (4, 64)).astype(np.int64)
    pos = rng.integers(0, 2**27, (4, 64)).astype(np.int64)
    overlap, regions = np.zeros((4, 64)), np.ones(4, dtype=np.int64)
    w = np.ones((1, 4), dtype=np.int64)
    fast = pixel_metrics_from_histograms(w, neg, pos, overlap, regions, keys=("pixel_auroc",))["pixel_auroc"][0]
    auroc, _ = _groups_reference(w, neg, pos, overlap, regions, 0.3)
    assert 2.0 * pos.sum() * neg.sum() > 2.0**53
    assert fast == auroc[0]


def test_resamples_without_anomalous_pixels_or_regions_are_nan() -> None:
    _, masks, hist = _category()
    neg, pos, overlap = hist.dense()
    normal = int(np.flatnonzero(~masks.reshape(masks.shape[0], -1).any(dim=1).numpy())[0])
    w = np.zeros((2, hist.n_images), dtype=np.int64)
    w[0, normal] = 3  # only a normal image: no anomalous pixel
    w[1] = 1
    out = pixel_metrics_from_histograms(w, neg, pos, overlap, hist.regions)
    assert all(np.isnan(v[0]) and np.isfinite(v[1]) for v in out.values())


def test_unknown_metric_names_the_choices() -> None:
    _, _, hist = _category(n=4)
    neg, pos, overlap = hist.dense()
    with pytest.raises(ValueError, match=r"pixel_iou.*pixel_auroc"):
        pixel_metrics_from_histograms(np.ones((1, 4)), neg, pos, overlap, hist.regions, keys=("pixel_iou",))


def test_saved_histograms_load_back_unchanged(tmp_path: Path) -> None:
    _, _, hist = _category()
    target = save_histograms(tmp_path / "pixel_hist.npz", {"cat": hist})
    back = load_histograms(target)["cat"]
    assert back.paths == hist.paths and (back.bins, back.e, back.q) == (hist.bins, hist.e, hist.q)
    for name in ("ptr", "col", "neg", "pos", "overlap", "regions"):
        np.testing.assert_array_equal(getattr(back, name), getattr(hist, name))


def test_mismatched_inputs_are_refused() -> None:
    acc = PerImageHistograms(64)
    with pytest.raises(ValueError, match="differ in shape"):
        acc.update(torch.zeros(2, 8, 8), torch.zeros(2, 8, 4, dtype=torch.bool), ["a", "b"])
    with pytest.raises(ValueError, match="1 paths for 2 maps"):
        acc.update(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool), ["a"])
