"""Read an offline wandb run file (``run-<id>.wandb``) back, so tests and tools can check what was logged.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, 2 magic bytes, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32c, little-endian length, type FULL/FIRST/MIDDLE/LAST) and a slice of
a protobuf ``Record``. wandb ≥ 0.2x no longer ships a Python reader, hence this small one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a wandb run file (expected the ':W&B' header)")
    offset, pending = _HEADER, b""
    while offset + _HEADER <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _HEADER:  # block trailer padding
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + _HEADER])
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:
            continue
        else:
            raise ValueError(f"{path}: corrupt record at byte {offset}")


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """Return ``{"history": [ {key: value} per step ], "summary": {...}, "config": {...}}`` of a run file."""
    from wandb.proto import wandb_internal_pb2

    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for payload in _payloads(Path(path)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"history": history, "summary": summary, "config": config}
