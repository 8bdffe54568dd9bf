"""Config mistakes through the real ``adzoo-train`` entry point: one line naming the key, status 2, no traceback.

Each case runs the console script in a subprocess (the user's path: Hydra composition, the wrapper, the engine),
on the tiniest generated set, so a mistake only found once the data is indexed is covered too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adzoo.errors import USAGE_EXIT
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
TRAIN = str(Path(sys.executable).parent / "adzoo-train")
ONE_CATEGORY = [
    "backbone=test_efficientnet",
    *TINY_DATA,
    "data.categories=[fabric]",
    "trainer.enable_progress_bar=false",
]


def _train(tmp_path: Path, cache_dir: Path, *args: str, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADZOO_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    cmd = [TRAIN, f"paths.log_dir={tmp_path / 'logs'}", *ONE_CATEGORY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)


CASES = {
    "unknown method": (["method=nosuch"], ["method=nosuch", "patchknn", "uniad"]),
    "negative image size": (["data.image_size=-64"], ["data.image_size=-64", "positive"]),
    "image size off the token grid": (
        ["method=uniad", "data.image_size=72"],
        ["data.image_size=72", "multiple of model.feature_stride=16"],
    ),
    "unknown key": (["model.nosuch=1"], ["model.nosuch"]),
    "cap k larger than the bank": (["method=cap", "model.k=5"], ["model.k=5", "memory bank of 5"]),
    "patchknn k larger than the bank": (["model.k=100000"], ["model.k=100000", "memory bank"]),
    "uniad mask larger than the grid": (
        ["method=uniad", "data.image_size=32", "model.neighbour_mask_size=5"],
        ["model.neighbour_mask_size=5"],
    ),
    "logger writing outside the run": (["logger.csv.save_dir=/tmp/elsewhere"], ["logger.csv.save_dir", "outside"]),
    "logger name escaping the run": (["logger.csv.name=../../.."], ["logger.csv.name", "outside"]),
    "training forever": (["trainer.max_epochs=-1"], ["trainer.max_epochs=-1", "trainer.max_steps"]),
    "fast_dev_run": (["+trainer.fast_dev_run=true"], ["trainer.fast_dev_run", "limit_train_batches"]),
    "a ViT patch that does not divide the input": (
        ["method=transformaly", "backbone=test_vit", "data.image_size=40"],
        ["data.image_size=40", "patch size 16", "32 or 48"],
    ),
    "a checkpoint that is not there": (["ckpt_path=/nonexistent/last.ckpt"], ["ckpt_path", "not found"]),
    "a file where the log folder goes": (["paths.log_dir={tmp}/blocker/logs"], ["cannot create folder", "blocker"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_mistake_is_one_line_naming_the_key(case: str, tmp_path: Path, cache_dir: Path) -> None:
    args, expected = CASES[case]
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = _train(tmp_path, cache_dir, *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == USAGE_EXIT, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("adzoo-train: error: ")
    for fragment in expected:
        assert fragment in last
    assert not list((tmp_path / "logs").rglob("results.json"))
    assert proc.stderr.count(last[len("adzoo-train: error: ") :]) == 1  # said once, not three times


def test_full_error_shows_the_traceback(tmp_path: Path, cache_dir: Path) -> None:
    proc = _train(tmp_path, cache_dir, "data.image_size=-64", full_error=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError: data.image_size=-64" in proc.stderr
