"""Export a trained run for deployment: TorchScript (traced) and ONNX where the method's ops allow.

The exported graph is the eval-mode forward: images (B, 3, H, W) in [0, 1] → (score (B,), map (B, 1, H, W)),
and, when the run fitted a decision on its validation split (:mod:`adzoo.thresholds`), also ``is_anomalous``
(B,), ``normalised_score`` (B,) and ``defect_mask`` (B, 1, H, W): the thresholds and the normalisation travel in
the graph as constants, so a deployment needs no adzoo code. ``bundle.json`` beside it names the outputs and holds
the decision.
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
from adzoo.thresholds import Decision
from adzoo.utils.io import atomic_write_json
from adzoo.utils.quiet import quiet_tracing

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


BASE_OUTPUTS = ("score", "anomaly_map")
DECISION_OUTPUTS = ("is_anomalous", "normalised_score")
MASK_OUTPUT = "defect_mask"
BUNDLE_FILE = "bundle.json"


class ExportedModel(nn.Module):
    """Plain-tuple forward of a LightningModule, which tracing and ONNX need, with the run's decision baked in."""

    def __init__(self, module: nn.Module, decision: Decision | None = None) -> None:
        super().__init__()
        self.module = module
        self.has_decision = decision is not None
        self.has_mask = decision is not None and decision.pixel_threshold is not None
        if decision is not None:
            spread = decision.image_high - decision.image_low
            self.register_buffer("image_threshold", torch.tensor(decision.image_threshold, dtype=torch.float32))
            self.register_buffer("image_scale", torch.tensor(1.0 / spread if spread > 0 else 1.0))
        if self.has_mask:
            assert decision is not None and decision.pixel_threshold is not None
            self.register_buffer("pixel_threshold", torch.tensor(decision.pixel_threshold, dtype=torch.float32))

    @property
    def output_names(self) -> list[str]:
        names = list(BASE_OUTPUTS)
        if self.has_decision:
            names += DECISION_OUTPUTS
        if self.has_mask:
            names.append(MASK_OUTPUT)
        return names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.module(images)
        score, anomaly_map = output.pred_score, output.anomaly_map
        if not self.has_decision:
            return score, anomaly_map
        decided = (score >= self.image_threshold, 0.5 + (score - self.image_threshold) * self.image_scale)
        if not self.has_mask:
            return (score, anomaly_map, *decided)
        return (score, anomaly_map, *decided, anomaly_map >= self.pixel_threshold)


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
    decision = None if module.decision is None else Decision.from_dict(module.decision)
    # The pure-torch model is the deployable part (the method contract: its forward is the eval forward).
    wrapper = ExportedModel(module.model, decision).eval()
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
        reference: tuple[torch.Tensor, ...] = (eager.pred_score, eager.anomaly_map)
        if decision is not None:  # the decisions as adzoo-predict takes them, from the eager model
            reference += (decision.is_anomalous(eager.pred_score), decision.normalise_scores(eager.pred_score))
            if decision.pixel_threshold is not None:
                reference += (decision.defect_masks(eager.anomaly_map),)
        _check(reference, wrapper(example), "pure-torch model", decision)
        if "torchscript" in formats:
            with quiet_tracing():  # traced at the fixed size `size`, recorded in the bundle
                traced = torch.jit.trace(wrapper, example, check_trace=False)
            got = traced(example)
            _check(reference, got, "torchscript", decision)
            path = output_dir / "model.ts"
            traced.save(str(path))
            written["torchscript"] = path
        if "onnx" in formats:
            with quiet_tracing():
                written["onnx"] = _export_onnx(wrapper, example, reference, output_dir / "model.onnx", decision)
    bundle = {
        "method": config.get("method_name"),
        "image_size": size,
        "input": "images (B, 3, H, W) float32 RGB in [0, 1]",
        "outputs": wrapper.output_names,
        "decision": None if decision is None else decision.to_dict(),
        "normalised_score": "0.5 + (score - image_threshold) / (image_high - image_low): 0.5 at the threshold",
        "files": {k: str(v) for k, v in written.items()},
    }
    atomic_write_json(output_dir / BUNDLE_FILE, bundle)
    return written


def _check(
    reference: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...], what: str, decision: Decision | None = None
) -> None:
    """Scores and maps to 1e-4; decisions and masks exactly, except where the eager score (or map value) lies
    within that tolerance of its threshold, where float32 rounding may land on the other side."""
    if len(reference) != len(got):
        raise RuntimeError(f"{what} export returns {len(got)} outputs, the eager model {len(reference)}")
    for k, (ref, out) in enumerate(zip(reference, got)):
        out = torch.as_tensor(out)
        if ref.dtype == torch.bool:
            assert decision is not None
            values, cut = (
                (reference[0], decision.image_threshold) if k == 2 else (reference[1], decision.pixel_threshold)
            )
            differ = (ref != out.bool()) & ((values - float(cut)).abs() > 1e-4)
            if differ.any():
                raise RuntimeError(f"{what} export decides {int(differ.sum())} items otherwise than the eager model")
        elif not torch.allclose(ref, out.to(ref.dtype), rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"{what} export disagrees with the eager model (max |Δ| {(ref - out).abs().max()})")


def _export_onnx(
    wrapper: ExportedModel, example: torch.Tensor, reference: tuple, path: Path, decision: Decision | None
) -> Path | str:
    names = wrapper.output_names
    try:
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["images"], output_names=names,
            dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
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
    _check(reference, tuple(torch.from_numpy(g) for g in got), "onnx", decision)
    return path
