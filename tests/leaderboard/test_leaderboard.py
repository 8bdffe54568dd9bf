"""Leaderboards from real run artifacts: seeds aggregate, numbers trace back, bad artifacts are refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adzoo.cli.leaderboard import main as leaderboard_main
from adzoo.leaderboard import LeaderboardError, aggregate, build_leaderboard, collect


def test_seeds_aggregate_and_every_cell_traces_back(runs_dir: Path, tmp_path: Path) -> None:
    runs = collect([runs_dir])
    assert len(runs) == 3
    rows = aggregate(runs)
    unified = next(r for r in rows if r.group.setting == "unified")
    assert sorted(unified.seeds) == [0, 1]
    values = [json.loads((runs_dir / s / "results.json").read_text()) for s in ("s0", "s1")]
    fabric = [v["metrics"]["per_category"]["fabric"]["image_auroc"] for v in values]
    assert unified.cells["fabric"]["image_auroc"][0] == pytest.approx(sum(fabric) / 2)
    rows, markdown = build_leaderboard([runs_dir], tmp_path)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html"):
        assert (tmp_path / name).is_file()
    assert str(runs_dir / "s0") in markdown and "Provenance" in markdown
    table = list(csv.DictReader((tmp_path / "leaderboard.csv").read_text().splitlines()))
    assert len(table) == 2
    row = next(r for r in table if r["setting"] == "unified")
    assert float(row["fabric/image_auroc"]) == pytest.approx(sum(fabric) / 2)
    assert str(runs_dir / "s1") in row["run_folders"]
    assert (tmp_path / "plots" / "bars_image_auroc.png").is_file()
    assert "data:image/png;base64," in (tmp_path / "leaderboard.html").read_text()


def test_tampered_mean_is_refused(runs_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "bad"
    target.mkdir()
    payload = json.loads((runs_dir / "s0" / "results.json").read_text())
    payload["metrics"]["mean"]["image_auroc"] += 0.01
    (target / "results.json").write_text(json.dumps(payload))
    with pytest.raises(LeaderboardError, match="average to"):
        collect([target])
    assert leaderboard_main([str(target), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    assert not (tmp_path / "out" / "leaderboard.md").exists()


def test_unknown_metric_column_is_refused(runs_dir: Path, tmp_path: Path) -> None:
    payload = json.loads((runs_dir / "s0" / "results.json").read_text())
    payload["metrics"]["per_category"]["fabric"]["image_aroc"] = 0.5
    (tmp_path / "results.json").write_text(json.dumps(payload))
    with pytest.raises(LeaderboardError, match="unknown metric columns"):
        collect([tmp_path])


def test_incomplete_runs_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"status": "running"}')
    assert collect([tmp_path]) == []
    with pytest.raises(LeaderboardError, match="no complete results"):
        build_leaderboard([tmp_path], tmp_path / "out")


def test_cli_prints_the_table(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert leaderboard_main([str(runs_dir), "--out", str(tmp_path), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| patchknn |" in out and "| 2 (0, 1) |" in out
