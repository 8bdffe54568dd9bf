"""The console scripts, run as a user runs them: a sweep, resuming it, DDP on 2 CPU processes."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adzoo.metrics import image_metrics, pixel_metrics
from tests._tolerance import binary_bounds, pixel_bounds
from tests.cli._maps import SaveMaps, load_maps
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]  # the checkout: the runs import the test callback from tests/
CONF = ROOT / "conf"


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


def _run(
    args: list[str], tmp_path: Path, cache_dir: Path, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    cmd = _command(args, tmp_path)
    env = {**_env(cache_dir), **(env or {})}
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
    # the end-of-sweep table (what `make demo` prints) and each job's summary line carry bootstrap intervals
    table = first.stdout.split("I-AUROC", 1)[1]
    assert re.search(r"\| \d+(\.\d+)? \[\d+(\.\d+)?, \d+(\.\d+)?\]", table), first.stdout[-2000:]
    done = [line for line in first.stdout.splitlines() if " done: " in line]
    assert len(done) == 2 and all(re.search(r"\[\d+(\.\d+)?, \d+(\.\d+)?\]", line) for line in done), done
    written = {p: p.read_bytes() for p in sweep.glob("*/results.json")}
    again = _run(args, tmp_path, cache_dir)
    assert (again.stdout + again.stderr).count("skipping") == 2  # both runs were complete and skipped
    assert {p: p.read_bytes() for p in sweep.glob("*/results.json")} == written
    assert again.stdout.count(" done: ") == 2  # each job still reports its (kept) result


# Per-image outputs of two runs that batch differently agree to this, relative to the largest map value: float32
# rounds at ~6e-8 relative; the runs here differed by at most 3e-8 with maps up to 0.33 (two ulps), so 1e-5 leaves
# two orders of magnitude for other BLAS and CPUs, while a DDP fault (a rank's patches missing from the bank, an
# image scored by the wrong model) moves scores by 1e-2 or more.
DDP_RTOL = 1e-5


def _csv_scores(run_dir: Path) -> dict[str, tuple[str, int, float, float]]:
    rows = csv.DictReader(io.StringIO((run_dir / "predictions.csv").read_text()))
    out = {}
    for row in rows:
        assert row["path"] not in out, f"{row['path']} appears twice in predictions.csv"
        out[row["path"]] = (row["category"], int(row["label"]), float(row["pred_score"]), float(row["avgpool_score"]))
    return out


def _metrics_from_outputs(
    maps: dict[str, dict], scores: dict[str, tuple], category: str, fpr_limit: float, tol: float | None = None
) -> dict[str, tuple[float, float]]:
    """Per metric of one category, (low, high): the metric itself (low == high) for ``tol=None``, else the bounds
    that any outputs within ``tol`` of these ones satisfy (tests/_tolerance.py)."""
    paths = sorted(p for p, row in scores.items() if row[0] == category)
    labels = torch.tensor([scores[p][1] for p in paths])
    out: dict[str, tuple[float, float]] = {}
    for suffix, column in (("", 2), ("_avgpool", 3)):
        values = torch.tensor([scores[p][column] for p in paths], dtype=torch.float64)
        if tol is None:
            out.update({f"{k}{suffix}": (v, v) for k, v in image_metrics(values, labels).items()})
        else:
            out.update({f"image_{k}{suffix}": b for k, b in binary_bounds(values, labels, tol).items()})
    pixel = torch.stack([maps[p]["anomaly_map"] for p in paths]), torch.stack([maps[p]["mask"] for p in paths])
    if tol is None:
        out.update({k: (v, v) for k, v in pixel_metrics(*pixel, fpr_limit=fpr_limit).items()})
    else:
        out.update(pixel_bounds(*pixel, tol, fpr_limit=fpr_limit))
    return out


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path: Path, cache_dir: Path) -> None:
    """DDP on 2 CPU processes scores every test image once, as one process does, and so gives its metrics.

    The two runs compose their batches differently (each rank takes every other image, and runs with another
    thread count), so their anomaly maps agree to float32 rounding, not bit for bit, and an exact, counting
    metric moves when a near-tie flips: pixel AUROC once came out 0.4776609 against 0.4776633 on another
    machine. So the test asserts what DDP promises, with no tolerance that one machine's floating point tuned:

    * every test image is scored exactly once across the ranks, with the same label, mask and category;
    * each image's map and scores agree with the single process to ``DDP_RTOL`` of the largest map value
      (the maps are saved by a callback composed in from the command line, tests/cli/_maps.py);
    * each run's metrics are the exact metrics of its own saved outputs (to 1e-12, float64 summation order):
      gathering and merging the ranks' metric states loses and repeats nothing;
    * each DDP metric lies within the bounds that the tolerance allows around the single-process outputs
      (derived in tests/_tolerance.py, checked in tests/metrics/test_tolerance_bounds.py), and those bounds are
      narrow on this data, so the comparison still catches a real difference.
    """
    common = [
        "data.categories=[fabric,pill]",
        f"+callbacks.save_maps._target_={SaveMaps.__module__}.{SaveMaps.__name__}",
    ]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    _run([*common, "hydra.run.dir=" + str(tmp_path / "single")], tmp_path, cache_dir, env=env)
    _run([*common, "trainer=ddp_cpu", "hydra.run.dir=" + str(tmp_path / "ddp")], tmp_path, cache_dir, env=env)
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("single", "ddp")}
    assert results["ddp"]["device"]["world_size"] == 2
    assert results["ddp"]["data"]["test_images"] == results["single"]["data"]["test_images"]
    maps = {name: load_maps(tmp_path / name) for name in ("single", "ddp")}  # refuses an image saved twice
    scores = {name: _csv_scores(tmp_path / name) for name in ("single", "ddp")}
    assert len(maps["ddp"]) == results["single"]["data"]["test_images"]
    assert maps["ddp"].keys() == maps["single"].keys() == scores["ddp"].keys() == scores["single"].keys()

    tol = DDP_RTOL * max(float(image["anomaly_map"].abs().max()) for image in maps["single"].values())
    for path, one in maps["single"].items():
        two = maps["ddp"][path]
        assert (two["category"], two["label"]) == (one["category"], one["label"]), path
        assert torch.equal(two["mask"], one["mask"]), path
        gap = float((two["anomaly_map"].double() - one["anomaly_map"].double()).abs().max())
        assert gap <= tol, f"{path}: maps differ by {gap:.3g} > {tol:.3g}"
        (_, label, score, pooled), (_, label2, score2, pooled2) = scores["single"][path], scores["ddp"][path]
        assert label2 == label and abs(score2 - score) <= tol and abs(pooled2 - pooled) <= tol, path
        for name in ("single", "ddp"):  # the saved outputs are the ones the metric callback scored
            assert float(maps[name][path]["pred_score"]) == scores[name][path][2], (name, path)

    fpr_limit = results["single"]["metrics"]["conventions"]["fpr_limit"]
    categories = sorted(results["single"]["metrics"]["per_category"])
    bounds = {}
    for category in categories:
        for name in ("single", "ddp"):
            every = results[name]["metrics"]["per_category"][category]
            reported = {k: v for k, v in every.items() if not k.endswith("_thr")}  # threshold-free metrics
            own = _metrics_from_outputs(maps[name], scores[name], category, fpr_limit)
            assert own.keys() == reported.keys()
            for key, (value, _) in own.items():
                assert reported[key] == pytest.approx(value, abs=1e-12), (name, category, key)
        bounds[category] = _metrics_from_outputs(maps["single"], scores["single"], category, fpr_limit, tol)
        for key, (low, high) in bounds[category].items():
            got = results["ddp"]["metrics"]["per_category"][category][key]
            assert low - 1e-12 <= got <= high + 1e-12, f"{category} {key}: DDP {got} outside [{low}, {high}]"
            assert high - low <= 1e-2, f"{category} {key}: bounds [{low}, {high}] too wide to tell runs apart"
    # the decision: both fitted on the same validation images, whose scores agree to the same tolerance
    decided = [results[n]["thresholds"]["models"]["unified"]["image_threshold"] for n in ("single", "ddp")]
    assert abs(decided[0] - decided[1]) <= tol
    for key, got in results["ddp"]["metrics"]["mean"].items():
        if key.endswith("_thr"):
            continue
        low = sum(bounds[c][key][0] for c in categories) / len(categories)
        high = sum(bounds[c][key][1] for c in categories) / len(categories)
        assert low - 1e-12 <= got <= high + 1e-12, f"mean {key}: DDP {got} outside [{low}, {high}]"


def test_help_lists_the_config_groups(tmp_path: Path) -> None:
    proc = subprocess.run([str(BIN / "adzoo-train"), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    for group in ("method", "data", "backbone", "trainer", "logger"):
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert options and all(option in lines[f"{group}="] for option in options), (group, lines.get(f"{group}="))


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
    assert row["method"] == "patchknn" and row["seeds"] == "2 (0, 1)"
    assert "[" in row["I-AUROC"] and " sd " in row["I-AUROC"]  # interval and seed sd, as in leaderboard.md
    assert "[adzoo]" in proc.stdout
