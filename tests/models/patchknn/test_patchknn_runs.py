"""patchcore and the bank options through real Hydra composition and the real Trainer on the tiny generated set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from adzoo.engine import run
from adzoo.models.components import BankTooLargeError
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
TINY = ["backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric,pill]", "trainer.enable_progress_bar=false"]


def test_patchcore_keeps_its_coreset_and_eval_reproduces_an_hnsw_run(compose_cfg, tmp_path: Path) -> None:
    overrides = ["method=patchcore", *TINY, "bank.search=hnsw", "bank.storage=float16"]
    trained = run(compose_cfg(*overrides))
    (group,) = trained["timing"]["per_group"]
    report = group["memory_bank"]
    assert report["size"] == math.ceil(0.1 * report["vectors_seen"]) and report["storage"] == "float16"
    assert report["peak_bytes"] > 0 and report["coreset_seconds"] >= 0
    assert trained["config"]["model"]["bank"]["coreset_ratio"] == 0.1 and trained["method"] == "patchcore"
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["state_dict"]["model.memory_bank.features"].dtype == torch.float16
    assert state["state_dict"]["model.memory_bank.index_blob"].numel() > 0  # the HNSW graph travels with it
    evaluated = run(
        compose_cfg(*overrides, f"ckpt_path={tmp_path / 'run'}", config_name="eval", run_dir=tmp_path / "eval"),
        evaluate_only=True,
    )
    # bitwise: the same fp16 vectors and the same deserialised graph, searched by the same faiss
    assert evaluated["metrics"]["per_category"] == trained["metrics"]["per_category"]


def test_a_bank_too_large_for_memory_stops_at_the_first_batch(compose_cfg) -> None:
    with pytest.raises(BankTooLargeError, match=r"needs an estimated .* GiB, but 0\.00 GiB is bank\.max_memory_gb"):
        run(compose_cfg("method=patchknn", *TINY, "bank.max_memory_gb=1e-6"))


def test_bank_options_are_checked_before_anything_runs(compose_cfg) -> None:
    from adzoo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"bank\.coreset_ratio=1\.5 must be in \(0, 1\]"):
        run(compose_cfg("method=patchcore", *TINY, "bank.coreset_ratio=1.5"))
    with pytest.raises(ConfigError, match=r"bank\.max_size=100000 is above the number of vectors"):
        run(compose_cfg("method=patchcore", *TINY, "bank.max_size=100000"))
