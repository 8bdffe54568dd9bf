"""A real tiny ``adzoo-train`` as a user runs it (stdout a pipe, not a terminal): one line per real event."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_DATA

BIN = Path(sys.executable).parent
NOISE = (
    "LitLogger", "GPU available", "TPU available", "HPU available", "configure_optimizers` returned `None`",
    "isinstance(treespec, LeafSpec)", "swigfaiss_avx2", "faiss.loader", "log_every_n_steps", "v_num",
    "Seed set to", "weights_only",
)  # fmt: skip


def _train(tmp_path: Path, cache_dir: Path, *extra: str) -> str:
    cmd = [
        str(BIN / "adzoo-train"), f"paths.log_dir={tmp_path / 'logs'}", *TINY_DATA, "backbone=test_efficientnet",
        "method=patchknn", "data.categories=[fabric]", "torch_threads=1", *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(ADZOO_CACHE_DIR=str(cache_dir), WANDB_MODE="offline")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.integration
def test_quiet_run_prints_events_only_and_verbose_brings_the_rest_back(tmp_path: Path, cache_dir: Path) -> None:
    out = _train(tmp_path, cache_dir)
    assert [n for n in NOISE if n in out] == [], out
    assert "\r" not in out  # no progress bar redraws in a log file
    assert re.search(r"^epoch 1/1: \d+ batch", out, re.M), out
    assert re.search(r"^test: \d+ batch", out, re.M), out
    assert "I-AUROC" in out and " done: " in out
    loud = _train(tmp_path, cache_dir, "verbose=true", "force=true")
    assert {"GPU available", "configure_optimizers` returned `None`"} <= {n for n in NOISE if n in loud}, loud
