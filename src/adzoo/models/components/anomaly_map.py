"""Shared map and score reductions, so every method turns feature-level scores into maps the same way."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adzoo.metrics.image import avgpool_max_score  # the scoring convention lives with the metrics
from adzoo.models.components.precision import full_precision


@full_precision
def upsample_map(scores: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """(B, h, w) or (B, 1, h, w) patch scores → (B, 1, H, W) map by bilinear interpolation."""
    if scores.dim() == 3:
        scores = scores[:, None]
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=align_corners)


@full_precision
def gaussian_blur(anomaly_map: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth (B, 1, H, W) maps with a Gaussian of ``sigma`` pixels, truncated at 4σ with reflected borders (as
    PatchCore's σ=4); the kernel shrinks to fit maps smaller than it. Separable, with the kernel a constant, so
    traced and ONNX exports carry it as one."""
    half = min(int(4.0 * sigma + 0.5), min(anomaly_map.shape[-2:]) - 1)
    if half < 1:
        return anomaly_map
    weights = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-half, half + 1)]
    kernel = torch.tensor([w / sum(weights) for w in weights], dtype=anomaly_map.dtype, device=anomaly_map.device)
    padded = F.pad(anomaly_map, (half, half, half, half), mode="reflect")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))


SCORE_MODES = ("max", "mean")


@full_precision
def image_score(anomaly_map: torch.Tensor, mode: str = "max", pool_kernel: int = 16) -> torch.Tensor:
    """(B, 1, H, W) map → (B,) score: ``max`` of a pool_kernel² stride-1 average pool (MVTec-like data) or ``mean``
    (one-class classification sets, the reference CIFAR-10 protocol)."""
    if mode == "max":
        return avgpool_max_score(anomaly_map, pool_kernel)
    if mode == "mean":
        return anomaly_map.flatten(1).mean(dim=1)
    raise ValueError(f"model.score_mode must be one of {SCORE_MODES}, got {mode!r}")
