"""From scores to decisions: thresholds fitted on validation images only, used by every method alike.

An inspection engineer needs "good or defective" per part, and where. A threshold chosen on the test set makes the
test metrics at that threshold meaningless, so the threshold is fitted here on the validation split (held-out
``train/good`` images, plus synthetic anomalies with exact masks when ``data.val_anomalies`` asks for them) and
never sees a test image. Strategies (``threshold.strategy``):

* ``percentile``: the q-th percentile of the normal validation scores, i.e. a target false-alarm rate of
  1 - q/100. It needs no anomalous image. Images use ``threshold.q``, pixels ``threshold.pixel_q`` over the pixels
  of the normal validation images (a pixel threshold at 1 % false alarms would mark 655 pixels of every normal
  256² image, hence the stricter default 99.9).
* ``f1_max``: the score that maximises F1 on the validation images with synthetic anomalies (image labels and
  pixel masks); refused without them.
* ``manual``: ``threshold.image`` / ``threshold.pixel`` as given, in the method's raw score units.
* ``none``: no decision (``data.val_fraction=0`` leaves nothing to fit on).

A decision is ``score >= threshold`` (image) and ``map >= pixel threshold`` (mask). Normalised scores put every
method on one scale: ``0.5 + (score - threshold) / (high - low)``, with ``low``/``high`` the smallest and largest
validation score, so 0.5 means "at the threshold" and validation scores span a width of 1. Nothing is clipped or
squashed: a test score beyond the validation range reads beyond [0, 1], and raw scores are always kept beside it.
One decision is fitted per trained model: in the unified setting one for every category, as the model is one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adzoo.metrics.connected import label_numpy

STRATEGIES = ("none", "percentile", "f1_max", "manual")
NEEDS_ANOMALIES = ("f1_max",)
#: per-category keys of the test metrics at the threshold (results.json); the leaderboard shows them on request
IMAGE_KEYS = ("image_precision_thr", "image_recall_thr", "image_f1_thr", "image_fpr_thr", "image_tpr_thr")
PIXEL_KEYS = ("pixel_iou_thr", "pixel_dice_thr", "pixel_pro_thr")
DECISION_KEYS = (*IMAGE_KEYS, *PIXEL_KEYS)
CHECKPOINT_KEY = "adzoo_decision"  # where a checkpoint carries the fitted decision


class ThresholdError(ValueError):
    """A threshold setting that cannot work: names the config key and what was expected."""


def finite_number(value: Any, key: str) -> float:
    """``value`` as a finite float, or a :class:`ThresholdError` naming ``key``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ThresholdError(f"{key}={value!r}: expected a finite number")
    return number


