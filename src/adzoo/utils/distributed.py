"""Small helpers for code that must give the same answer on one process and under DDP."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (just ``[obj]`` without DDP). Objects travel pickled, on the CPU."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor whose first dimension may differ between ranks."""
    if world_size() == 1:
        return tensor
    parts = gather_objects(tensor.detach().cpu())
    return torch.cat(parts).to(tensor.device)
