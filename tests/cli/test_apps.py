"""The console scripts, run as a user runs them: a sweep, resuming it, DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _run(args: list[str], tmp_path: Path, cache_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADZOO_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    flags = [a for a in args if a.startswith("-")]
    args = [a for a in args if not a.startswith("-")]
    cmd = [
        str(BIN / "adzoo-train"),
        *flags,
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY_DATA,
        "backbone=test_efficientnet",
        "trainer.enable_progress_bar=false",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_sweep_over_settings_and_resume(tmp_path: Path, cache_dir: Path) -> None:
    args = ["-m", "data.setting=unified,separate", "method=patchknn", "data.categories=[fabric,pill]"]
    first = _run(args, tmp_path, cache_dir)
    sweep = tmp_path / "logs" / "sweeps" / "adhoc"
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert sorted(r["setting"] for r in results) == ["separate", "unified"]
    for r in results:
        assert set(r["metrics"]["per_category"]) == {"fabric", "pill"}
    assert "I-AUROC" in first.stdout
    again = _run(args, tmp_path, cache_dir)
    assert again.stdout.count("I-AUROC") == 0  # both runs were complete and skipped
    assert "skipping" in again.stdout + again.stderr


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path: Path, cache_dir: Path) -> None:
    common = ["data.categories=[fabric,pill]"]
    _run([*common, "hydra.run.dir=" + str(tmp_path / "single")], tmp_path, cache_dir)
    _run([*common, "trainer=ddp_cpu", "hydra.run.dir=" + str(tmp_path / "ddp")], tmp_path, cache_dir)
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["device"]["world_size"] == 2
    assert ddp["data"]["test_images"] == single["data"]["test_images"]
    for category, metrics in single["metrics"]["per_category"].items():
        for key, value in metrics.items():
            assert ddp["metrics"]["per_category"][category][key] == pytest.approx(value, abs=1e-6), key


def test_help_lists_the_config_groups(tmp_path: Path) -> None:
    proc = subprocess.run([str(BIN / "adzoo-train"), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for group in ("method", "data", "backbone", "trainer", "logger"):
        assert f"{group}:" in proc.stdout