@dataclass(frozen=True)
class ThresholdConfig:
    """The ``threshold:`` section of the config."""

    strategy: str = "percentile"
    q: float = 99.0
    pixel_q: float = 99.9
    image: float | None = None
    pixel: float | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ThresholdError(f"threshold.strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        for key in ("q", "pixel_q"):
            value = finite_number(getattr(self, key), f"threshold.{key}")
            if not 0.0 < value < 100.0:
                raise ThresholdError(f"threshold.{key}={value}: expected a percentile strictly between 0 and 100")
        if self.strategy == "manual":
            if self.image is None:
                raise ThresholdError("threshold.strategy=manual needs threshold.image (a raw image score)")
            finite_number(self.image, "threshold.image")
            if self.pixel is not None:
                finite_number(self.pixel, "threshold.pixel")

    @property
    def enabled(self) -> bool:
        return self.strategy != "none"


@dataclass
class ValidationOutputs:
    """What the model said about the validation images: image scores, labels (1 = synthetic anomaly), and the
    maps with their masks where the method gives maps."""

    scores: np.ndarray
    labels: np.ndarray
    maps: np.ndarray | None = None  # (n, H, W) float32
    masks: np.ndarray | None = None  # (n, H, W) bool
    generator: str = "none"

    @classmethod
    def from_batches(cls, batches: list[dict[str, Any]], generator: str = "none") -> ValidationOutputs:
        """From eval-step outputs (``pred_score``, ``anomaly_map``, ``label``, ``mask``), in any batch split."""
        if not batches:
            raise ThresholdError("the validation split is empty: nothing to fit a threshold on (data.val_fraction)")
        scores = torch.cat([b["pred_score"].detach().float().cpu().reshape(-1) for b in batches])
        labels = torch.cat([torch.as_tensor(b["label"]).cpu().reshape(-1) for b in batches])
        maps = torch.cat([b["anomaly_map"].detach().float().cpu()[:, 0] for b in batches])
        masks = torch.cat([b["mask"].cpu()[:, 0] > 0.5 for b in batches])
        return cls(scores.double().numpy(), labels.long().numpy(), maps.numpy(), masks.numpy(), generator)

    @property
    def normal(self) -> np.ndarray:
        return self.labels == 0

    @property
    def has_anomalies(self) -> bool:
        return bool((self.labels == 1).any())


@dataclass
class Decision:
    """A fitted decision rule: thresholds in raw score units and the validation range that normalises scores."""

    strategy: str
    image_threshold: float
    image_low: float
    image_high: float
    pixel_threshold: float | None = None
    pixel_low: float | None = None
    pixel_high: float | None = None
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "decision") -> Decision:
        try:
            decision = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as exc:
            raise ThresholdError(f"{where}: not a stored decision ({exc})") from exc
        finite_number(decision.image_threshold, f"{where}.image_threshold")
        return decision

    def with_image_threshold(self, value: float, key: str = "threshold") -> Decision:
        """The same rule with the image threshold overridden (``adzoo-predict threshold=...``)."""
        return Decision(**{**self.to_dict(), "image_threshold": finite_number(value, key), "strategy": "manual"})

    def with_pixel_threshold(self, value: float, key: str = "pixel_threshold") -> Decision:
        return Decision(**{**self.to_dict(), "pixel_threshold": finite_number(value, key), "strategy": "manual"})

    @staticmethod
    def _spread(low: float, high: float) -> float:
        return high - low if high > low else 1.0

    def normalise_scores(self, scores: Any) -> Any:
        """0.5 at the image threshold; validation scores span a width of 1 (not clipped)."""
        return 0.5 + (scores - self.image_threshold) / self._spread(self.image_low, self.image_high)

    def normalise_maps(self, maps: Any) -> Any:
        if self.pixel_threshold is None or self.pixel_low is None or self.pixel_high is None:
            raise ThresholdError("this decision has no pixel threshold")
        return 0.5 + (maps - self.pixel_threshold) / self._spread(self.pixel_low, self.pixel_high)

    def is_anomalous(self, scores: Any) -> Any:
        return scores >= self.image_threshold

    def defect_masks(self, maps: Any) -> Any:
        if self.pixel_threshold is None:
            raise ThresholdError("this decision has no pixel threshold")
        return maps >= self.pixel_threshold


