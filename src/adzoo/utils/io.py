"""Atomic writes (a finished result is either fully on disk or not there at all) and file content hashes."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_replace(
    path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = False, fsync: bool = True
) -> Path:
    """Write through ``write(handle)`` into a temporary file beside ``path``, fsync, then rename it over ``path``.

    A reader sees the old file or the whole new one, never a torn one. The file gets the mode a plain ``open``
    would give (0666 less the umask), not ``mkstemp``'s private 0600. ``fsync=False`` suits caches whose readers
    verify a checksum: a file torn by a power cut is detected and recomputed there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_replace(path, lambda handle: handle.write(text))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


class RunLockedError(RuntimeError):
    """Another process is writing into the same run folder."""


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.adzoo.lock`` so two sweeps never write one run folder at once."""
    import fcntl

    path = Path(folder) / ".adzoo.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise RunLockedError(
                f"run folder {folder} is in use by {owner}; wait for it, or point this run elsewhere "
                "(paths.log_dir=... or hydra.run.dir=...)"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=1 << 16)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """Content hash of one file, remembered per (path, size, mtime) so a sweep reads each file once."""
    stat = Path(path).stat()
    return _cached_digest(os.fspath(path), stat.st_size, stat.st_mtime_ns)
