"""Pixel-level metrics accumulated batch by batch, with two interchangeable back-ends.

``ExactPixelMetrics`` keeps every pixel score (on its device) and evaluates the exact curves at the
end. ``StreamingPixelMetrics`` keeps a few fixed-size histograms instead, so memory does not grow with
the test set; its metrics are the exact metrics of the scores rounded down to bin edges.

Both label ground-truth regions inside ``update`` (AUPRO needs per-region overlaps), expose a picklable
CPU ``state()`` and can ``merge()`` another rank's state, so DDP evaluation is gather-states-then-merge.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from adzoo.metrics._tensor import as_bhw, as_bool, as_scores, concat, finite_minmax, split_by_mask
from adzoo.metrics.connected import label_numpy, region_weights
from adzoo.metrics.functional import (
    Groups,
    _ap_from_groups,
    _aupro_from_groups,
    _auroc_from_groups,
    _check_limit,
    _f1max_from_groups,
    _shift,
    pixel_metrics_from_split,
)

__all__ = [
    "PIXEL_METRIC_KEYS",
    "ExactPixelMetrics",
    "PixelMetrics",
    "StreamingPixelMetrics",
    "make_pixel_metrics",
]

PIXEL_METRIC_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")


@runtime_checkable
class PixelMetrics(Protocol):
    """What an evaluation loop needs from a pixel-metric accumulator, whatever the back-end."""

    def update(self, maps: Tensor, masks: Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def merge(self, other_state: dict[str, Any]) -> None: ...

    def reset(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def _nan_result() -> dict[str, float]:
    return dict.fromkeys(PIXEL_METRIC_KEYS, math.nan)


class _Batch(NamedTuple):
    """One validated batch: flat scores, flat fg mask (scores' device), fg region weights, #regions,
    and the scores' (min, max)."""

    scores: Tensor
    fg: Tensor
    weights: Tensor
    n_regions: int
    lo: float
    hi: float


def _prepare(maps: Tensor, masks: Tensor) -> _Batch | None:
    """Validate and flatten a batch and label its regions; None for an empty batch."""
    m = as_scores(as_bhw(maps, "maps"))
    fg = as_bool(as_bhw(masks, "masks"))
    if m.shape != fg.shape:
        raise ValueError(f"maps {tuple(m.shape)} and masks {tuple(fg.shape)} differ in shape")
    if m.numel() == 0:
        return None
    lo, hi = finite_minmax(m, "maps")
    fg_np = fg.cpu().numpy()
    labels, n_regions = label_numpy(fg_np)
    weights = torch.from_numpy(region_weights(labels, fg_np)).to(m.device)
    return _Batch(m.reshape(-1), fg.to(m.device).reshape(-1), weights, n_regions, lo, hi)


class ExactPixelMetrics:
    """Exact pixel AUROC / AP / F1-max / AUPRO: stores every score, sorts once at ``compute``.

    Pixels are split into background scores and foreground scores (with each pixel's 1/|region|) at
    ``update``, which is all the exact formulas need; memory is ~4 bytes per background pixel and ~12 per
    foreground pixel (float32 maps), on the maps' device.
    """

    def __init__(self, fpr_limit: float = 0.3) -> None:
        _check_limit(fpr_limit)
        self.fpr_limit = fpr_limit
        self.reset()

    def reset(self) -> None:
        self._pos: list[Tensor] = []
        self._weights: list[Tensor] = []
        self._neg: list[Tensor] = []
        self._n_regions = 0
        self._device: torch.device | None = None

    def update(self, maps: Tensor, masks: Tensor) -> None:
        batch = _prepare(maps, masks)
        if batch is None:
            return
        if self._device is None:
            self._device = batch.scores.device
        pos, neg = split_by_mask(batch.scores, batch.fg)
        self._pos.append(pos)
        self._weights.append(batch.weights)
        self._neg.append(neg)
        self._n_regions += batch.n_regions

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """Concatenated (pos, weights, neg), in float64 if any batch was float64, else float32; the
        lists are compacted to the concatenation so repeated calls do not copy again."""
        wide = any(p.dtype == torch.float64 for p in self._pos + self._neg)
        dtype = torch.float64 if wide else torch.float32
        pos, weights = concat(self._pos, dtype), concat(self._weights, torch.float64)
        neg = concat(self._neg, dtype)
        if self._pos or self._neg:
            self._pos, self._weights, self._neg = [pos], [weights], [neg]
        return pos, weights, neg

    def compute(self) -> dict[str, float]:
        if not self._pos and not self._neg:
            return _nan_result()
        pos, weights, neg = self._tensors()
        return pixel_metrics_from_split(pos, weights, neg, self._n_regions, self.fpr_limit)

    def state(self) -> dict[str, Any]:
        pos, weights, neg = self._tensors()
        return {
            "backend": "exact",
            "pos": pos.cpu(),
            "weights": weights.cpu(),
            "neg": neg.cpu(),
            "n_regions": self._n_regions,
        }

    def merge(self, other_state: dict[str, Any]) -> None:
        if other_state.get("backend") != "exact":
            raise ValueError(f"cannot merge a {other_state.get('backend')!r} state into an exact one")
        device = self._device or torch.device("cpu")  # a later accelerator batch pulls all onto it
        self._pos.append(other_state["pos"].to(device))
        self._weights.append(other_state["weights"].to(device))
        self._neg.append(other_state["neg"].to(device))
        self._n_regions += int(other_state["n_regions"])

    def describe(self) -> dict[str, Any]:
        n_pos = sum(p.numel() for p in self._pos)
        n_neg = sum(p.numel() for p in self._neg)
        return {
            "backend": "exact",
            "fpr_limit": self.fpr_limit,
            "n_pixels": n_pos + n_neg,
            "n_anomalous_pixels": n_pos,
            "n_regions": self._n_regions,
        }


# --------------------------------------------------------------------------------------------------
# Streaming back-end: a dyadic-lattice histogram.
#
# The score range is not known in advance, so the bins live on a fixed lattice: bin edges are the
# integer multiples of a power of two, width 2**e. A score s belongs to lattice cell floor(s * 2**-e);
# the histogram stores `bins` consecutive cells starting at cell q. Why this scheme:
#   * Binning is exact: scaling by a power of two and flooring are exact in floating point, so a
#     score equal to an edge always lands in the bin above it, like a ">= threshold" test.
#   * Widening is exact: a cell of width 2**(e+d) is the union of 2**d cells of width 2**e, so when
#     a batch falls outside the range the old counts are merged into coarser bins without any
#     approximation (then shifted so the range starts at the new minimum).
#   * The grid is a pure function of the global (min, max) seen: e is the smallest exponent whose
#     cells cover [min, max] with `bins` cells, q = floor(min * 2**-e). So one accumulator over all
#     data and the merge of per-rank accumulators end with identical histograms, whatever the order.
#   * Cost: the data range always spans more than bins/2 cells (e is minimal), so resolution is at
#     least half the bin count, and memory is fixed (3 x bins numbers).
# e is also floored at (exponent of max |score|) - 60: finer cells than that are meaningless for
# float64 and it keeps cell indices below 2**61, inside int64.
# --------------------------------------------------------------------------------------------------

_E_MIN = -1000  # keeps 2**-e finite in float64


def _dyadic_grid(lo: float, hi: float, bins: int) -> tuple[int, int]:
    """(e, q): smallest e such that [lo, hi] fits in ``bins`` cells of width 2**e; q = first cell."""
    m = max(abs(lo), abs(hi))
    e_floor = max(math.frexp(m)[1] - 60, _E_MIN) if m > 0 else _E_MIN

    def n_cells(e: int) -> int:
        return math.floor(math.ldexp(hi, -e)) - math.floor(math.ldexp(lo, -e)) + 1

    e = e_floor
    span = hi - lo
    if span > 0 and math.isfinite(span):
        # a lower bound on the answer (cells >= span / 2**e), so the upward search below finds the minimum
        e = max(e, math.frexp(span)[1] - (bins + 1).bit_length() - 3)
    while n_cells(e) > bins:
        e += 1
    return e, math.floor(math.ldexp(lo, -e))


def _rebin(hist: Tensor, e0: int, q0: int, e1: int, q1: int) -> Tensor:
    """Move a histogram from grid (e0, q0) to the coarser-or-equal grid (e1, q1), exactly."""
    if (e0, q0) == (e1, q1):
        return hist
    bins = hist.numel()
    cells = torch.arange(bins, device=hist.device, dtype=torch.int64) + q0
    # Arithmetic shift = floor division by 2**d; |cell| < 2**61, so d >= 62 all give the same result.
    new = torch.bitwise_right_shift(cells, min(e1 - e0, 62)) - q1
    # Cells outside the new range hold no counts (the data range is inside it), clamp them anywhere.
    return torch.zeros_like(hist).index_add_(0, new.clamp_(0, bins - 1), hist)


class StreamingPixelMetrics:
    """Fixed-memory pixel AUROC / AP / F1-max / AUPRO from histograms on an adaptive dyadic grid.

    Per bin it keeps: the count of normal pixels, the count of anomalous pixels, and the "region
    overlap" mass (each anomalous pixel adds 1/|its region|), plus the number of regions. Cumulative
    sums from the top bin give TP/FP counts, FPR and mean PRO exactly at every bin edge, and the
    metrics are those of the scores rounded down to their bin edge (ties within a bin). See the
    lattice notes above for the range scheme; ``describe()`` reports the grid.

    Args:
        bins: number of histogram bins (the data always spans at least ``bins / 2`` of them).
        fpr_limit: AUPRO integration limit.
    """

    def __init__(self, bins: int = 4096, fpr_limit: float = 0.3) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        _check_limit(fpr_limit)
        self.bins = int(bins)
        self.fpr_limit = fpr_limit
        self.reset()

    def reset(self) -> None:
        self._lo: float | None = None
        self._hi: float | None = None
        self._e = 0
        self._q = 0
        self._neg = torch.zeros(self.bins, dtype=torch.int64)  # counts of normal pixels per bin
        self._pos = torch.zeros(self.bins, dtype=torch.int64)  # counts of anomalous pixels per bin
        self._overlap = torch.zeros(self.bins, dtype=torch.float64)  # sum of 1/|region| per bin
        self._n_regions = 0

    # -- grid ------------------------------------------------------------------------------------

    def _include(self, lo: float, hi: float, device: torch.device) -> None:
        """Grow the tracked [min, max] and move the histograms to the grid it implies."""
        if self._lo is None or self._hi is None:
            self._lo, self._hi = lo, hi
            self._e, self._q = _dyadic_grid(lo, hi, self.bins)
            self._neg, self._pos = self._neg.to(device), self._pos.to(device)
            self._overlap = self._overlap.to(device)
            return
        if lo >= self._lo and hi <= self._hi:
            return
        self._lo, self._hi = min(lo, self._lo), max(hi, self._hi)
        e, q = _dyadic_grid(self._lo, self._hi, self.bins)
        e = max(e, self._e)  # monotone by construction; guard anyway so rebinning only coarsens
        q = math.floor(math.ldexp(self._lo, -e))
        self._neg = _rebin(self._neg, self._e, self._q, e, q)
        self._pos = _rebin(self._pos, self._e, self._q, e, q)
        self._overlap = _rebin(self._overlap, self._e, self._q, e, q)
        self._e, self._q = e, q

    def _histograms(self, b: _Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(normal counts, anomalous counts, region-overlap mass) per bin of one batch, on the current grid.

        A score's bin is floor(s * 2**-e) - q: power-of-two scaling and floor are exact, so a score on an
        edge always lands in the bin above it. float32 scores are scaled in float32 when 2**-e fits its
        exponent range (still exact), otherwise in float64.
        """
        scale, q, bins = math.ldexp(1.0, -self._e), self._q, self.bins
        wide = not (b.scores.dtype == torch.float32 and -126 <= -self._e <= 127)
        # The grid was chosen from this batch's exact min/max with the same exact arithmetic, so every
        # index is in [0, bins): bincount would raise on a negative one and the length check below
        # catches a too-large one, instead of a clamp that could hide a bug.
        if b.scores.device.type == "cpu":
            x, fg = b.scores.numpy(), b.fg.numpy()
            scaled = (x.astype(np.float64) if wide else x) * scale
            idx = np.floor(scaled, out=scaled).astype(np.int64)
            idx -= q
            idx_fg = idx[fg]
            total = np.bincount(idx, minlength=bins)
            pos = np.bincount(idx_fg, minlength=bins)
            overlap = np.bincount(idx_fg, weights=b.weights.numpy(), minlength=bins)
            hists = torch.from_numpy(total - pos), torch.from_numpy(pos), torch.from_numpy(overlap)
        else:
            x_t = b.scores.to(torch.float64) if wide else b.scores
            idx_t = torch.floor(x_t * scale).to(torch.int64) - q
            idx_fg_t = idx_t[b.fg]
            pos_t = torch.bincount(idx_fg_t, minlength=bins)
            total_t = torch.bincount(idx_t, minlength=bins)
            overlap_t = torch.bincount(idx_fg_t, weights=b.weights.to(torch.float64), minlength=bins)
            hists = total_t - pos_t, pos_t, overlap_t
        if hists[0].numel() != bins:
            raise RuntimeError("internal error: a score fell outside the histogram grid")
        return hists

    # -- accumulation ----------------------------------------------------------------------------

    def update(self, maps: Tensor, masks: Tensor) -> None:
        batch = _prepare(maps, masks)
        if batch is None:
            return
        self._include(batch.lo, batch.hi, batch.scores.device)
        neg, pos, overlap = self._histograms(batch)
        device = self._neg.device
        self._neg += neg.to(device)
        self._pos += pos.to(device)
        self._overlap += overlap.to(device)
        self._n_regions += batch.n_regions

    def compute(self) -> dict[str, float]:
        n_neg, n_pos = int(self._neg.sum()), int(self._pos.sum())
        if n_neg == 0 or n_pos == 0:
            return _nan_result()
        # Every bin is a group of tied scores; descending score order = reversed bins.
        tp_ge = self._pos.cpu().numpy()[::-1].cumsum()
        fp_ge = self._neg.cpu().numpy()[::-1].cumsum()
        pro_ge = self._overlap.cpu().numpy()[::-1].cumsum()
        g = Groups(_shift(tp_ge), tp_ge, _shift(fp_ge), fp_ge, _shift(pro_ge), pro_ge)
        return {
            "pixel_auroc": _auroc_from_groups(g, n_pos, n_neg),
            "pixel_ap": _ap_from_groups(g, n_pos),
            "pixel_f1max": _f1max_from_groups(g, n_pos),
            "pixel_aupro": _aupro_from_groups(g, n_neg, self._n_regions, self.fpr_limit),
        }

    # -- distribution ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "backend": "streaming",
            "bins": self.bins,
            "lo": self._lo,
            "hi": self._hi,
            "e": self._e,
            "q": self._q,
            "neg": self._neg.cpu(),
            "pos": self._pos.cpu(),
            "overlap": self._overlap.cpu(),
            "n_regions": self._n_regions,
        }

    def merge(self, other_state: dict[str, Any]) -> None:
        """Add another accumulator's state; exact, since both grids coarsen onto the merged one."""
        if other_state.get("backend") != "streaming":
            raise ValueError(f"cannot merge a {other_state.get('backend')!r} state into a streaming one")
        if int(other_state["bins"]) != self.bins:
            raise ValueError(f"cannot merge {other_state['bins']} bins into {self.bins}")
        if other_state["lo"] is None:
            return
        device = self._neg.device
        self._include(float(other_state["lo"]), float(other_state["hi"]), device)
        e0, q0 = int(other_state["e"]), int(other_state["q"])
        self._neg += _rebin(other_state["neg"], e0, q0, self._e, self._q).to(device)
        self._pos += _rebin(other_state["pos"], e0, q0, self._e, self._q).to(device)
        self._overlap += _rebin(other_state["overlap"], e0, q0, self._e, self._q).to(device)
        self._n_regions += int(other_state["n_regions"])

    def describe(self) -> dict[str, Any]:
        """The grid in use: bin count and width, the range it covers, and the data range seen."""
        out: dict[str, Any] = {"backend": "streaming", "bins": self.bins, "fpr_limit": self.fpr_limit}
        if self._lo is None or self._hi is None:
            return {**out, "range": None, "bin_width": None, "n_pixels": 0, "n_regions": 0}
        width = math.ldexp(1.0, self._e)
        used = math.floor(math.ldexp(self._hi, -self._e)) - self._q + 1
        return {
            **out,
            "range": (self._q * width, (self._q + self.bins) * width),
            "bin_width": width,
            "score_min": self._lo,
            "score_max": self._hi,
            "bins_spanned": used,
            "n_pixels": int(self._neg.sum() + self._pos.sum()),
            "n_regions": self._n_regions,
        }


_BACKENDS: dict[str, type] = {"exact": ExactPixelMetrics, "streaming": StreamingPixelMetrics}


def make_pixel_metrics(backend: str, **kw: Any) -> PixelMetrics:
    """Build a pixel-metric accumulator by name (``exact`` or ``streaming``); ``kw`` go to its constructor."""
    try:
        cls = _BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown pixel metrics backend {backend!r}; valid: {sorted(_BACKENDS)}") from None
    return cls(**kw)
