"""adzoo-export: the traced TorchScript (and ONNX) model gives the eager model's scores and maps; a .ckpt path
exports next to its run, a separate-setting run exports one category, and a mistake is one line with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adzoo.cli.export import main as export_main
from adzoo.engine import run
from adzoo.errors import USAGE_EXIT
from adzoo.predict import load_model
from adzoo.thresholds import Decision
from tests.conftest import TINY_DATA

EXPORT = str(Path(sys.executable).parent / "adzoo-export")
TINY_RUN = ["backbone=test_efficientnet", *TINY_DATA, "trainer.enable_progress_bar=false", "print_table=false"]


def _error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        export_main(list(argv))
    assert exit_info.value.code == USAGE_EXIT
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("adzoo-export: error: "), err
    return lines[0]


def test_torchscript_and_onnx_match_the_eager_model(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg(*TINY_RUN, "data.categories=[pill]"))
    out = tmp_path / "export"
    assert export_main([f"ckpt={tmp_path / 'run'}", f"output={out}"]) == 0
    scripted = torch.jit.load(str(out / "model.ts"))
    module, _ = load_model(tmp_path / "run")
    module.use_feature_cache = False
    images = torch.rand(3, 3, 32, 32)  # another batch size than the trace used
    with torch.no_grad():
        eager = module(images)
        score, anomaly_map, *_decided = scripted(images)
    torch.testing.assert_close(score, eager.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(anomaly_map, eager.anomaly_map, rtol=1e-4, atol=1e-4)
    assert (out / "model.onnx").is_file()


def test_the_bundle_decides_as_the_eager_model_with_the_runs_thresholds(compose_cfg, tmp_path: Path) -> None:
    """The traced graph carries the validation-fitted thresholds: its decisions and masks are the eager model's
    at the run's decision, on images it was not traced with; bundle.json names the outputs and the decision."""
    run(compose_cfg(*TINY_RUN, "data.categories=[pill]"))
    out = tmp_path / "export"
    assert export_main([f"ckpt={tmp_path / 'run'}", f"output={out}"]) == 0
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["outputs"] == ["score", "anomaly_map", "is_anomalous", "normalised_score", "defect_mask"]
    decision = Decision.from_dict(bundle["decision"])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert bundle["decision"] == results["thresholds"]["models"]["unified"]
    module, _ = load_model(tmp_path / "run")
    module.use_feature_cache = False
    scripted = torch.jit.load(str(out / "model.ts"))
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        eager = module(images)
        score, anomaly_map, is_anomalous, normalised, mask = scripted(images)
    torch.testing.assert_close(score, eager.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(anomaly_map, eager.anomaly_map, rtol=1e-4, atol=1e-4)
    assert is_anomalous.dtype == torch.bool and mask.dtype == torch.bool
    torch.testing.assert_close(normalised, decision.normalise_scores(eager.pred_score), rtol=1e-4, atol=1e-4)
    far = (eager.pred_score - decision.image_threshold).abs() > 1e-4
    assert torch.equal(is_anomalous[far], decision.is_anomalous(eager.pred_score)[far])
    far_px = (eager.anomaly_map - decision.pixel_threshold).abs() > 1e-4
    assert torch.equal(mask[far_px], decision.defect_masks(eager.anomaly_map)[far_px])
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    got = session.run(None, {"images": images.numpy()})
    assert [o.name for o in session.get_outputs()] == bundle["outputs"]
    assert (torch.from_numpy(got[2])[far] == decision.is_anomalous(eager.pred_score)[far]).all()


def test_a_ckpt_path_exports_into_its_run_folder(compose_cfg, tmp_path: Path) -> None:
    """``ckpt=<run>/checkpoints/last.ckpt`` used to default the output to ``last.ckpt/export``: under a file."""
    run(compose_cfg(*TINY_RUN, "data.categories=[pill]"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert export_main([f"ckpt={ckpt}", "format=torchscript"]) == 0
    assert (tmp_path / "run" / "export" / "model.ts").is_file()
    assert not (tmp_path / "run" / "export" / "model.onnx").exists()


def test_a_separate_setting_run_exports_the_chosen_category(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(compose_cfg(*TINY_RUN, "data.categories=[pill,screw]", "data.setting=separate"))
    run_dir = tmp_path / "run"
    line = _error_line(capsys, f"ckpt={run_dir}", "format=torchscript")
    assert "category=" in line and "pill, screw" in line
    assert export_main([f"ckpt={run_dir}", "format=torchscript", "category=screw"]) == 0
    scripted = torch.jit.load(str(run_dir / "categories" / "screw" / "export" / "model.ts"))
    module, _ = load_model(run_dir, category="screw")
    module.use_feature_cache = False
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(images)[0], module(images).pred_score, rtol=1e-4, atol=1e-4)


def test_export_mistakes_are_one_line_naming_the_key(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(compose_cfg(*TINY_RUN, "data.categories=[pill]"))
    run_dir = tmp_path / "run"
    cut = tmp_path / "cut_run"
    shutil.copytree(run_dir, cut)  # follows last.ckpt's link: a real file to damage
    data = (cut / "checkpoints" / "last.ckpt").read_bytes()
    (cut / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        "format=tflite: unknown format 'tflite'; choose from torchscript, onnx": [f"ckpt={run_dir}", "format=tflite"],
        "format=,: no format": [f"ckpt={run_dir}", "format=,"],
        "unknown key 'formats'": [f"ckpt={run_dir}", "formats=onnx"],
        "ckpt= is required": ["format=onnx"],
        f"ckpt={tmp_path / 'nosuch.ckpt'}: no such file": [f"ckpt={tmp_path / 'nosuch.ckpt'}"],
        f"ckpt={cut / 'checkpoints' / 'last.ckpt'}: cannot read the checkpoint": [f"ckpt={cut}"],
        f"output={a_file / 'export'}: cannot create the folder": [f"ckpt={run_dir}", f"output={a_file / 'export'}"],
        "category=pill: ": [f"ckpt={run_dir}", "category=pill"],  # a unified run has no per-category model
    }
    for expected, argv in cases.items():
        assert expected in _error_line(capsys, *argv)
    assert not (run_dir / "export").exists()


def test_console_script_help_and_mistake_exit_codes() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    shown = subprocess.run([EXPORT, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    for key in ("ckpt=", "output=", "format=", "category="):
        assert key in shown.stdout
    # A key mistake is reported before torch is imported, so this stays fast.
    wrong = subprocess.run([EXPORT, "ckpt=x", "formats=onnx"], capture_output=True, text=True, env=env, timeout=120)
    assert wrong.returncode == USAGE_EXIT and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("adzoo-export: error: unknown key 'formats'")
