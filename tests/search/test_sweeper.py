"""``adzoo-train hparams_search=...`` as a user runs it: trials see validation data only, a kill resumes, and
mistakes are refused before any trial."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adzoo.data import generated_source

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TINY = ["data.image_size=32", "data.batch_size=8", "data.eval_batch_size=8", "backbone=test_efficientnet",
        "data.categories=[fabric,pill,screw]", "trainer.enable_progress_bar=false", "print_table=false"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny generated set, as an MVTec-layout folder a test may change."""
    source = generated_source(tmp_path_factory.mktemp("gen"), image_size=32, n_train=10, n_test_good=2,
                              n_test_per_defect=1)  # fmt: skip
    return Path(source.root)


def _command(log_dir: Path, root: Path, *args: str) -> list[str]:
    return [str(BIN / "adzoo-train"), "hparams_search=patchknn", "data=mvtec", f"data.root={root}",
            f"paths.log_dir={log_dir}", *TINY, *args]  # fmt: skip


def _env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "ADZOO_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}


def _search(log_dir: Path, root: Path, cache_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(log_dir, root, *args), capture_output=True, text=True, env=_env(cache_dir),
                          cwd=log_dir.parent, timeout=600)  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _history(sweep: Path) -> list[tuple[int, dict, float]]:
    summary = json.loads((sweep / "search.json").read_text())
    return [(t["number"], t["params"], t["value"]) for t in summary["trials"]]


def _corrupt_test_labels(root: Path) -> None:
    """Swap every test/good image with a defect image (both change label) and invert every ground-truth mask."""
    from PIL import Image, ImageOps

    for category in sorted(p for p in root.iterdir() if p.is_dir()):
        goods = sorted((category / "test" / "good").glob("*.png"))
        defects = sorted(p for d in (category / "test").iterdir() if d.name != "good" for p in d.glob("*.png"))
        for good, bad in zip(goods, defects):
            held = good.read_bytes()
            good.write_bytes(bad.read_bytes())
            bad.write_bytes(held)
        for mask in (category / "ground_truth").rglob("*.png"):
            ImageOps.invert(Image.open(mask).convert("L")).save(mask)


def test_trials_read_only_validation_data(tmp_path: Path, cache_dir: Path, tiny_tree: Path) -> None:
    clean, corrupted = tmp_path / "clean", tmp_path / "corrupted"
    shutil.copytree(tiny_tree, clean)
    shutil.copytree(tiny_tree, corrupted)
    _corrupt_test_labels(corrupted)
    runs = {}
    for name, root in (("clean", clean), ("corrupted", corrupted)):
        proc = _search(tmp_path / f"logs-{name}", root, cache_dir, "hydra.sweeper.n_trials=3")
        runs[name] = (tmp_path / f"logs-{name}" / "sweeps" / "search_patchknn", proc)
    (sweep_a, proc_a), (sweep_b, _) = runs["clean"], runs["corrupted"]
    history = _history(sweep_a)
    assert len(history) == 3 and all(v is not None for _, _, v in history)
    assert history == _history(sweep_b)  # bit for bit: no trial saw a test label, mask or image
    trials = [json.loads(p.read_text()) for p in sweep_a.glob("*/results.json")]
    trials = [t for t in trials if t["task"] == "search_trial"]
    assert len(trials) == 3
    for trial in trials:
        assert trial["data"]["test_images"] is None and trial["data"]["test_withheld"]
        assert trial["metrics"]["per_category"] == {}  # no test metric at all
        assert trial["search"]["value"] == trial["validation"]["mean"]["image_auroc"]
    # the test runs did read the test split, so the corruption shows there (and only there)
    summary = json.loads((sweep_a / "search.json").read_text())
    tested_a = [json.loads((Path(p) / "results.json").read_text()) for p in summary["test_runs"]]
    summary_b = json.loads((sweep_b / "search.json").read_text())
    tested_b = [json.loads((Path(p) / "results.json").read_text()) for p in summary_b["test_runs"]]
    assert len(tested_a) == len(tested_b) == 2  # the best config, then the untuned one (compare_default)
    for a, b in zip(tested_a, tested_b):
        assert a["task"] == "train" and a["config"]["model"] == b["config"]["model"]
        assert a["metrics"]["mean"]["image_auroc"] != b["metrics"]["mean"]["image_auroc"]
    tuned, default = tested_a
    assert tuned["search"]["tuned"]["trials"] == 3 and "search" not in default
    assert tuned["search"]["tuned"]["best_value"] == summary["best"]["value"]
    # the leaderboard shows the tested rows only, one tagged, with the search's plots on the page
    markdown = (sweep_a / "leaderboard.md").read_text()
    main = markdown.split("Columns:")[0]
    rows = [line for line in main.splitlines() if line.startswith("| patchknn |")]
    assert len(rows) == 2 and sum("tuned on validation (3 trials)" in r for r in rows) == 1, rows
    assert "## Hyper-parameter search search_patchknn" in markdown
    page = (sweep_a / "leaderboard.html").read_text()
    assert page.count('alt="search_patchknn_history"') == 1 and 'alt="search_patchknn_importances"' in page
    assert "GFLOPs/img" in markdown and "peak GiB" in markdown
    assert proc_a.stdout.count("search trial, val_image_auroc") == 3  # one summary line per trial


