"""Float32 islands inside mixed precision: the parts whose result is a number we report or optimise.

Under ``trainer.precision=bf16-mixed`` (or ``16-mixed``) autocast runs matmuls and convolutions in 16 bits. That
is the point for the transformer and the backbone, but a loss summed over thousands of elements, a Gaussian
log-density, or an anomaly map that AUROC/AUPRO rank pixel by pixel would lose digits that matter: bf16 keeps
8 significant bits, so two pixel scores within 0.4 % tie. :func:`full_precision` marks such a function: its
floating tensor arguments are cast to float32 and autocast is off inside it. Without autocast and on float32
inputs it changes nothing, so the fp32 computations checked against the official code are untouched.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

Fn = TypeVar("Fn", bound=Callable[..., Any])


def _float32(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float64 else value
    if type(value) in (list, tuple) and value and all(isinstance(v, Tensor) for v in value):
        return type(value)(_float32(v) for v in value)  # named tuples (structured outputs) pass as they are
    return value


def _device_type(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value.device.type
        if isinstance(value, list | tuple) and value and isinstance(value[0], Tensor):
            return value[0].device.type
    return None


def full_precision(fn: Fn) -> Fn:
    """Run ``fn`` with autocast off and its floating tensor arguments (or lists of them) in float32.

    float64 arguments stay float64 (the densities evaluate in it). Outputs are whatever ``fn`` computes from
    float32 inputs, so float32 for every use in the zoo."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = _device_type(args, kwargs)
        autocast_on = device is not None and torch.is_autocast_enabled(device)
        with torch.autocast(device_type=device, enabled=False) if autocast_on else contextlib.nullcontext():
            return fn(*(_float32(a) for a in args), **{k: _float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


#: ``F.mse_loss`` in float32: the reconstruction objectives (UniAD §3.3, Transformaly eq. 1)
mse_loss = full_precision(F.mse_loss)


@full_precision
def residual(features: Tensor, rebuilt: Tensor) -> Tensor:
    """``features - rebuilt`` in float32: a 16-bit difference of two close tensors keeps few significant bits."""
    return features - rebuilt
