"""Export a trained run for deployment: TorchScript (traced) and ONNX where the method's ops allow.

The exported graph is the eval-mode forward: images (B, 3, H, W) in [0, 1] → (score (B,), map (B, 1, H, W)).
Memory-bank search runs as plain torch ops in the exported graph (``MemoryBank.torch_search``), so no faiss
is needed at deployment. The feature cache is off for export (it hashes images in Python).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from adzoo.errors import ConfigError, OutputFolderError
from adzoo.predict import RunRef, image_size_of, load_run

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")


def parse_formats(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``format=torchscript,onnx`` as a tuple; an unknown or empty choice is a one-line :class:`ConfigError`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    formats = tuple(dict.fromkeys(f.strip() for f in items if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        shown = ",".join(items) if isinstance(value, str) else value
        what = f"unknown format {', '.join(map(repr, unknown))}" if unknown else "no format"
        raise ConfigError(f"format={shown}: {what}; choose from {', '.join(FORMATS)}")
    return formats


def default_output(ref: RunRef) -> Path:
    """``<run>/export``, or ``<run>/categories/<name>/export`` for one model of a separate-setting run."""
    return ref.run_dir / "export" if ref.category is None else ref.run_dir / "categories" / ref.category / "export"


class ExportedModel(nn.Module):
    """Plain-tuple forward of a LightningModule, which tracing and ONNX need."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.module(images)
        return output.pred_score, output.anomaly_map


def export_run(
    ckpt: Path,
    output_dir: Path | None = None,
    formats: tuple[str, ...] | str = FORMATS,
    category: str | None = None,
) -> dict[str, Path | str]:
    """Write ``model.ts`` and/or ``model.onnx`` into ``output_dir`` (default :func:`default_output`); returns
    per format the file or why it was not exported."""
    formats = parse_formats(formats)
    module, config, ref = load_run(ckpt, category=category)
    module.use_feature_cache = False
    # The pure-torch model is the deployable part (the method contract: its forward is the eval forward).
    wrapper = ExportedModel(module.model).eval()
    size = image_size_of(config, ref.results_file)
    example = torch.rand(2, 3, size, size)
    output_dir = default_output(ref) if output_dir is None else Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a path under a file
        raise OutputFolderError(f"output={output_dir}: cannot create the folder ({exc.strerror or exc})") from exc
    written: dict[str, Path | str] = {}
    with torch.no_grad():
        eager = module(example)
        reference = (eager.pred_score, eager.anomaly_map)
        _check(reference, wrapper(example), "pure-torch model")
        if "torchscript" in formats:
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            got = traced(example)
            _check(reference, got, "torchscript")
            path = output_dir / "model.ts"
            traced.save(str(path))
            written["torchscript"] = path
        if "onnx" in formats:
            written["onnx"] = _export_onnx(wrapper, example, reference, output_dir / "model.onnx")
    return written


def _check(reference: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...], what: str) -> None:
    for ref, out in zip(reference, got):
        if not torch.allclose(ref, torch.as_tensor(out), rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"{what} export disagrees with the eager model (max |Δ| {(ref - out).abs().max()})")


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, reference: tuple, path: Path) -> Path | str:
    try:
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["images"], output_names=["score", "anomaly_map"],
            dynamic_axes={"images": {0: "batch"}, "score": {0: "batch"}, "anomaly_map": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    except Exception as exc:  # the method uses an op ONNX cannot express: say so, keep TorchScript
        log.warning("ONNX export failed: %s", exc)
        return f"not exported: {type(exc).__name__}: {exc}"
    try:
        import onnxruntime
    except ImportError:
        return path
    try:
        session = onnxruntime.InferenceSession(str(path))
        got = session.run(None, {"images": example.numpy()})
    except Exception as exc:  # the graph was written but a runtime cannot execute it: do not ship it
        path.unlink(missing_ok=True)
        log.warning("ONNX export is not runnable in onnxruntime: %s", exc)
        return f"not exported: onnxruntime cannot run the graph: {type(exc).__name__}: {str(exc)[:300]}"
    _check(reference, tuple(torch.from_numpy(g) for g in got), "onnx")
    return path
