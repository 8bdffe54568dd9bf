"""Confetti noise: synthetic anomalies made from normal images, with their exact masks (FCDD-style).

FCDD (Liznerski et al., ICLR 2021) and ADTR+ (You et al., 2022) turn normal training images into labelled
anomalies by pasting small randomly coloured, randomly rotated rectangles ("confetti") into them. The
masks are the pasted pixels exactly, so a pixel-level loss knows where the anomaly is. Everything runs on
batch tensors in [0, 1] with a torch generator, so it can be applied on the fly in a training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ConfettiConfig:
    """How many blobs, how large (as a fraction of the image side) and how rotated.

    ``min_blobs``/``max_blobs``: blobs per image (inclusive). ``min_size``/``max_size``: each side of a
    blob, drawn independently, as a fraction of the image side (at least one pixel). ``max_rotation``:
    degrees, drawn uniformly in ±max_rotation. Colours are uniform in [0, 1]³, one per blob.
    """

    min_blobs: int = 1
    max_blobs: int = 4
    min_size: float = 0.04
    max_size: float = 0.2
    max_rotation: float = 45.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_blobs <= self.max_blobs:
            raise ValueError(f"confetti needs 1 <= min_blobs <= max_blobs, got {self.min_blobs}, {self.max_blobs}")
        if not 0.0 < self.min_size <= self.max_size <= 1.0:
            raise ValueError(f"confetti needs 0 < min_size <= max_size <= 1, got {self.min_size}, {self.max_size}")
        if self.max_rotation < 0:
            raise ValueError(f"confetti max_rotation must be >= 0, got {self.max_rotation}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def confetti_noise(
    images: Tensor, config: ConfettiConfig | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Paste confetti into each image of (B, 3, H, W) in [0, 1]; returns (noised images, (B, 1, H, W) masks).

    Each blob's centre is a pixel of the image, so every blob covers at least that pixel; a blob may run over
    the border and be clipped. Later blobs overwrite earlier ones. The mask is 1 exactly where a blob was
    pasted, so the noised image differs from the original only inside the mask (where a random colour equals
    the original pixel the change is zero, which has probability zero).
    """
    config = config or ConfettiConfig()
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    batch, _, height, width = images.shape
    device = images.device
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :]
    side = float(min(height, width))
    noised = images.clone()
    masks = torch.zeros(batch, 1, height, width, device=device, dtype=images.dtype)
    counts = torch.randint(config.min_blobs, config.max_blobs + 1, (batch,), generator=generator, device=device)
    for b in range(batch):
        n = int(counts[b])
        cy = torch.randint(0, height, (n,), generator=generator, device=device).float()
        cx = torch.randint(0, width, (n,), generator=generator, device=device).float()
        # half-sides of at least half a pixel, so the centre pixel is always inside
        half_h = (_uniform(n, config.min_size, config.max_size, generator, device) * side / 2).clamp_min(0.5)
        half_w = (_uniform(n, config.min_size, config.max_size, generator, device) * side / 2).clamp_min(0.5)
        angle = _uniform(n, -config.max_rotation, config.max_rotation, generator, device) * (math.pi / 180.0)
        colours = torch.rand(n, images.shape[1], generator=generator, device=device).to(images.dtype)
        for i in range(n):
            dy, dx = ys - cy[i], xs - cx[i]
            cos, sin = torch.cos(angle[i]), torch.sin(angle[i])
            along, across = cos * dx + sin * dy, -sin * dx + cos * dy  # pixel offsets in the blob's frame
            inside = (along.abs() <= half_w[i]) & (across.abs() <= half_h[i])
            noised[b, :, inside] = colours[i][:, None]
            masks[b, 0, inside] = 1.0
    return noised, masks
