"""Small tensor helpers shared by the metric back-ends: input checks and fast device-aware primitives.

The per-pixel passes (min/max, masking, sorting, selection) dominate the cost of every metric. On the
CPU, numpy's SIMD kernels run these several times faster than torch's (e.g. a 2 M-element boolean mask
~10x, a value sort ~4x on this project's 2-core machines), so CPU tensors go through numpy, zero-copy;
tensors on an accelerator use torch, so nothing leaves the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def as_scores(x: Tensor) -> Tensor:
    """Scores as a floating tensor, unchanged in value: no sigmoid, no clipping, ever.

    Half precision is widened to float32 (exact); integers and booleans go to float64, which is exact
    below 2**53, so integer-valued scores keep their ties and their order.
    """
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    if not x.is_floating_point():
        return x.to(torch.float64)
    return x


def as_bool(x: Tensor) -> Tensor:
    """Binary labels as bool: a bool tensor as is, otherwise ``x > 0.5`` (so {0,1}, {0,255} and
    interpolated float masks all mean what one expects)."""
    x = x.detach()
    return x if x.dtype == torch.bool else x > 0.5


def as_bhw(x: Tensor, name: str) -> Tensor:
    """View a batch of maps as (B, H, W); accepts (B, 1, H, W) and a single (H, W) map."""
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 2:
        return x[None]
    if x.dim() != 3:
        raise ValueError(f"{name} must be (B, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
    return x


def finite_minmax(x: Tensor, name: str = "scores") -> tuple[float, float]:
    """(min, max) of a non-empty tensor, rejecting NaN/inf: they have no place on a threshold axis.

    One pass does both jobs: NaN propagates into min/max and an infinity shows up as one of them.
    """
    if x.device.type == "cpu":
        a = x.numpy()
        lo, hi = float(a.min()), float(a.max())
    else:
        lo, hi = (float(v) for v in torch.stack(torch.aminmax(x)).tolist())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return lo, hi


def split_by_mask(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(x[mask], x[~mask])`` for a bool ``mask`` of x's shape on x's device."""
    if x.device.type == "cpu":
        a, m = x.numpy(), mask.numpy()
        return torch.from_numpy(a[m]), torch.from_numpy(a[~m])
    return x[mask], x[~mask]


def sort_values(x: Tensor) -> Tensor:
    """Ascending sort of a 1-D tensor's values (no indices), on the tensor's device."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.contiguous().numpy()))
    return torch.sort(x).values


def concat(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    """Concatenate 1-D tensors into ``dtype`` on their accelerator if any of them is on one, else on the
    CPU (merged states arrive on the CPU); an empty list gives an empty CPU tensor."""
    if not parts:
        return torch.empty(0, dtype=dtype)
    device = next((p.device for p in parts if p.device.type != "cpu"), torch.device("cpu"))
    parts = [p.to(device) for p in parts]
    if device.type == "cpu":
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        return torch.from_numpy(np.concatenate([p.numpy() for p in parts]).astype(np_dtype, copy=False))
    return torch.cat([p.to(dtype) for p in parts])