def _f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score at which ``score >= t`` has the best F1 (scikit-learn's precision-recall curve)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    return float(thresholds[int(np.argmax(f1))])


def fit_decision(config: ThresholdConfig, val: ValidationOutputs | None) -> Decision | None:
    """The decision ``config`` asks for, fitted on ``val`` alone; None for ``strategy: none``."""
    if not config.enabled:
        return None
    if val is None or val.scores.size == 0:
        if config.strategy != "manual":
            raise ThresholdError(
                f"threshold.strategy={config.strategy} needs validation images, and there are none "
                "(set data.val_fraction > 0, or threshold.strategy=manual / none)"
            )
        image = float(config.image)  # type: ignore[arg-type]
        pixel = None if config.pixel is None else float(config.pixel)
        note = "no validation images: the normalised score is score - threshold + 0.5"
        return Decision("manual", image, image - 0.5, image + 0.5, pixel,
                        None if pixel is None else pixel - 0.5, None if pixel is None else pixel + 0.5,
                        {"images": 0, "note": note})  # fmt: skip
    if not np.isfinite(val.scores).all():
        raise ThresholdError("the model gave non-finite validation scores: no threshold can be fitted")
    if config.strategy in NEEDS_ANOMALIES and not val.has_anomalies:
        raise ThresholdError(
            f"threshold.strategy={config.strategy} needs anomalous validation images; set data.val_anomalies="
            "confetti or cutpaste (synthetic anomalies with exact masks), or use threshold.strategy=percentile"
        )
    normal = val.normal
    if not normal.any():
        raise ThresholdError("the validation split holds no normal image: no threshold can be fitted")
    has_pixels = val.maps is not None and val.masks is not None
    normal_pixels = val.maps[normal].reshape(-1) if has_pixels else None  # type: ignore[index]
    if config.strategy == "percentile":
        image_t = float(np.percentile(val.scores[normal], config.q))
        pixel_t = float(np.percentile(normal_pixels, config.pixel_q)) if normal_pixels is not None else None
    elif config.strategy == "f1_max":
        image_t = _f1_max_threshold(val.scores, val.labels)
        pixel_t = None
        if has_pixels and bool(val.masks.any()):  # type: ignore[union-attr]
            pixel_t = _f1_max_threshold(val.maps.reshape(-1), val.masks.reshape(-1))  # type: ignore[union-attr]
    else:  # manual
        image_t = float(config.image)  # type: ignore[arg-type]
        pixel_t = None if config.pixel is None else float(config.pixel)
    stats = _validation_stats(val, image_t, pixel_t)
    pixel_low = float(val.maps.min()) if has_pixels else None  # type: ignore[union-attr]
    pixel_high = float(val.maps.max()) if has_pixels else None  # type: ignore[union-attr]
    return Decision(config.strategy, image_t, float(val.scores.min()), float(val.scores.max()), pixel_t,
                    pixel_low if pixel_t is not None else None, pixel_high if pixel_t is not None else None,
                    stats)  # fmt: skip


def _validation_stats(val: ValidationOutputs, image_t: float, pixel_t: float | None) -> dict[str, Any]:
    normal = val.normal
    stats: dict[str, Any] = {
        "images": int(val.scores.size),
        "normal_images": int(normal.sum()),
        "anomalous_images": int((~normal).sum()),
        "anomalies": val.generator,
        "normal_score_mean": float(val.scores[normal].mean()),
        "normal_score_std": float(val.scores[normal].std()),
        "image_fpr": float((val.scores[normal] >= image_t).mean()),
    }
    if val.has_anomalies:
        stats["image_tpr"] = float((val.scores[~normal] >= image_t).mean())
    if pixel_t is not None and val.maps is not None and val.masks is not None:
        normal_px = ~val.masks
        stats["pixel_fpr"] = float((val.maps[normal_px] >= pixel_t).mean())
        if val.masks.any():
            stats["pixel_tpr"] = float((val.maps[val.masks] >= pixel_t).mean())
    return stats


# -- test metrics at the threshold -----------------------------------------------------------------------------


def image_decision_metrics(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """Precision, recall (= TPR), F1 and FPR of ``score >= threshold``. Precision with nothing flagged is 0
    (scikit-learn's ``zero_division=0``), so a strict threshold reads as a poor one, not as missing; the others
    are NaN only where their class is absent (a category without anomalous or normal test images)."""
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).bool()
    flagged = s >= threshold
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    precision, recall = (tp / (tp + fp) if tp + fp else 0.0), ratio(tp, tp + fn)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "image_precision_thr": precision,
        "image_recall_thr": recall,
        "image_f1_thr": f1,
        "image_fpr_thr": ratio(fp, fp + tn),
        "image_tpr_thr": recall,
    }


class PixelDecisionCounts:
    """Streams a category's binary masks at the pixel threshold against the ground truth: IoU and Dice over all
    its pixels, and PRO at the threshold (mean over defect regions of the fraction of the region flagged)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.tp = self.fp = self.fn = 0
        self.region_overlap_sum = 0.0
        self.regions = 0

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """(B, H, W) or (B, 1, H, W) maps and masks of one category."""
        pred = (maps.detach().reshape(maps.shape[0], *maps.shape[-2:]) >= self.threshold).cpu().numpy()
        truth = (masks.reshape(masks.shape[0], *masks.shape[-2:]) > 0.5).cpu().numpy()
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        if truth.any():
            labels, count = label_numpy(truth)
            if count:
                flat, hit = labels.reshape(-1), pred.reshape(-1)
                sizes = np.bincount(flat, minlength=count + 1)[1:]
                hits = np.bincount(flat, weights=hit, minlength=count + 1)[1:]
                present = sizes > 0
                self.region_overlap_sum += float((hits[present] / sizes[present]).sum())
                self.regions += int(present.sum())

    def state(self) -> tuple[int, int, int, float, int]:
        return self.tp, self.fp, self.fn, self.region_overlap_sum, self.regions

    def merge(self, other: tuple[int, int, int, float, int]) -> None:
        self.tp += other[0]
        self.fp += other[1]
        self.fn += other[2]
        self.region_overlap_sum += other[3]
        self.regions += other[4]

    def compute(self) -> dict[str, float]:
        union = self.tp + self.fp + self.fn
        return {
            "pixel_iou_thr": self.tp / union if union else math.nan,
            "pixel_dice_thr": 2 * self.tp / (2 * self.tp + self.fp + self.fn) if union else math.nan,
            "pixel_pro_thr": self.region_overlap_sum / self.regions if self.regions else math.nan,
        }
