"""Labelled anomalies for ADTR+: confetti-noised training normals (pixel labels) or outlier images.

The paper makes MVTec anomalies with FCDD's confetti noise and uses another data set (CIFAR-100) as
"irrelevant" outliers for CIFAR-10. Offline, the outlier choices here are the confetti-noised normals
themselves (with their masks dropped: image labels only) or scikit-learn's bundled digits, a data set
that needs no download, upsampled and made RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adzoo.data.confetti import ConfettiConfig, confetti_noise

OUTLIER_SOURCES = ("confetti", "digits")


def _digits() -> Tensor:
    """All 1,797 scikit-learn digits as (N, 3, 8, 8) float32 in [0, 1] (grey, white strokes on black)."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float() / 16.0
    return images[:, None].expand(-1, 3, -1, -1).contiguous()


class AnomalySource:
    """Makes ``count`` labelled anomalies from a batch of normal images on the fly.

    ``__call__`` returns (images, pixel masks); the masks are exact for confetti and all ones for an
    outlier image (the whole image is irrelevant). The pool of outlier images is loaded once, lazily.
    """

    def __init__(self, kind: str = "confetti", confetti: ConfettiConfig | None = None) -> None:
        if kind not in OUTLIER_SOURCES:
            raise ValueError(f"method.outlier_source must be one of {OUTLIER_SOURCES}, got {kind!r}")
        self.kind = kind
        self.confetti = confetti or ConfettiConfig()
        self._pool: Tensor | None = None

    def __call__(self, normals: Tensor, count: int) -> tuple[Tensor, Tensor]:
        batch, _, height, width = normals.shape
        if self.kind == "confetti":
            # repeat the batch when more anomalies than normals are asked for
            base = normals[torch.arange(count, device=normals.device) % batch]
            return confetti_noise(base, self.confetti)
        if self._pool is None:
            self._pool = _digits()
        picks = torch.randint(0, self._pool.shape[0], (count,))
        images = F.interpolate(self._pool[picks], size=(height, width), mode="bilinear", align_corners=False)
        images = images.clamp(0.0, 1.0).to(device=normals.device, dtype=normals.dtype)
        return images, torch.ones(count, 1, height, width, device=normals.device, dtype=normals.dtype)
