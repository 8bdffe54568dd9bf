"""Small file helpers shared by the weight and feature caches."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from adzoo.utils.io import atomic_replace


def default_cache_dir() -> Path:
    """Per-user cache folder: ``$ADZOO_CACHE_DIR`` if set (CI, shared disks), else ``~/.cache/adzoo``."""
    env = os.environ.get("ADZOO_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adzoo"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`~adzoo.utils.io.atomic_replace`: another run or DataLoader worker sees the old
    file or the complete new one. No fsync: readers verify a checksum, so a torn file is recomputed."""
    atomic_replace(path, lambda handle: torch.save(obj, handle), binary=True, fsync=False)


def tensors_digest(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> str:
    """Checksum of dtypes, shapes and bytes, so a corrupted or mismatched file is never used silently."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        # Reinterpreting as bytes works for every dtype (bfloat16 has no numpy equivalent).
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()
