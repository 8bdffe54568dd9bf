"""ADTR's losses (You et al., 2022, §3.3): L_norm for normal-only training, L_px and L_img for ADTR+.

All take the feature difference d = f − f̂ of shape (B, C, H, W) on the token grid. The ADTR+ losses follow
the FCDD/HSC form: a pseudo-Huber value φ per position is pulled down on normal positions and pushed up
on anomalous ones through −log(1 − exp(−·)), which is 0 for a large φ and +∞ for φ → 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adzoo.models.components.precision import full_precision

LABEL_DOWNSAMPLING = ("max", "area")
# Lower bound on the push term's argument: −log(1 − exp(−x)) is +∞ at x = 0 (no reconstruction error).
PUSH_EPS = 1e-6


@full_precision
def normal_loss(difference: Tensor) -> Tensor:
    """L_norm = (1/HW)·‖f − f̂‖²₂: squared L2 over channels, averaged over positions (and the batch)."""
    return difference.pow(2).sum(dim=1).mean()


@full_precision
def pseudo_huber(difference: Tensor) -> Tensor:
    """φ(u) = sqrt((mean_i |d(i, u)|)² + 1) − 1, per position: (B, C, H, W) → (B, H, W)."""
    return (difference.abs().mean(dim=1).pow(2) + 1.0).sqrt() - 1.0


def _push(value: Tensor) -> Tensor:
    """−log(1 − exp(−x)), computed as −log(−expm1(−x)) for accuracy near 0, with x ≥ PUSH_EPS."""
    return -torch.log(-torch.expm1(-value.clamp_min(PUSH_EPS)))


@full_precision
def pixel_loss(phi: Tensor, labels: Tensor, alpha: float = 0.003) -> Tensor:
    """L_px with labels y(u) ∈ [0, 1] per position, (B, H, W) each; the mean over the batch.

    Per image: (1/HW)·Σ_u (1 − y(u))·φ(u) − α·log(1 − exp(−(1/HW)·Σ_u y(u)·φ(u))). An image without any
    anomalous position has no push term (its argument would be 0 and the term +∞): it is only pulled.
    """
    if phi.shape != labels.shape:
        raise ValueError(f"phi {tuple(phi.shape)} and labels {tuple(labels.shape)} must have the same shape")
    labels = labels.to(phi.dtype)
    pull = ((1.0 - labels) * phi).flatten(1).mean(dim=1)
    push = _push((labels * phi).flatten(1).mean(dim=1))
    has_anomaly = labels.flatten(1).amax(dim=1) > 0
    return (pull + alpha * torch.where(has_anomaly, push, torch.zeros_like(push))).mean()


@full_precision
def image_loss(phi: Tensor, labels: Tensor, alpha: float = 0.003, top_k: int = 20) -> Tensor:
    """L_img with image labels y ∈ {0, 1} (B,): q = mean of the top-k φ of the image, then
    (1 − y)·q − α·y·log(1 − exp(−q)), averaged over the batch. Top-k because an anomalous image is mostly
    normal; k is capped at the number of positions."""
    if labels.shape != phi.shape[:1]:
        raise ValueError(f"expected one label per image ({phi.shape[0]}), got shape {tuple(labels.shape)}")
    flat = phi.flatten(1)
    q = flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(dim=1)
    labels = labels.to(phi.dtype)
    return ((1.0 - labels) * q + alpha * labels * _push(q)).mean()


def downsample_labels(masks: Tensor, grid: tuple[int, int], mode: str = "max") -> Tensor:
    """(B, 1, H, W) pixel masks → (B, h, w) position labels on the token grid.

    ``max``: a position is anomalous when any of its pixels is (its features see the blob through their
    receptive field); ``area``: the anomalous fraction of its pixels, a soft label.
    """
    if mode == "max":
        return F.adaptive_max_pool2d(masks, grid)[:, 0]
    if mode == "area":
        return F.adaptive_avg_pool2d(masks, grid)[:, 0]
    raise ValueError(f"method.label_downsampling must be one of {LABEL_DOWNSAMPLING}, got {mode!r}")
