"""Per-image pixel histograms: what a bootstrap over test images needs from the pixel metrics.

A bootstrap of pixel AUROC or AUPRO redraws test *images*, so recomputing the exact metric would re-sort every
pixel of every resample. Instead each test image is reduced, once, to three histograms on the streaming
back-end's dyadic lattice (:mod:`adzoo.metrics.pixel`): its normal-pixel counts, its anomalous-pixel counts and
its region-overlap mass (each anomalous pixel adds 1/|its region|, which is all AUPRO needs), plus its number of
regions. A resample's histograms are then a weighted sum of image rows, one matrix product for a whole batch of
resamples, and the curve formulas of :mod:`adzoo.metrics.functional` run on the sums.

Exactness: every image is binned on the finest lattice its own range allows; the category's grid, chosen from
the category's range with the same rule, is coarser or equal, and coarsening a dyadic cell is a right shift. So
the category's summed histograms are exactly the streaming back-end's histograms for the same bin count, and a
metric computed from them is the streaming metric of that resolution (ties within a bin).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adzoo.metrics._tensor import as_bhw, as_bool, as_scores, finite_minmax
from adzoo.metrics.connected import label_numpy, region_weights
from adzoo.metrics.pixel import _dyadic_grid
from adzoo.utils.io import atomic_replace

__all__ = ["ARTIFACT", "CategoryHistograms", "PerImageHistograms", "load_histograms", "save_histograms"]

ARTIFACT = "pixel_hist.npz"
FORMAT_VERSION = 1
PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")


@dataclass
class CategoryHistograms:
    """One category's per-image pixel histograms on one grid (cell width 2**e, first cell q), as CSR rows.

    Row i is image ``paths[i]``; its non-empty bins are ``col[ptr[i]:ptr[i+1]]`` (0..bins-1) with the counts of
    normal pixels ``neg``, of anomalous pixels ``pos`` and the overlap mass ``overlap`` there.
    """

    paths: list[str]
    bins: int
    e: int
    q: int
    ptr: np.ndarray
    col: np.ndarray
    neg: np.ndarray
    pos: np.ndarray
    overlap: np.ndarray
    regions: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.paths)

    @property
    def bin_width(self) -> float:
        return math.ldexp(1.0, self.e)

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(neg, pos, overlap) as (n_images, n_used) matrices over the bins some image uses, ascending score.

        Bins no image uses add nothing to any curve, so dropping them changes no metric.
        """
        used, column = np.unique(self.col, return_inverse=True)
        rows = np.repeat(np.arange(self.n_images), np.diff(self.ptr))
        out = []
        for values, dtype in ((self.neg, np.int64), (self.pos, np.int64), (self.overlap, np.float64)):
            matrix = np.zeros((self.n_images, used.size), dtype=dtype)
            matrix[rows, column] = values  # a row's bins are distinct
            out.append(matrix)
        return out[0], out[1], out[2]

    def metrics(self, fpr_limit: float = 0.3) -> dict[str, float]:
        """The four pixel metrics of the whole category, from its summed histograms (the streaming values)."""
        neg, pos, overlap = self.dense()
        weights = np.ones((1, self.n_images), dtype=np.int64)
        values = pixel_metrics_from_histograms(weights, neg, pos, overlap, self.regions, fpr_limit)
        return {k: float(v[0]) for k, v in values.items()}


# The bin formulas below take (R, G) counts in descending-score order (a bin is a group of tied scores) and the
# cumulative normal-pixel count ``fp`` at or above each bin, shared by all four metrics.


def _auroc_from_bins(
    pos: np.ndarray, neg: np.ndarray, fp: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray
) -> np.ndarray:
    """P(s+ > s-) + ½ P(tie in a bin): the same exact rational as the trapezoid under the grouped ROC, in a
    third of its passes. Exact in int64, and in float64 while the numerator stays below 2**53."""
    below = n_neg[:, None] - fp  # normal pixels strictly below each bin
    area2 = np.einsum("rg,rg->r", pos, 2 * below + neg)
    return area2 / (2.0 * n_pos * n_neg)


