"""One computation counts once, and a row names its data: duplicates, evals, data roots, category subsets.

Each case is a set of results.json files the engine could have written (real run folders where the case is a
copy of one, :func:`results_payload` otherwise) and what the leaderboard must make of them.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from adzoo.leaderboard import LeaderboardError, aggregate, build_leaderboard, collect
from adzoo.leaderboard.collect import NUMBERS_DIFFER, SAME_NUMBERS, Row
from adzoo.leaderboard.render import main_table, to_csv, to_markdown
from tests.leaderboard.conftest import results_payload, write_run

T0 = 1_700_000_000.0  # a fixed clock for "newest": results written at T0 + n


def _cell(row: Row, column: str) -> str:
    header, body = main_table([row])
    return body[0][header.index(column)]


def _train(folder: Path, mtime: float | None = None, **kw: Any) -> tuple[Path, str | None]:
    """A training run written to ``folder``; returns the folder and its identity digest (what an eval cites)."""
    payload = results_payload(folder, **kw)
    write_run(folder, payload, mtime)
    return folder, (payload.get("identity") or {}).get("digest")


def _eval(folder: Path, source: Path, digest: str | None, mtime: float | None = None, **kw: Any) -> Path:
    """An eval of the run in ``source`` (identity ``digest``), as adzoo-eval writes it: no fit time."""
    payload = results_payload(folder, task="eval", fit_s=None, source=source, source_digest=digest, **kw)
    return write_run(folder, payload, mtime)


def test_helper_writes_the_engines_schema(runs_dir: Path, tmp_path: Path) -> None:
    """The fake payloads carry exactly the keys the real engine writes, so a case here is a real file's shape."""
    real = json.loads((runs_dir / "s0" / "results.json").read_text())
    fake = results_payload(tmp_path)
    assert set(fake) == set(real)
    for key in ("data", "timing", "metrics", "backbone", "git", "identity"):
        assert set(fake[key]) == set(real[key]), key
    assert set(fake["data"]["fingerprint"]) == set(real["data"]["fingerprint"])
    assert set(fake["config"]) == set(real["config"])
    assert len(collect([write_run(tmp_path / "r", fake)])) == 1


