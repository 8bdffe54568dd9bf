"""adzoo-export: the traced TorchScript (and ONNX) model gives the eager model's scores and maps."""

from __future__ import annotations

from pathlib import Path

import torch

from adzoo.cli.export import main as export_main
from adzoo.engine import run
from adzoo.predict import load_model
from tests.conftest import TINY_DATA


def test_torchscript_and_onnx_match_the_eager_model(compose_cfg, tmp_path: Path) -> None:
    run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[pill]"))
    out = tmp_path / "export"
    assert export_main([f"ckpt={tmp_path / 'run'}", f"output={out}"]) == 0
    scripted = torch.jit.load(str(out / "model.ts"))
    module, _ = load_model(tmp_path / "run")
    module.use_feature_cache = False
    images = torch.rand(3, 3, 32, 32)  # another batch size than the trace used
    with torch.no_grad():
        eager = module(images)
        score, anomaly_map = scripted(images)
    torch.testing.assert_close(score, eager.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(anomaly_map, eager.anomaly_map, rtol=1e-4, atol=1e-4)
    assert (out / "model.onnx").is_file()
