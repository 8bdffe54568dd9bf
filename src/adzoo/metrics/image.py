"""Image-level metrics and the map-to-image-score convention used by UniAD / ADer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adzoo.metrics.functional import binary_metrics

__all__ = ["avgpool_max_score", "image_metrics"]


def image_metrics(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Exact ``image_auroc``, ``image_ap`` and ``image_f1max`` (NaN if only one class is present).

    Args:
        scores: (N,) image anomaly scores, higher = more anomalous, used as they are.
        labels: (N,) 0 normal / 1 anomalous.
    """
    return {f"image_{k}": v for k, v in binary_metrics(scores, labels).items()}


def avgpool_max_score(maps: Tensor, kernel: int = 16) -> Tensor:
    """Image score = max of a ``kernel`` x ``kernel``, stride-1 average pool of the anomaly map.

    Averaging before the max makes the score robust to single-pixel spikes (the UniAD / ADer
    convention). A map smaller than the kernel along a side is pooled over that whole side.

    Args:
        maps: (B, H, W) or (B, 1, H, W).
        kernel: pooling window side.

    Returns:
        (B,) scores, in the maps' dtype (float32 for half/integer input) and device.
    """
    if kernel < 1:
        raise ValueError(f"kernel must be >= 1, got {kernel}")
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be (B, H, W) or (B, 1, H, W), got shape {tuple(maps.shape)}")
    if maps.dtype != torch.float64:
        maps = maps.float()
    h, w = maps.shape[-2:]
    pooled = F.avg_pool2d(maps, kernel_size=(min(kernel, h), min(kernel, w)), stride=1)
    return pooled.flatten(1).amax(dim=1)
