"""The console scripts, run as a user runs them: a sweep, resuming it, DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "ADZOO_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}


def _command(args: list[str], tmp_path: Path) -> list[str]:
    flags = [a for a in args if a.startswith("-")]
    args = [a for a in args if not a.startswith("-")]
    return [
        str(BIN / "adzoo-train"),
        *flags,
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY_DATA,
        "backbone=test_efficientnet",
        "trainer.enable_progress_bar=false",
        *args,
    ]


def _run(args: list[str], tmp_path: Path, cache_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = _command(args, tmp_path)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache_dir), cwd=tmp_path, timeout=timeout)
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
    written = {p: p.read_bytes() for p in sweep.glob("*/results.json")}
    again = _run(args, tmp_path, cache_dir)
    assert (again.stdout + again.stderr).count("skipping") == 2  # both runs were complete and skipped
    assert {p: p.read_bytes() for p in sweep.glob("*/results.json")} == written
    assert again.stdout.count(" done: ") == 2  # each job still reports its (kept) result


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


# The demo sweep's first three methods at toy size (UniAD/ADTR need method-specific sizes for a 32² input).
TINY_DEMO = [
    "sweep=demo",
    "experiment=demo,demo_cap,demo_transformaly",
    "data.categories=[fabric,pill]",
    "trainer.max_epochs=2",
    "print_table=false",
]


def _results(sweep: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sweep.glob("*/results.json")}


def test_sigkilled_sweep_loses_nothing_and_the_rerun_finishes_the_rest(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "logs" / "sweeps" / "demo"
    proc = subprocess.Popen(
        _command(TINY_DEMO, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(cache_dir),
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while not _results(sweep):  # kill the whole process group as soon as the first job has finished
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no job finished in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _results(sweep)
    assert 1 <= len(before) < 3, f"the kill should land mid-sweep, found {sorted(before)}"
    for payload in before.values():
        assert json.loads(payload)["status"] == "complete"  # atomic: whole or absent, never half-written
    assert not (sweep / "leaderboard.md").exists()

    rerun = _run(TINY_DEMO, tmp_path, cache_dir)
    after = _results(sweep)
    assert len(after) == 3 and sorted(json.loads(p)["method"] for p in after.values()) == [
        "cap",
        "patchknn",
        "transformaly",
    ]
    for name, payload in before.items():
        assert after[name] == payload  # finished work is kept byte for byte, not recomputed
    assert (rerun.stdout + rerun.stderr).count("skipping") == len(before)
    assert rerun.stdout.count(" done: ") == 3  # one summary line per job
    assert "| transformaly | demo |" in rerun.stdout  # the sweep ends with its leaderboard
    assert (sweep / "leaderboard.md").is_file() and (sweep / "leaderboard.html").is_file()


def test_joblib_sweep_with_wandb_logs_every_job_and_the_leaderboard_table(tmp_path: Path, cache_dir: Path) -> None:
    from adzoo.utils.wandb_offline import read_offline_run

    args = ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=wandb", "print_table=false",
            "data.categories=[fabric]", "sweep_name=pair"]  # fmt: skip
    proc = _run(args, tmp_path, cache_dir)
    sweep = tmp_path / "logs" / "sweeps" / "pair"
    runs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(runs) == 2 and {json.loads((r / "results.json").read_text())["seed"] for r in runs} == {0, 1}
    for run in runs:  # one wandb run per job, with that job's metrics
        (run_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
        summary = read_offline_run(run_file)["summary"]
        assert "test/fabric/image_auroc" in summary
    (board_file,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    logged = read_offline_run(board_file)
    assert logged["summary"]["leaderboard/_type"] == "table-file"
    assert logged["summary"]["leaderboard/nrows"] == 1  # two seeds aggregate into one row
    (table_file,) = board_file.parent.glob("files/media/table/leaderboard_*.table.json")
    table = json.loads(table_file.read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["method"] == "patchknn" and row["seeds"] == "0,1"
    assert "± " in row["I-AUROC"]  # mean ± std over the two seeds, as in leaderboard.md
    assert "[adzoo]" in proc.stdout
