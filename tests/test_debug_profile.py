"""``trainer=debug`` runs every method end to end through the real engine, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adzoo.engine import run
from tests.conftest import TINY_DATA, TINY_METHOD


@pytest.mark.parametrize("method", ["patchknn", "patchcore", "cap", "uniad", "adtr", "transformaly"])
def test_debug_profile_finishes(method: str, compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*TINY_DATA, f"method={method}", *TINY_METHOD[method], "trainer=debug", "data.categories=[fabric]")
    assert cfg.trainer.limit_train_batches == 2 and cfg.trainer.max_steps == 2
    results = run(cfg)
    assert results is not None and results["status"] == "complete"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"]["trainer"]["limit_test_batches"] == 2
