"""Small file helpers shared by the weight and feature caches."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def default_cache_dir() -> Path:
    """Per-user cache folder: ``$ADZOO_CACHE_DIR`` if set (CI, shared disks), else ``~/.cache/adzoo``."""
    env = os.environ.get("ADZOO_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adzoo"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``.

    A reader (another run, another DataLoader worker) therefore sees either the old file or the complete new
    one, never a half-written file. We do not fsync: readers verify a checksum, so a file torn by a power
    cut is detected and recomputed rather than trusted.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def tensors_digest(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> str:
    """Checksum of dtypes, shapes and bytes, so a corrupted or mismatched file is never used silently."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        # Reinterpreting as bytes works for every dtype (bfloat16 has no numpy equivalent).
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()