def test_a_run_copied_to_two_folders_is_one_seed(runs_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-s0"
    shutil.copytree(runs_dir / "s0", copy)
    runs = collect([runs_dir, copy])
    rows = aggregate(runs)
    unified = next(r for r in rows if r.group.setting == "unified")
    assert sorted(unified.seeds) == [0, 1]
    assert _cell(unified, "seeds") == "2 (0, 1)"
    [dropped] = unified.dropped
    assert dropped.reason == SAME_NUMBERS and dropped.seed == 0
    assert {dropped.folder, dropped.kept} == {(runs_dir / "s0").resolve(), copy.resolve()}
    markdown = to_markdown(rows)
    assert "0,0" not in markdown
    assert str(dropped.folder) in markdown.split("## Provenance")[1]  # the left-out copy stays traceable
    table = list(csv.DictReader(to_csv(rows, ["image_auroc"]).splitlines()))
    assert str(dropped.folder) in next(r for r in table if r["setting"] == "unified")["dropped_duplicates"]


def test_seed_twice_in_a_row_is_refused_rather_than_shown(tmp_path: Path) -> None:
    """aggregate() never shows a seed twice, even when handed runs collected apart (nothing deduplicated them)."""
    a = write_run(tmp_path / "a", results_payload(tmp_path / "a"))
    b = write_run(tmp_path / "b", results_payload(tmp_path / "b"))
    with pytest.raises(LeaderboardError, match=r"seed\(s\) \[0\] more than once"):
        aggregate(collect([a]) + collect([b]))


def test_an_eval_of_a_trained_run_on_its_data_is_that_run(tmp_path: Path) -> None:
    train, digest = _train(tmp_path / "train", fit_s=3.0, mtime=T0)
    _eval(tmp_path / "evals" / "e0", train, digest, mtime=T0 + 60)  # newer, same numbers: still the same run
    runs = collect([tmp_path])
    assert [(r.task, r.folder) for r in runs] == [("train", train.resolve())]
    [row] = aggregate(runs)
    assert row.seeds == [0] and row.group.task == "train"
    assert row.fit_s == 3.0 and _cell(row, "fit s") == "3.0"
    [dropped] = row.dropped
    assert (dropped.task, dropped.reason, dropped.folder) == ("eval", SAME_NUMBERS, (tmp_path / "evals/e0").resolve())


def test_same_row_and_seed_with_other_numbers_keeps_the_newest_and_says_so(tmp_path: Path) -> None:
    scores = {"fabric": 0.9, "pill": 0.7, "screw": 0.8}
    train, digest = _train(tmp_path / "train", scores=scores, fit_s=3.0, mtime=T0)
    _train(tmp_path / "train-s1", seed=1, scores=scores, fit_s=5.0, mtime=T0)
    rerun = _eval(tmp_path / "eval", train, digest, mtime=T0 + 60, scores={**scores, "pill": 0.6})
    [row] = aggregate(collect([tmp_path]))
    assert sorted(row.seeds) == [0, 1]
    seed0 = next(r for r in row.runs if r.seed == 0)
    assert seed0.folder == rerun.resolve()  # the newest numbers count
    assert row.cells["pill"]["image_auroc"][0] == pytest.approx((0.6 + 0.7) / 2)
    assert [(d.folder, d.reason) for d in row.dropped] == [(train.resolve(), NUMBERS_DIFFER)]
    assert row.fit_s == 5.0  # the one run that trained, not (0 + 5) / 2


def test_two_data_roots_or_fingerprints_are_two_rows(tmp_path: Path) -> None:
    _train(tmp_path / "a", root="/data/a")
    _train(tmp_path / "b", root="/data/b")
    rows = aggregate(collect([tmp_path]))
    assert len(rows) == 2 and all(r.seeds == [0] for r in rows)
    labels = sorted(r.group.data for r in rows)
    assert labels[0] != labels[1] and all(label.startswith("synthetic ") for label in labels)
    assert all(len(label.split()[1]) == 8 for label in labels)  # name + short fingerprint
    # the data column of the rendered table tells them apart
    header, body = main_table(rows)
    assert sorted(line[header.index("data")] for line in body) == labels


def test_the_same_files_at_two_roots_are_one_data_set(tmp_path: Path) -> None:
    """A content fingerprint names the data wherever it lies: a moved copy is the same row, its seed once."""
    _train(tmp_path / "a", root="/data/a", sha="ab" * 32, mtime=T0)
    _train(tmp_path / "b", root="/mnt/copy", sha="ab" * 32, mtime=T0 + 1)
    [row] = aggregate(collect([tmp_path]))
    assert row.seeds == [0] and row.group.data == "synthetic abababab"
    assert row.runs[0].folder == (tmp_path / "b").resolve() and len(row.dropped) == 1


@pytest.mark.parametrize(("sha", "kind"), [(None, "content"), ("cd" * 32, "source")])
def test_without_a_content_fingerprint_the_root_tells_data_apart(tmp_path: Path, sha: str | None, kind: str) -> None:
    """No fingerprint (older files), or one that hashes only the source type: the root keys and labels the row."""
    _train(tmp_path / "a", root="/data/a", sha=sha, kind=kind)
    _train(tmp_path / "b", root="/data/b", sha=sha, kind=kind)
    rows = aggregate(collect([tmp_path]))
    assert len(rows) == 2
    assert sorted(r.group.data.split(" @ ")[1] for r in rows) == ["/data/a", "/data/b"]


def test_a_subset_of_categories_is_its_own_row(tmp_path: Path) -> None:
    _train(tmp_path / "all", scores={"fabric": 0.9, "pill": 0.7, "screw": 0.8})
    _train(tmp_path / "all-s1", seed=1, scores={"fabric": 0.8, "pill": 0.6, "screw": 0.7})
    # same root and even the same fingerprint: the category set alone must split the row
    sha = results_payload(tmp_path / "all")["data"]["fingerprint"]["sha256"]
    _train(tmp_path / "pill", scores={"pill": 0.75}, every=False, sha=sha)
    rows = aggregate(collect([tmp_path]))
    assert len(rows) == 2
    full = next(r for r in rows if len(r.categories) == 3)
    subset = next(r for r in rows if r.categories == ["pill"])
    assert sorted(full.seeds) == [0, 1] and subset.seeds == [0]
    assert (full.categories_label, subset.categories_label) == ("all 3", "pill")
    assert _cell(full, "categories") == "all 3" and _cell(subset, "categories") == "pill"
    assert subset.cells["mean"]["image_auroc"][0] == pytest.approx(0.75)


def test_an_eval_on_other_data_is_its_own_row_without_a_fit_time(tmp_path: Path) -> None:
    t0, d0 = _train(tmp_path / "train-s0", root="/data/a", fit_s=3.0)
    t1, d1 = _train(tmp_path / "train-s1", seed=1, root="/data/a", fit_s=5.0)
    _train(tmp_path / "train-on-b", root="/data/b", fit_s=7.0)  # a model trained on b: not the evals' row
    _eval(tmp_path / "evals" / "s0", t0, d0, root="/data/b", test_s=2.0)
    _eval(tmp_path / "evals" / "s1", t1, d1, seed=1, root="/data/b", test_s=4.0)
    out = tmp_path / "board"
    rows, markdown = build_leaderboard([tmp_path], out, plots=True)
    assert len(rows) == 3
    evals = next(r for r in rows if r.group.task != "train")
    trained_a = next(r for r in rows if any(x.folder == t0.resolve() for x in r.runs))
    trained_b = next(r for r in rows if r.group.task == "train" and r.group.data == evals.group.data)
    assert sorted(evals.seeds) == [0, 1] and evals.dropped == []
    assert evals.group.task.startswith("eval of ") and trained_a.group.data in evals.group.task
    assert evals.fit_s is None and _cell(evals, "fit s") == "—"
    assert evals.test_s == pytest.approx(3.0)
    assert trained_a.fit_s == pytest.approx(4.0) and trained_b.fit_s == pytest.approx(7.0)
    table = list(csv.DictReader((out / "leaderboard.csv").read_text().splitlines()))
    assert next(r for r in table if r["task"] != "train")["fit_s"] == ""
    assert "eval of " in markdown and (out / "plots" / "accuracy_vs_time.png").is_file()


def test_an_eval_whose_trained_run_was_not_collected_names_that_run(tmp_path: Path) -> None:
    """Nothing says what the model was trained on: the row is that one model's, named by its folder."""
    trained = tmp_path / "elsewhere" / "patchknn-synthetic-unified-s0-0123456789"
    _eval(tmp_path / "evals" / "e", trained, "f" * 16, root="/data/b")
    [row] = aggregate(collect([tmp_path / "evals"]))
    assert row.group.task == f"eval of {trained.name}" and row.fit_s is None


def test_old_results_without_identity_still_load(tmp_path: Path) -> None:
    """Files from before ``identity`` and ``source`` (and evals that wrote fit_s = 0) are read by their config."""
    train, _ = _train(tmp_path / "train", identity=False, fit_s=3.0)
    same = results_payload(tmp_path / "eval-same", task="eval", fit_s=0.0, identity=False)
    other = results_payload(tmp_path / "eval-other", task="eval", fit_s=0.0, identity=False, root="/data/b")
    write_run(tmp_path / "eval-same", same)
    write_run(tmp_path / "eval-other", other)
    runs = collect([tmp_path])
    assert all(r.identity is None for r in runs)
    rows = aggregate(runs)
    assert len(rows) == 2
    trained = next(r for r in rows if r.group.task == "train")
    assert trained.runs[0].folder == train.resolve() and trained.fit_s == 3.0
    assert [d.folder for d in trained.dropped] == [(tmp_path / "eval-same").resolve()]
    evaluated = next(r for r in rows if r.group.task != "train")
    assert evaluated.fit_s is None and _cell(evaluated, "fit s") == "—"  # the old 0 is not a fit time
