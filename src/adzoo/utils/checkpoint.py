"""Checkpoints that are whole or absent: atomic writes, a free-space check up front, a readable-or-refused load.

A full disk in the middle of ``torch.save`` used to leave a truncated ``last.ckpt`` in place of the good one, and
the rerun with ``ckpt_path=last`` then crashed inside ``torch.load``. Writing to a temporary file in the same
folder and renaming it over the target keeps the previous checkpoint until the new one is complete.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from adzoo.errors import ConfigError, OutputFolderError
from adzoo.utils.io import atomic_replace

#: head room on top of the checkpoint estimate: optimiser moments, logs, results, maps
FREE_SPACE_MARGIN = 64 << 20


class CorruptCheckpointError(ConfigError):
    """A checkpoint file that cannot be loaded (truncated, not a checkpoint): named in one line."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, through a temporary file and a rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        try:
            atomic_replace(Path(path), lambda handle: torch.save(checkpoint, handle), binary=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputFolderError(f"disk full while writing checkpoint {path}; the previous one is kept") from exc
            raise


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's state dict: what one checkpoint holds, before optimiser state."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values() if isinstance(t, torch.Tensor))


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start when the folder's disk cannot hold ``needed`` bytes plus a margin (where it can be told)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed + FREE_SPACE_MARGIN:
        raise OutputFolderError(
            f"not enough free disk space in {folder}: {free / 2**20:.0f} MiB free, {what} needs about "
            f"{(needed + FREE_SPACE_MARGIN) / 2**20:.0f} MiB; free some space or set paths.log_dir"
        )


def load_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a one-line error naming the file when it is truncated or foreign."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(f"{key}: checkpoint {path} not found") from exc
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(
            f"{key}: checkpoint {path} is truncated or not a checkpoint ({reason}); delete it to start over or "
            "point to another"
        ) from exc
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CorruptCheckpointError(f"{key}: {path} holds no 'state_dict' (expected a checkpoint written by adzoo)")
    return state
