"""Atomic writes: a failure mid-write leaves the previous file intact and no temp file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from adzoo.utils.io import atomic_write_json, atomic_write_text, read_json


class _Boom:
    def __str__(self) -> str:
        raise RuntimeError("serialisation failed")


def test_round_trip_and_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.json"
    atomic_write_json(path, {"status": "complete", "x": 1.5})
    assert read_json(path) == {"status": "complete", "x": 1.5}
    with pytest.raises(RuntimeError):
        atomic_write_json(path, {"bad": _Boom()})
    assert read_json(path)["x"] == 1.5
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_text(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "hello\n")
    assert (tmp_path / "a.txt").read_text() == "hello\n"
