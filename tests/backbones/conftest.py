"""Shared fixtures: keep every test off the network and out of the real user cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Converted weights and features go to a temp folder, never to ~/.cache/adzoo."""
    cache = tmp_path_factory.mktemp("adzoo_cache")
    monkeypatch.setenv("ADZOO_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
