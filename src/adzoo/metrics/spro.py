"""sPRO, MVTec LOCO AD's saturated per-region overlap (Bergmann et al., IJCV 2022), and AU-sPRO, the normalised area
under its curve over the false positive rate up to a limit (0.05 is the paper's headline number).

A defect is one ground-truth channel (one mask file of a LOCO ground-truth folder). Its sPRO at an anomaly threshold
is ``min(TP area / saturation area, 1)``: a logical defect such as a missing item has no meaningful outline, so
finding part of it counts fully once the part reaches the saturation area its defect type sets in
``defects_config.json`` (relative: a fraction of the defect's area; absolute: a pixel count at the data set's
resolution, capped at the defect's area). The curve's y value is the mean sPRO over every defect of every image,
its x value the pixel FPR pooled over all images, a negative being a pixel outside every channel of its image. A
pixel is predicted anomalous when its score is above the threshold.

LOCO scores logical and structural anomalies separately, each with all good test images as negatives, and
reports the mean of the two: call :func:`au_spro` once per type with the good images' maps (with no channels) added.
"""

# Definition source: MVTec's mvtec_loco_ad_evaluation: src/image.py (DefectConfig checks, GroundTruthChannel
# get_saturation_area), src/metrics.py (TP per channel, FP outside the OR of channels), src/util.py
# (get_auc_for_max_fpr: trapezoid up to max_fpr, divided by it), evaluate_experiment.py (per-type, good images added).

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the keys of one ``defects_config.json`` entry
DEFECT_KEYS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")

#: (boolean defect mask, saturation area in pixels) of one defect; an image's channels are a list of these
Channel = tuple[np.ndarray, float]


@dataclass(frozen=True)
class DefectType:
    """One entry of ``defects_config.json``: the value its mask files hold and how much of it saturates sPRO."""

    name: str
    pixel_value: int
    saturation_threshold: float
    relative: bool

    def saturation_area(self, defect_area: int, area_scale: float = 1.0) -> float:
        """The TP area at which a defect of ``defect_area`` pixels counts as found.

        Relative: ``int(threshold * area)``; absolute: ``min(threshold, area)``, as the official evaluation does.
        ``area_scale`` rescales absolute thresholds (pixel counts of the full-resolution ground truth) for masks at
        another size: the ratio of pixel counts, e.g. ``256 * 256 / (1600 * 1100)``. At least one pixel, so a
        defect smaller than its relative share of one pixel is found by one TP pixel instead of dividing by zero.
        """
        if defect_area <= 0:
            raise ValueError(f"defect type {self.name!r}: a defect needs at least one pixel, got {defect_area}")
        if self.relative:
            area = float(int(self.saturation_threshold * defect_area))
        else:
            area = min(self.saturation_threshold * area_scale, float(defect_area))
        return max(1.0, area)


