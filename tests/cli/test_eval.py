"""``adzoo-eval`` through its console script: the run's own config, its own folder, and no code from a run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adzoo.errors import USAGE_EXIT
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _app(name: str, tmp_path: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADZOO_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [str(BIN / name), f"paths.log_dir={tmp_path / 'logs'}", "trainer.enable_progress_bar=false", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_eval_reads_the_run_and_writes_only_its_own_folder(tmp_path: Path, cache_dir: Path) -> None:
    train = _app("adzoo-train", tmp_path, cache_dir, "backbone=test_efficientnet", *TINY_DATA,
                 "data.categories=[fabric,pill]")  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    run_dir = (tmp_path / "logs" / "runs" / "latest").resolve()
    trained = (run_dir / "results.json").read_bytes()

    # No training override repeated: backbone, sizes and categories come from the run's results.json.
    proc = _app("adzoo-eval", tmp_path, cache_dir, "ckpt_path=logs/runs/latest", "data.categories=[pill]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (evaluated,) = (p for p in (tmp_path / "logs" / "evals").glob("*/results.json") if not p.parent.is_symlink())
    assert (tmp_path / "logs" / "evals" / "latest").resolve() == evaluated.parent
    result = json.loads(evaluated.read_text())
    assert result["task"] == "eval" and list(result["metrics"]["per_category"]) == ["pill"]
    assert result["config"]["backbone"]["name"] == "test_efficientnet" and result["data"]["image_size"] == 32
    assert result["source"]["run_dir"] == str(run_dir)
    pill = json.loads(trained)["metrics"]["per_category"]["pill"]
    assert result["metrics"]["per_category"]["pill"] == pill  # same process, same batches: bitwise
    assert (run_dir / "results.json").read_bytes() == trained


def test_a_hostile_run_folder_runs_no_code_in_eval(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "received"
    run_dir.mkdir()
    marker = tmp_path / "PWNED"
    config = {"method_name": "patchknn", "seed": 0, "data": {"name": "x"},
              "model": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps({"status": "complete", "task": "train", "config": config}))
    proc = _app("adzoo-eval", tmp_path, cache_dir, f"ckpt_path={run_dir}")
    assert proc.returncode == USAGE_EXIT, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("adzoo-eval: error: ") and "os.system" in last and "results.json" in last
    assert not marker.exists()
    assert not list((tmp_path / "logs").rglob("results.json"))
    assert not list((tmp_path / "logs" / "evals").glob("unresolved-*"))  # no empty folder left behind
