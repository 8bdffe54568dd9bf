"""Dropout whose random mask is cheap on the CPU.

PyTorch's CPU dropout draws one Mersenne-Twister number per element (``bernoulli_``), single-threaded.
In the reconstruction transformer that made dropout about a third of a CPU training step (more than all
matmuls together; ``bench/bench_reconstruction_step.py``). Here each 64-bit draw is split into four 16-bit
uniforms, which cuts the generator work four-fold. The result is the same random function: every element
is kept independently with probability 1 - p and scaled by 1 / (1 - p). Only p is rounded to a multiple of
2⁻¹⁶ (a drop rate of 0.1 becomes 0.100006). On other devices the fused kernel of ``F.dropout`` is already
fast and is used as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # the 16-bit uniforms take this many values


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """Boolean mask, True = keep, each element independently with probability 1 - p (p in steps of 2⁻¹⁶)."""
    numel = 1
    for side in shape:
        numel *= int(side)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None)  # every bit uniform: the full int64 range
    uniforms = words.view(torch.int16)[:numel].view(shape)  # four independent 16-bit draws per word
    threshold = round(p * _LEVELS) - _LEVELS // 2  # int16 runs from -2¹⁵; P(u < threshold) = p
    return uniforms >= threshold


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)`` in distribution; the CPU path draws 16-bit uniforms (module docstring)."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, training=True)
    scale = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p): one product
    return x * scale


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the cheap CPU mask of :func:`dropout`; same attribute, same (empty) state dict."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
