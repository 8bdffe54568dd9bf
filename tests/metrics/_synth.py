"""Seeded synthetic anomaly maps and blob masks for the metric tests."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def blob_masks(n: int, h: int, w: int, seed: int, level: float = 1.6, normal_every: int = 4) -> torch.Tensor:
    """(n, h, w) bool masks made of smooth random blobs; every ``normal_every``-th image is all normal."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, h, w)), sigma=(0, h / 16, w / 16))
    noise /= noise.std(axis=(1, 2), keepdims=True)
    masks = noise > level
    masks[::normal_every] = False
    return torch.from_numpy(masks)


def smooth_maps(n: int, h: int, w: int, seed: int, masks: torch.Tensor | None = None, signal: float = 0.0):
    """(n, h, w) float32 smooth random maps, plus ``signal`` times a blurred copy of ``masks``."""
    rng = np.random.default_rng(seed + 1000)
    maps = ndimage.gaussian_filter(rng.standard_normal((n, h, w)), sigma=(0, 2, 2))
    if masks is not None and signal:
        maps = maps + signal * ndimage.gaussian_filter(masks.numpy().astype(np.float64), sigma=(0, 1.5, 1.5))
    return torch.from_numpy(maps.astype(np.float32))
