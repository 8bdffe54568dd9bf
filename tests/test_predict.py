"""adzoo-predict: a trained run scores a folder exactly as it scored those images in its own test."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from adzoo.cli.predict import main as predict_main
from adzoo.engine import run
from tests.conftest import TINY_DATA


def test_predict_matches_the_runs_own_scores(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[pill]"))
    run_dir = tmp_path / "run"
    rows = list(csv.DictReader((run_dir / "predictions.csv").read_text().splitlines()))
    folder = tmp_path / "incoming"
    folder.mkdir()
    expected = {}
    for row in rows[:3]:
        target = folder / (Path(row["path"]).parent.name + "_" + Path(row["path"]).name)
        shutil.copy(row["path"], target)
        expected[target.name] = float(row["pred_score"])
    assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={tmp_path / 'out'}"]) == 0
    scored = list(csv.DictReader((tmp_path / "out" / "scores.csv").read_text().splitlines()))
    assert len(scored) == 3
    for row in scored:
        assert float(row["pred_score"]) == pytest.approx(expected[Path(row["path"]).name], rel=1e-5)
        assert (tmp_path / "out" / row["map"]).is_file()


def test_predict_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="input= is required"):
        predict_main([f"ckpt={tmp_path}"])
    with pytest.raises(SystemExit, match="unknown key"):
        predict_main(["ckpt=a", "input=b", "colour=red"])
    with pytest.raises(FileNotFoundError, match="ckpt="):
        predict_main([f"ckpt={tmp_path}", f"input={tmp_path}"])