def parse_defects_config(entries: Any, where: str) -> dict[int, DefectType]:
    """``defects_config.json``'s list of entries as {pixel value: DefectType}, or a ValueError naming ``where``.

    The rules are the official ones: a pixel value in 1..255, used once; a relative threshold is a float in
    (0, 1], an absolute one an integer >= 0."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: expected a non-empty JSON list of {{{', '.join(DEFECT_KEYS)}}} objects")
    out: dict[int, DefectType] = {}
    for i, entry in enumerate(entries):
        at = f"{where}: entry {i}"
        if not isinstance(entry, Mapping) or any(k not in entry for k in DEFECT_KEYS):
            raise ValueError(f"{at} is {entry!r}; expected an object with the keys {', '.join(DEFECT_KEYS)}")
        value, threshold, relative = entry["pixel_value"], entry["saturation_threshold"], entry["relative_saturation"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise ValueError(f"{at}: pixel_value {value!r}, expected an integer in 1..255")
        if value in out:
            raise ValueError(f"{at}: pixel_value {value} is used by {out[value].name!r} already")
        if not isinstance(relative, bool):
            raise ValueError(f"{at}: relative_saturation {relative!r}, expected true or false")
        if relative and not (isinstance(threshold, float) and 0.0 < threshold <= 1.0):
            raise ValueError(f"{at}: relative saturation_threshold {threshold!r}, expected a float in (0, 1]")
        if not relative and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0):
            raise ValueError(f"{at}: absolute saturation_threshold {threshold!r}, expected an integer >= 0 (pixels)")
        out[value] = DefectType(str(entry["defect_name"]), value, float(threshold), relative)
    return out


def resize_channels(defects: Sequence[tuple[np.ndarray, DefectType]], size: tuple[int, int]) -> list[Channel]:
    """Full-resolution defects (boolean mask, type) as :data:`Channel` s at an anomaly map's ``size`` (H, W).

    Masks are nearest-resized exactly as :func:`~adzoo.data.mvtec.read_mask` resizes the datamodule's masks, so the
    channels' union is the mask the other pixel metrics see. Saturation areas are taken on the resized mask, absolute
    thresholds scaled by the ratio of pixel counts. A defect that no pixel keeps at this size is left out (it is no
    defect in the union mask either); compare the lengths to count them.
    """
    import torch
    import torch.nn.functional as F

    out: list[Channel] = []
    for mask, defect in defects:
        full = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        small = F.interpolate(full, size=tuple(size), mode="nearest")[0, 0].numpy() > 0.5
        area = int(small.sum())
        if area:
            out.append((small, defect.saturation_area(area, small.size / full[0, 0].numel())))
    return out


@dataclass
class _Prepared:
    """Scores sorted once: every negative pixel, and the pixels of each defect with its saturation area."""

    negatives: np.ndarray
    defects: list[tuple[np.ndarray, float]]

    def curve(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.negatives.size
        fpr = (n - np.searchsorted(self.negatives, thresholds, side="right")) / n
        spro = np.zeros(thresholds.shape, dtype=np.float64)
        for scores, saturation in self.defects:
            tp = scores.size - np.searchsorted(scores, thresholds, side="right")
            spro += np.minimum(tp / saturation, 1.0)
        return fpr, spro / len(self.defects)


def _prepare(anomaly_maps: Sequence[np.ndarray], channels: Sequence[Sequence[Channel]]) -> _Prepared:
    if len(anomaly_maps) != len(channels):
        raise ValueError(f"{len(anomaly_maps)} anomaly maps but {len(channels)} lists of channels; expected one each")
    negatives, defects = [], []
    for i, (amap, image_channels) in enumerate(zip(anomaly_maps, channels, strict=True)):
        scores = np.asarray(amap, dtype=np.float64)
        defect = np.zeros(scores.shape, dtype=bool)
        for j, (mask, saturation) in enumerate(image_channels):
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != scores.shape:
                raise ValueError(f"image {i}, channel {j}: mask {mask.shape} but anomaly map {scores.shape}")
            if not mask.any() or not saturation > 0:
                raise ValueError(f"image {i}, channel {j}: expected a non-empty defect and a saturation area > 0")
            defect |= mask
            defects.append((np.sort(scores[mask]), float(saturation)))
        negatives.append(scores[~defect])
    flat = np.sort(np.concatenate(negatives)) if negatives else np.zeros(0)
    if flat.size == 0 or not defects:
        raise ValueError("sPRO needs at least one defect-free pixel and at least one defect channel")
    return _Prepared(flat, defects)


def spro_curve(
    anomaly_maps: Sequence[np.ndarray], channels: Sequence[Sequence[Channel]], thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(pixel FPR, mean sPRO) at each threshold; ``channels[i]`` holds image i's defects (empty for a good image)."""
    return _prepare(anomaly_maps, channels).curve(np.asarray(thresholds, dtype=np.float64))


def _area_up_to(fpr: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under the piecewise linear (fpr, y) curve on [0, limit], interpolating y at ``limit``."""
    order = np.lexsort((y, fpr))
    fpr, y = fpr[order], y[order]
    inside = int(np.searchsorted(fpr, limit, side="right"))
    xs, ys = fpr[:inside], y[:inside]
    if inside < fpr.size and xs[-1] < limit:
        step = (limit - xs[-1]) / (fpr[inside] - xs[-1])
        xs, ys = np.append(xs, limit), np.append(ys, ys[-1] + step * (y[inside] - ys[-1]))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def au_spro(
    anomaly_maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    max_fpr: float = 0.05,
    num_thresholds: int | None = 1000,
) -> float:
    """AU-sPRO in [0, 1]: the area under the sPRO-FPR curve on [0, ``max_fpr``] divided by ``max_fpr``.

    The curve runs from (0, 0) (threshold +inf) to (1, 1) (-inf). ``num_thresholds`` thresholds are drawn from the
    negative pixels' scores so that the FPR steps evenly over [0, ``max_fpr``], where the area is taken (the curve
    is linear between them); ``None`` uses every distinct score, the exact curve.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    prepared = _prepare(anomaly_maps, channels)
    if num_thresholds is None:
        every = [prepared.negatives] + [scores for scores, _ in prepared.defects]
        inner = np.unique(np.concatenate(every))
    else:
        if num_thresholds < 2:
            raise ValueError(f"num_thresholds must be >= 2 or None, got {num_thresholds}")
        n = prepared.negatives.size
        above = np.ceil(np.linspace(0.0, max_fpr, num_thresholds) * n).astype(np.int64)  # negatives to let through
        inner = np.unique(prepared.negatives[np.clip(n - 1 - above, 0, n - 1)])
    thresholds = np.concatenate(([math.inf], inner, [-math.inf]))
    fpr, spro = prepared.curve(thresholds)
    return _area_up_to(fpr, spro, max_fpr) / max_fpr
