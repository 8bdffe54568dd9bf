"""CutPaste: synthetic anomalies cut from an image and pasted back into it elsewhere, with their exact masks.

CutPaste (Li et al., CVPR 2021, §3.1) cuts a rectangle of 2–15 % of the image area, with an aspect ratio drawn from
(0.3, 1) ∪ (1, 3.3), optionally jitters its colour, and pastes it at a random location of the same image. The patch
is made of the image's own texture, so it is a subtler, more local anomaly than confetti noise: a good stand-in for
misplaced parts and texture breaks when a validation split has no real defects. Everything runs on batch tensors
in [0, 1] with a torch generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CutPasteConfig:
    """Patch area as a fraction of the image, its aspect ratio (height/width, log-uniform) and colour jitter.

    ``jitter``: per channel, the pasted patch is scaled by 1 ± jitter and shifted by ± jitter (uniform); 0 pastes
    the patch as it was cut.
    """

    min_area: float = 0.02
    max_area: float = 0.15
    min_aspect: float = 0.3
    max_aspect: float = 3.3
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.min_area <= self.max_area < 1.0:
            raise ValueError(f"cutpaste needs 0 < min_area <= max_area < 1, got {self.min_area}, {self.max_area}")
        if not 0.0 < self.min_aspect <= self.max_aspect:
            raise ValueError(f"cutpaste needs 0 < min_aspect <= max_aspect, got {self.min_aspect}, {self.max_aspect}")
        if self.jitter < 0:
            raise ValueError(f"cutpaste jitter must be >= 0, got {self.jitter}")


def _uniform(low: float, high: float, generator: torch.Generator | None, device: torch.device) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, device=device))


def cutpaste(
    images: Tensor, config: CutPasteConfig | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Cut-paste one patch into each image of (B, 3, H, W) in [0, 1]; returns (images, (B, 1, H, W) masks).

    The mask is 1 exactly on the pasted rectangle, which lies wholly inside the image; outside it the image is
    unchanged. The patch's source and target positions are drawn independently (they may overlap, as in the
    paper's code).
    """
    config = config or CutPasteConfig()
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    device = images.device
    out = images.clone()
    masks = torch.zeros(batch, 1, height, width, device=device, dtype=images.dtype)
    for b in range(batch):
        area = _uniform(config.min_area, config.max_area, generator, device) * height * width
        aspect = math.exp(_uniform(math.log(config.min_aspect), math.log(config.max_aspect), generator, device))
        h = min(height, max(1, round(math.sqrt(area * aspect))))
        w = min(width, max(1, round(math.sqrt(area / aspect))))
        sy, sx = (int(torch.randint(0, n - s + 1, (), generator=generator, device=device)) for n, s in
                  ((height, h), (width, w)))  # fmt: skip
        ty, tx = (int(torch.randint(0, n - s + 1, (), generator=generator, device=device)) for n, s in
                  ((height, h), (width, w)))  # fmt: skip
        patch = images[b, :, sy : sy + h, sx : sx + w].clone()
        if config.jitter > 0:
            scale = 1 + config.jitter * (2 * torch.rand(channels, 1, 1, generator=generator, device=device) - 1)
            shift = config.jitter * (2 * torch.rand(channels, 1, 1, generator=generator, device=device) - 1)
            patch = (patch * scale.to(patch.dtype) + shift.to(patch.dtype)).clamp(0, 1)
        out[b, :, ty : ty + h, tx : tx + w] = patch
        masks[b, 0, ty : ty + h, tx : tx + w] = 1.0
    return out, masks