def _aupro_from_bins(fp: np.ndarray, overlap: np.ndarray, n_bg: np.ndarray, n_regions: np.ndarray,
                     limit: float) -> np.ndarray:  # fmt: skip
    """The PRO-vs-FPR trapezoid up to ``limit``, normalised: the curve's vertices are the origin and the
    cumulative sums at each bin, taken in pixel-count units and only over the bins that some resample reaches
    before its FPR passes ``limit``."""
    n_rows, n_bins = fp.shape
    limit_px = limit * n_bg  # the FPR limit in pixel counts, per resample
    reach = 1 + np.count_nonzero(fp <= limit_px[:, None], axis=1)  # vertices at or below the limit, origin included
    cols = min(int(reach.max()) + 1, n_bins + 1)
    x, y = np.zeros((n_rows, cols)), np.zeros((n_rows, cols))
    x[:, 1:] = fp[:, : cols - 1]
    np.cumsum(overlap[:, : cols - 1], axis=1, out=y[:, 1:])
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    area = np.where(x1 <= limit_px[:, None], (x1 - x0) * (y0 + y1), 0.0).sum(axis=1)
    # the one segment that crosses the limit, cut there by linear interpolation
    k = np.minimum(reach - 1, cols - 2)
    rows = np.arange(n_rows)
    a0, a1, b0, b1 = x[rows, k], x[rows, k + 1], y[rows, k], y[rows, k + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        b_cut = b0 + (b1 - b0) * (limit_px - a0) / (a1 - a0)
    area += np.where(reach <= n_bins, (limit_px - a0) * (b0 + b_cut), 0.0)
    return area / 2 / (limit_px * n_regions)


def pixel_metrics_from_histograms(
    weights: np.ndarray,
    neg: np.ndarray,
    pos: np.ndarray,
    overlap: np.ndarray,
    regions: np.ndarray,
    fpr_limit: float = 0.3,
    keys: tuple[str, ...] = PIXEL_KEYS,
) -> dict[str, np.ndarray]:
    """Pixel AUROC / AP / F1-max / AUPRO (those in ``keys``) of R weighted sums of image histograms at once.

    ``weights`` is (R, n): how many times each image is in each resample (ones for the plain metric). The
    histograms are (n, G) in ascending-score order. Returns arrays of R values (NaN where a resample has no
    normal or no anomalous pixel, and AUPRO NaN where it has no region).
    """
    unknown = set(keys) - set(PIXEL_KEYS)
    if unknown:
        raise ValueError(f"unknown pixel metric(s) {sorted(unknown)}; expected some of {PIXEL_KEYS}")
    # float64 products (BLAS; numpy has none for int64) of integer counts below 2**53 are exact integers
    w = np.asarray(weights, dtype=np.float64)
    neg_d, pos_d = (w @ neg)[:, ::-1], (w @ pos)[:, ::-1]
    fp = np.cumsum(neg_d, axis=1)
    n_neg, n_pos = fp[:, -1].copy(), pos_d.sum(axis=1)
    n_regions = w @ regions
    ok = (n_pos > 0) & (n_neg > 0)
    safe_pos, safe_neg = np.where(ok, n_pos, 1.0), np.where(ok, n_neg, 1.0)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "pixel_auroc" in keys:
            if 2.0 * float(np.max(safe_pos * safe_neg)) < 2.0**53:
                out["pixel_auroc"] = _auroc_from_bins(pos_d, neg_d, fp, safe_pos, safe_neg)
            else:  # past float64's integers: the same sums in int64
                counts = (np.rint(a).astype(np.int64) for a in (pos_d, neg_d, fp, safe_pos, safe_neg))
                out["pixel_auroc"] = _auroc_from_bins(*counts)
        if "pixel_ap" in keys or "pixel_f1max" in keys:
            tp = np.cumsum(pos_d, axis=1)
            predicted = tp + fp
            if "pixel_ap" in keys:  # sum_n (R_n - R_{n-1}) P_n, as sklearn's average_precision_score
                out["pixel_ap"] = np.einsum("rg,rg->r", pos_d, tp / np.maximum(predicted, 1.0)) / safe_pos
            if "pixel_f1max" in keys:  # max 2TP / (P + TP + FP)
                out["pixel_f1max"] = (2.0 * tp / (safe_pos[:, None] + predicted)).max(axis=1)
        if "pixel_aupro" in keys:
            safe_regions = np.where(n_regions > 0, n_regions, 1.0)
            aupro = _aupro_from_bins(fp, (w @ overlap)[:, ::-1], safe_neg, safe_regions, fpr_limit)
            out["pixel_aupro"] = np.where(n_regions > 0, aupro, np.nan)
    return {k: np.where(ok, out[k], np.nan) for k in keys}


class PerImageHistograms:
    """Accumulates one category's per-image histograms while its test images stream past.

    Each image keeps its own finest grid (at most ``bins`` cells over its own range) until :meth:`finish` moves
    every image onto the category's grid. Memory is at most ``bins`` non-empty cells per image.
    """

    def __init__(self, bins: int = 1024) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.bins = int(bins)
        # per image: (path, e, cells, neg, pos, overlap, n_regions, lo, hi); cells are absolute lattice indices
        self._items: list[tuple[Any, ...]] = []
        self._lo = math.inf
        self._hi = -math.inf

    def __len__(self) -> int:
        return len(self._items)

    def update(self, maps: Tensor, masks: Tensor, paths: list[str]) -> None:
        """Add a batch: (B, H, W) maps and masks of the same shape, one path per image."""
        m = as_scores(as_bhw(maps, "maps"))
        fg_t = as_bool(as_bhw(masks, "masks"))
        if m.shape != fg_t.shape:
            raise ValueError(f"maps {tuple(m.shape)} and masks {tuple(fg_t.shape)} differ in shape")
        if len(paths) != m.shape[0]:
            raise ValueError(f"{len(paths)} paths for {m.shape[0]} maps")
        if m.numel() == 0:
            return
        finite_minmax(m, "maps")
        scores = m.detach().to("cpu", torch.float64).numpy()
        fg = fg_t.cpu().numpy()
        labels, _ = label_numpy(fg)
        weights = region_weights(labels, fg)
        ends = np.cumsum(fg.reshape(fg.shape[0], -1).sum(axis=1))
        starts = ends - fg.reshape(fg.shape[0], -1).sum(axis=1)
        for i, path in enumerate(paths):
            s, f = scores[i].reshape(-1), fg[i].reshape(-1)
            lo, hi = float(s.min()), float(s.max())
            self._lo, self._hi = min(self._lo, lo), max(self._hi, hi)
            e, q = _dyadic_grid(lo, hi, self.bins)
            idx = np.floor(s * math.ldexp(1.0, -e)).astype(np.int64) - q
            total = np.bincount(idx, minlength=self.bins)
            pos = np.bincount(idx[f], minlength=self.bins)
            overlap = np.bincount(idx[f], weights=weights[starts[i] : ends[i]], minlength=self.bins)
            cells = np.flatnonzero(total)
            n_regions = int(np.unique(labels[i][fg[i]]).size)
            self._items.append(
                (path, e, cells + q, total[cells] - pos[cells], pos[cells], overlap[cells], n_regions, lo, hi)
            )

    def state(self) -> list[tuple[Any, ...]]:
        """Picklable per-image entries (for the DDP gather); :meth:`merge` adds another rank's."""
        return list(self._items)

    def merge(self, other: list[tuple[Any, ...]]) -> None:
        for item in other:
            self._lo, self._hi = min(self._lo, item[7]), max(self._hi, item[8])
            self._items.append(item)

    def finish(self) -> CategoryHistograms | None:
        """Every image on the category's grid; None before any image."""
        if not self._items:
            return None
        e_cat, q_cat = _dyadic_grid(self._lo, self._hi, self.bins)
        ptr, cols, negs, poss, ovls = [0], [], [], [], []
        for _path, e, cells, neg, pos, overlap, *_ in self._items:
            if e > e_cat:
                raise RuntimeError("internal error: an image grid is coarser than its category's")
            moved = np.right_shift(cells, min(e_cat - e, 62)) - q_cat
            column, inverse = np.unique(moved, return_inverse=True)
            cols.append(column.astype(np.int32))
            negs.append(np.bincount(inverse, weights=neg, minlength=column.size).astype(np.int64))
            poss.append(np.bincount(inverse, weights=pos, minlength=column.size).astype(np.int64))
            ovls.append(np.bincount(inverse, weights=overlap, minlength=column.size))
            ptr.append(ptr[-1] + column.size)
        col = np.concatenate(cols)
        if col.size and (col.min() < 0 or col.max() >= self.bins):
            raise RuntimeError("internal error: a cell fell outside the category's grid")
        return CategoryHistograms(
            paths=[item[0] for item in self._items],
            bins=self.bins,
            e=e_cat,
            q=q_cat,
            ptr=np.asarray(ptr, dtype=np.int64),
            col=col,
            neg=np.concatenate(negs),
            pos=np.concatenate(poss),
            overlap=np.concatenate(ovls),
            regions=np.asarray([item[6] for item in self._items], dtype=np.int64),
        )


def save_histograms(path: str | os.PathLike, categories: dict[str, CategoryHistograms]) -> Path:
    """Write every category's histograms into one compressed ``.npz``, atomically."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.asarray(FORMAT_VERSION),
        "categories": np.asarray(sorted(categories), dtype=str),
    }
    for k, name in enumerate(sorted(categories)):
        h = categories[name]
        width = max(int(h.pos.max(initial=0)), int(h.neg.max(initial=0)))
        count_dtype = np.uint16 if width < 2**16 else np.uint32
        arrays.update(
            {
                f"c{k}_paths": np.asarray(h.paths, dtype=str),
                f"c{k}_grid": np.asarray([h.bins, h.e, h.q], dtype=np.int64),
                f"c{k}_ptr": h.ptr.astype(np.int64),
                f"c{k}_col": h.col.astype(np.uint16 if h.bins <= 2**16 else np.int32),
                f"c{k}_neg": h.neg.astype(count_dtype),
                f"c{k}_pos": h.pos.astype(count_dtype),
                f"c{k}_overlap": h.overlap.astype(np.float64),
                f"c{k}_regions": h.regions.astype(np.int64),
            }
        )
    return atomic_replace(path, lambda handle: np.savez_compressed(handle, **arrays), binary=True)


def load_histograms(path: str | os.PathLike) -> dict[str, CategoryHistograms]:
    """Read :func:`save_histograms`' file; a missing key or another format version is a clear error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"format version {version}, expected {FORMAT_VERSION}")
            out = {}
            for k, name in enumerate(data["categories"].tolist()):
                bins, e, q = (int(v) for v in data[f"c{k}_grid"])
                out[str(name)] = CategoryHistograms(
                    paths=[str(p) for p in data[f"c{k}_paths"].tolist()],
                    bins=bins,
                    e=e,
                    q=q,
                    ptr=data[f"c{k}_ptr"].astype(np.int64),
                    col=data[f"c{k}_col"].astype(np.int64),
                    neg=data[f"c{k}_neg"].astype(np.int64),
                    pos=data[f"c{k}_pos"].astype(np.int64),
                    overlap=data[f"c{k}_overlap"].astype(np.float64),
                    regions=data[f"c{k}_regions"].astype(np.int64),
                )
            return out
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable per-image histogram file ({exc})") from exc