def _counted_trials(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as connection:
            return connection.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_search_resumes_with_the_remaining_trial_only(
    tmp_path: Path, cache_dir: Path, tiny_tree: Path
) -> None:
    log_dir = tmp_path / "logs"
    sweep = log_dir / "sweeps" / "search_patchknn"
    db = sweep / "optuna.db"
    proc = subprocess.Popen(_command(log_dir, tiny_tree, "hydra.sweeper.n_trials=3"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env(cache_dir), cwd=tmp_path,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while _counted_trials(db) < 2:
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "two trials did not finish in time"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _counted_trials(db) == 2, "the kill should land before the third trial finishes"
    before = {p.parent.name: p.read_bytes() for p in sweep.glob("*/results.json")}

    rerun = _search(log_dir, tiny_tree, cache_dir, "hydra.sweeper.n_trials=3")
    log = rerun.stdout + rerun.stderr
    assert "2 of 3 trials done" in log
    assert log.count("search: trial ") - log.count("was interrupted") == 1, log[-3000:]  # trial 3, once
    summary = json.loads((sweep / "search.json").read_text())
    counted = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert len(counted) == 3 and summary["complete"] == 3
    for name, payload in before.items():  # finished trials are kept byte for byte
        assert (sweep / name / "results.json").read_bytes() == payload


def test_mistakes_are_refused_before_any_trial(tmp_path: Path, cache_dir: Path, tiny_tree: Path) -> None:
    log_dir = tmp_path / "logs"
    sweep = log_dir / "sweeps" / "search_patchknn"
    missing = _search(log_dir, tiny_tree, cache_dir, "model.kk=choice(1,2)", ok=False)
    assert missing.returncode == 2
    assert "search space key 'model.kk' is not in the composed config" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    test_metric = _search(log_dir, tiny_tree, cache_dir, "search.objective=image_auroc", ok=False)
    assert test_metric.returncode == 2 and "names a test metric" in test_metric.stderr
    assert not list(sweep.glob("*/results.json"))  # nothing ran

    _search(log_dir, tiny_tree, cache_dir, "hydra.sweeper.n_trials=1", "hydra.sweeper.compare_default=false")
    other = _search(log_dir, tiny_tree, cache_dir, "hydra.sweeper.n_trials=1", "model.k=int(interval(1, 3))", ok=False)
    assert other.returncode == 2
    message = other.stderr
    assert f"storage sqlite:///{sweep}/optuna.db holds study 'search_patchknn' of another search space" in message
    assert '"high":5' in message and '"high":3' in message  # both spaces named
