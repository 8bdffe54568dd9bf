"""adzoo-predict: a trained run scores a folder exactly as it scored those images in its own test; a bad file
is skipped and listed, every map gets its own file, separate-setting runs take ``category=``, and a mistake is
one line on stderr with exit status 2."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adzoo.cli.predict import main as predict_main
from adzoo.engine import run
from adzoo.errors import USAGE_EXIT
from tests.conftest import TINY_DATA

PREDICT = str(Path(sys.executable).parent / "adzoo-predict")
TINY_RUN = [
    "backbone=test_efficientnet",
    *TINY_DATA,
    "trainer.enable_progress_bar=false",
    "print_table=false",
]


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _train(compose_cfg, run_dir: Path, *overrides: str) -> tuple[Path, list[dict[str, str]]]:
    """A real tiny run folder and its own per-image test scores."""
    run(compose_cfg(*TINY_RUN, *overrides, run_dir=run_dir))
    return run_dir, _read_csv(run_dir / "predictions.csv")


def _error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        predict_main(list(argv))
    assert exit_info.value.code == USAGE_EXIT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("adzoo-predict: error: "), err
    assert all(line.startswith("adzoo-predict: warning: ") for line in lines[:-1]), err
    return lines[-1]


def test_predict_matches_the_runs_own_scores(compose_cfg, tmp_path: Path) -> None:
    run_dir, rows = _train(compose_cfg, tmp_path / "run", "data.categories=[pill]")
    folder = tmp_path / "incoming"
    folder.mkdir()
    expected = {}
    for row in rows[:3]:
        target = folder / (Path(row["path"]).parent.name + "_" + Path(row["path"]).name)
        shutil.copy(row["path"], target)
        expected[target.name] = float(row["pred_score"])
    assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={tmp_path / 'out'}"]) == 0
    scored = _read_csv(tmp_path / "out" / "scores.csv")
    assert len(scored) == 3
    for row in scored:
        assert float(row["pred_score"]) == pytest.approx(expected[Path(row["path"]).name], rel=1e-5)
        assert (tmp_path / "out" / row["map"]).is_file()
    assert _read_csv(tmp_path / "out" / "errors.csv") == []


def test_unreadable_images_are_skipped_listed_and_named(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, rows = _train(compose_cfg, tmp_path / "run", "data.categories=[pill]")
    folder = tmp_path / "incoming"
    folder.mkdir()
    good = Path(rows[0]["path"]).read_bytes()
    (folder / "good.png").write_bytes(good)
    (folder / "cut.png").write_bytes(good[: len(good) // 2])  # a transfer cut in half
    (folder / "notes.jpg").write_text("not an image")
    out = tmp_path / "out"
    capsys.readouterr()
    assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={out}", "batch_size=1"]) == 0
    captured = capsys.readouterr()
    assert [Path(r["path"]).name for r in _read_csv(out / "scores.csv")] == ["good.png"]
    score = float(_read_csv(out / "scores.csv")[0]["pred_score"])
    assert score == pytest.approx(float(rows[0]["pred_score"]), rel=1e-5)
    errors = _read_csv(out / "errors.csv")
    assert sorted(Path(r["path"]).name for r in errors) == ["cut.png", "notes.jpg"]
    assert all(r["error"] for r in errors)
    warnings = [line for line in captured.err.splitlines() if line.startswith("adzoo-predict: warning: ")]
    assert len(warnings) == 3, captured.err  # one per file, then the count
    assert any("cut.png" in w for w in warnings) and any("notes.jpg" in w for w in warnings)
    assert "2 of 3 images could not be read" in warnings[-1]
    assert "scored 1 images, 2 unreadable" in captured.out

    (folder / "good.png").unlink()
    line = _error_line(capsys, f"ckpt={run_dir}", f"input={folder}", f"output={out}")
    assert "none of the 2 images could be read" in line and "errors.csv" in line


def test_map_names_are_unique_by_construction(compose_cfg, tmp_path: Path) -> None:
    """``sub/x.png``, ``sub__x.png`` and ``sub/x.jpg`` all flattened to ``sub__x.png`` before."""
    run_dir, rows = _train(compose_cfg, tmp_path / "run", "data.categories=[pill]")
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(rows[0]["path"], folder / "sub" / "x.png")
    shutil.copy(rows[1]["path"], folder / "sub__x.png")
    from PIL import Image

    Image.open(rows[2]["path"]).convert("RGB").save(folder / "sub" / "x.jpg")
    (folder / "sub" / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not an image
    (folder / ".thumbnails").mkdir()
    shutil.copy(rows[0]["path"], folder / ".thumbnails" / "x.png")
    out = folder / "predictions"  # inside the input: its maps must not be scored on a rerun
    for _ in range(2):
        assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={out}"]) == 0
        scored = _read_csv(out / "scores.csv")
        assert len(scored) == 3
        maps = {row["path"]: row["map"] for row in scored}
        assert len(set(maps.values())) == 3
        assert maps[str(folder / "sub" / "x.png")] == "maps/sub/x.png.png"
        for row in scored:
            assert (out / row["map"]).is_file()
    panels = {name: Image.open(out / name).tobytes() for name in maps.values()}
    assert len(set(panels.values())) == 3  # three different images, none overwritten by another


def test_separate_setting_runs_take_a_category(compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, rows = _train(compose_cfg, tmp_path / "run", "data.categories=[pill,screw]", "data.setting=separate")
    folder = tmp_path / "incoming"
    folder.mkdir()
    row = next(r for r in rows if r["category"] == "screw")
    shutil.copy(row["path"], folder / "a.png")

    line = _error_line(capsys, f"ckpt={run_dir}", f"input={folder}")
    assert "category=" in line and "pill, screw" in line
    line = _error_line(capsys, f"ckpt={run_dir}", f"input={folder}", "category=wood")
    assert "category=wood" in line and "pill, screw" in line
    line = _error_line(capsys, f"ckpt={run_dir}/categories/pill", f"input={folder}", "category=screw")
    assert "category=screw" in line and "pill" in line

    out = tmp_path / "out"
    for ckpt, category in ((run_dir, ["category=screw"]), (run_dir / "categories" / "screw", [])):
        assert predict_main([f"ckpt={ckpt}", f"input={folder}", f"output={out}", *category]) == 0
        scored = _read_csv(out / "scores.csv")
        assert float(scored[0]["pred_score"]) == pytest.approx(float(row["pred_score"]), rel=1e-5)
    # The pill model scores the same image differently: category= really picks the model.
    assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={out}", "category=pill"]) == 0
    assert float(_read_csv(out / "scores.csv")[0]["pred_score"]) != pytest.approx(float(row["pred_score"]))

    one = tmp_path / "one_category"  # a separate-setting run with a single category: no category= needed
    shutil.copytree(run_dir, one, symlinks=True)
    shutil.rmtree(one / "categories" / "pill")
    assert predict_main([f"ckpt={one}", f"input={folder}", f"output={out}"]) == 0
    assert float(_read_csv(out / "scores.csv")[0]["pred_score"]) == pytest.approx(float(row["pred_score"]))

    unified, _ = _train(compose_cfg, tmp_path / "unified", "data.categories=[pill]")
    line = _error_line(capsys, f"ckpt={unified}", f"input={folder}", "category=pill")
    assert "category=pill" in line and "unified" in line


def test_predict_mistakes_are_one_line_naming_the_key(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, rows = _train(compose_cfg, tmp_path / "run", "data.categories=[pill]")
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(rows[0]["path"], folder / "a.png")
    ok = [f"input={folder}", f"output={tmp_path / 'out'}"]
    cut = tmp_path / "cut_run"
    shutil.copytree(run_dir, cut)  # follows last.ckpt's link: a real file to damage
    data = (cut / "checkpoints" / "last.ckpt").read_bytes()
    (cut / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty_run"
    shutil.copytree(run_dir, empty)
    (empty / "checkpoints" / "last.ckpt").write_bytes(b"")
    cases = {
        "input= is required": [f"ckpt={run_dir}"],
        "unknown key 'colour'": [f"ckpt={run_dir}", *ok, "colour=red"],
        "expected key=value, got 'verbose'": [f"ckpt={run_dir}", *ok, "verbose"],
        "batch_size=0: expected a positive integer": [f"ckpt={run_dir}", *ok, "batch_size=0"],
        "batch_size=two: expected a positive integer": [f"ckpt={run_dir}", *ok, "batch_size=two"],
        "batch_size=1.5: expected a positive integer": [f"ckpt={run_dir}", *ok, "batch_size=1.5"],
        "device=gpu9: not a device": [f"ckpt={run_dir}", *ok, "device=gpu9"],
        f"ckpt={tmp_path / 'nosuch'}: no such file": [f"ckpt={tmp_path / 'nosuch'}", *ok],
        f"ckpt={folder}: no checkpoints/last.ckpt": [f"ckpt={folder}", *ok],
        f"ckpt={cut / 'checkpoints' / 'last.ckpt'}: cannot read the checkpoint": [f"ckpt={cut}", *ok],
        f"ckpt={empty / 'checkpoints' / 'last.ckpt'}: cannot read the checkpoint": [f"ckpt={empty}", *ok],
        f"input={tmp_path / 'none'}: not a folder": [f"ckpt={run_dir}", f"input={tmp_path / 'none'}"],
        f"output={folder / 'a.png' / 'out'}: cannot create": [f"ckpt={run_dir}", f"input={folder}",
                                                              f"output={folder / 'a.png' / 'out'}"],
    }  # fmt: skip
    for expected, argv in cases.items():
        assert expected in _error_line(capsys, *argv)
    for value in ("nan", "inf", "high"):
        line = _error_line(capsys, f"ckpt={run_dir}", f"input={folder}", f"threshold={value}")
        assert f"threshold={value}" in line and "finite" in line
    line = _error_line(capsys, f"ckpt={run_dir}", f"input={folder}", "format=xml")
    assert "format=xml" in line
    (run_dir / "checkpoints" / "last.ckpt").unlink()  # the link: now no checkpoint at all
    assert "no checkpoints/last.ckpt" in _error_line(capsys, f"ckpt={run_dir}", *ok)


def test_a_real_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug, not a user mistake")

    monkeypatch.setattr("adzoo.predict.predict_folder", broken)
    with pytest.raises(ZeroDivisionError):
        predict_main([f"ckpt={tmp_path}", f"input={tmp_path}"])


def test_console_script_help_and_mistake_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    shown = subprocess.run([PREDICT, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    for key in ("ckpt=", "input=", "output=", "device=", "batch_size=", "category="):
        assert key in shown.stdout
    wrong = subprocess.run([PREDICT, "ckpt=a", "input=b", "colour=red"], capture_output=True, text=True, env=env,
                           timeout=120)  # fmt: skip
    assert wrong.returncode == USAGE_EXIT and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("adzoo-predict: error: unknown key 'colour'")


def test_predict_decides_with_the_runs_threshold_and_writes_masks_and_a_summary(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Decisions, masks and the summary agree with the eager model at the run's validation-fitted decision; a
    threshold= override moves them; format=json prints the same."""
    import json

    import numpy as np
    import torch
    from PIL import Image

    from adzoo.data.mvtec import read_image
    from adzoo.predict import load_model
    from adzoo.thresholds import Decision

    run_dir, rows = _train(compose_cfg, tmp_path / "run", "data.categories=[pill]")
    folder = tmp_path / "incoming"
    folder.mkdir()
    for row in rows:
        shutil.copy(row["path"], folder / (Path(row["path"]).parent.name + "_" + Path(row["path"]).name))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")  # a corrupt file among good ones
    out = tmp_path / "out"
    assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={out}"]) == 0
    assert "1 unreadable" in capsys.readouterr().out
    results = json.loads((run_dir / "results.json").read_text())
    decision = Decision.from_dict(results["thresholds"]["models"]["unified"])
    module, _ = load_model(run_dir)
    scored = _read_csv(out / "scores.csv")
    assert len(scored) == len(rows)
    for row in scored:
        image = read_image(row["path"], 32)[None]
        with torch.no_grad():
            eager = module(image)
        score = float(eager.pred_score[0])
        assert float(row["pred_score"]) == pytest.approx(score, rel=1e-5)
        if abs(score - decision.image_threshold) > 1e-5:
            assert int(row["is_anomalous"]) == int(score >= decision.image_threshold)
        assert float(row["normalised_score"]) == pytest.approx(float(decision.normalise_scores(score)), abs=1e-5)
        mask = np.asarray(Image.open(out / row["mask"])) > 127
        expected = (eager.anomaly_map[0, 0] >= decision.pixel_threshold).numpy()
        near = (eager.anomaly_map[0, 0] - decision.pixel_threshold).abs().numpy() <= 1e-5
        assert (mask == expected)[~near].all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == len(rows) and summary["unreadable"] == 1
    assert summary["flagged"] == sum(int(r["is_anomalous"]) for r in scored)
    assert summary["image_threshold"] == decision.image_threshold and summary["strategy"] == decision.strategy
    # threshold= overrides the stored one: at the lowest score everything is flagged
    lowest = min(float(r["pred_score"]) for r in scored)
    assert predict_main([f"ckpt={run_dir}", f"input={folder}", f"output={tmp_path / 'low'}",
                         f"threshold={lowest}", "format=json"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["flagged"] == len(rows) and printed["summary"]["strategy"] == "manual"
    assert len(printed["errors"]) == 1 and printed["errors"][0]["path"].endswith("broken.png")
