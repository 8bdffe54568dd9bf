"""Which method exports to what: every method traces to TorchScript, and ONNX where its ops allow.

The expected ONNX outcome per method is part of the contract (README, "Predict and export"): a method that
starts or stops exporting changes this table on purpose, not by accident.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adzoo.engine import run
from adzoo.export import export_run
from adzoo.models import METHODS
from adzoo.predict import load_model
from tests.conftest import TINY_DATA, TINY_METHOD

pytestmark = pytest.mark.integration

# method -> does ONNX (opset 17, checked in onnxruntime against the eager model) work?
ONNX_EXPORTS = {"patchknn": True, "patchcore": True, "cap": True, "uniad": True, "adtr": True, "transformaly": False}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_exports_and_matches_eager(compose_cfg, tmp_path: Path, method: str) -> None:
    overrides = [f"method={method}", *TINY_DATA, *TINY_METHOD[method], "data.categories=[pill]"]
    run(compose_cfg(*overrides, "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "print_table=false"))
    written = export_run(tmp_path / "run", tmp_path / "export")
    scripted = torch.jit.load(str(written["torchscript"]))
    module, config = load_model(tmp_path / "run")
    module.use_feature_cache = False
    size = int(config["data"]["image_size"])
    images = torch.rand(3, 3, size, size)  # another batch size than the trace used
    with torch.no_grad():
        eager = module(images)
        score, anomaly_map, *_decided = scripted(images)
    torch.testing.assert_close(score, eager.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(anomaly_map, eager.anomaly_map, rtol=1e-4, atol=1e-4)
    onnx = written["onnx"]
    assert isinstance(onnx, Path) == ONNX_EXPORTS[method], f"{method}: ONNX export gave {onnx}"
