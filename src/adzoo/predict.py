"""Score a folder of images with a trained run: a decision per image, defect masks, overlays and a summary.

The decision is the one the run fitted on its validation split (:mod:`adzoo.thresholds`), carried by the
checkpoint (or, for older checkpoints, results.json); ``threshold=`` overrides the image threshold.

A run folder may come from someone else, so loading it runs none of its code: the config's targets must be on
:mod:`adzoo.safe_load`'s allow-list and the checkpoint is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adzoo.data.mvtec import IMAGE_EXTENSIONS, DataError, is_hidden_or_system, read_image
from adzoo.errors import ConfigError, OutputFolderError
from adzoo.models.base import AnomalyModule
from adzoo.safe_load import check_trusted, instantiate_trusted
from adzoo.thresholds import CHECKPOINT_KEY, Decision, ThresholdError, finite_number
from adzoo.utils.io import atomic_write_text, read_json

log = logging.getLogger(__name__)

SCORE_FIELDS = ("path", "pred_score", "normalised_score", "is_anomalous", "map_max", "map", "mask")
SUMMARY_FILE = "summary.json"
ERROR_FIELDS = ("path", "error")


class RunFolderError(ConfigError, FileNotFoundError):
    """``ckpt=`` names no usable run folder or checkpoint (missing file, no results.json, unknown category)."""


class CheckpointError(ConfigError):
    """The checkpoint exists but cannot be used: truncated, not a checkpoint, refused by weights_only."""


class InputFolderError(ConfigError, FileNotFoundError):
    """``input=`` holds no image that can be scored."""


@dataclass(frozen=True)
class RunRef:
    """Which checkpoint of which run: ``category`` is set for a separate-setting run (one model per category)."""

    run_dir: Path
    ckpt: Path
    category: str | None = None

    @property
    def results_file(self) -> Path:
        return self.run_dir / "results.json"


@dataclass
class Predictions:
    """What :func:`predict_folder` scored, the files it could not read (also in ``errors.csv``), and the summary
    (``summary.json``: images, how many flagged, the thresholds used)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _results_above(path: Path) -> Path:
    for folder in (path, *path.parents):
        if (folder / "results.json").is_file():
            return folder
    raise RunFolderError(f"ckpt={path}: no results.json in or above it (expected an adzoo run folder or its .ckpt)")


def _category_of(ckpt: Path, run_dir: Path) -> str | None:
    """``<run>/categories/<name>/...`` → name; None for a unified run's checkpoint."""
    parts = ckpt.relative_to(run_dir).parts
    return parts[1] if len(parts) > 2 and parts[0] == "categories" else None


def run_categories(run_dir: Path) -> list[str]:
    """The categories of a separate-setting run that have a checkpoint."""
    folder = run_dir / "categories"
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if (d / "checkpoints" / "last.ckpt").is_file())


def find_run(ckpt: Path, category: str | None = None) -> RunRef:
    """The run and checkpoint meant by ``ckpt=`` (a run folder, a category folder or a .ckpt) and ``category=``.

    A separate-setting run keeps one model per category under ``categories/<name>/checkpoints/last.ckpt``;
    ``category`` picks one, and may be left out only when there is exactly one.
    """
    path = Path(ckpt).expanduser().absolute()
    if not path.exists():
        raise RunFolderError(f"ckpt={path}: no such file or folder")
    if path.is_file():
        ckpt_file = path
    elif (path / "checkpoints" / "last.ckpt").is_file():
        ckpt_file = path / "checkpoints" / "last.ckpt"
    else:
        names = run_categories(path)
        if not names:
            raise RunFolderError(
                f"ckpt={path}: no checkpoints/last.ckpt nor categories/<name>/checkpoints/last.ckpt in this folder "
                "(expected a run folder)"
            )
        if category is None and len(names) > 1:
            raise RunFolderError(
                f"ckpt={path}: a separate-setting run with one model per category; pass category= one of "
                f"{', '.join(names)}"
            )
        chosen = category or names[0]
        if chosen not in names:
            raise RunFolderError(f"category={chosen}: not in this run; its categories are {', '.join(names)}")
        ckpt_file = path / "categories" / chosen / "checkpoints" / "last.ckpt"
    run_dir = _results_above(ckpt_file.parent)
    found = _category_of(ckpt_file, run_dir)
    if category is not None and found is None:
        raise RunFolderError(f"category={category}: {run_dir} is a unified run (one model for every category)")
    if category is not None and found != category:
        raise RunFolderError(f"category={category}: ckpt={ckpt_file} is the model of category {found}")
    return RunRef(run_dir, ckpt_file, found)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return (text[:limit] + "...") if len(text) > limit else (text or type(exc).__name__)


def read_run_config(results_file: Path) -> dict[str, Any]:
    """The resolved config a run recorded, after checking that every ``_target_`` in it is allow-listed."""
    try:
        config = read_json(results_file).get("config")
    except (OSError, ValueError, AttributeError) as exc:
        raise RunFolderError(f"{results_file}: not a readable results.json ({_first_line(exc)})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise RunFolderError(f"{results_file}: no config.model (expected the results.json of a finished run)")
    check_trusted(config, str(results_file), prefix="config")
    return config


def image_size_of(config: dict[str, Any], results_file: Path) -> int:
    size = (config.get("data") or {}).get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise RunFolderError(f"{results_file}: config.data.image_size={size!r} (expected a positive integer)")
    return size


def _read_checkpoint(ckpt: Path) -> dict[str, Any]:
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"ckpt={ckpt}: refused, it holds Python objects besides tensors and adzoo loads weights only "
            f"({_first_line(exc, 120)})"
        ) from exc
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"ckpt={ckpt}: cannot read the checkpoint, truncated or not a checkpoint? ({_first_line(exc, 120)})"
        ) from exc
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"ckpt={ckpt}: no state_dict in it (expected a Lightning checkpoint of an adzoo run)")
    return state


def stored_decision(ref: RunRef, checkpoint: dict[str, Any]) -> Decision | None:
    """The decision the run fitted: the checkpoint's, else the one results.json records for this model."""
    data = checkpoint.get(CHECKPOINT_KEY)
    where = f"{ref.ckpt} ({CHECKPOINT_KEY})"
    if not isinstance(data, dict):
        try:
            models = ((read_json(ref.results_file).get("thresholds") or {}).get("models")) or {}
        except (OSError, ValueError, AttributeError):
            models = {}
        data = models.get(ref.category or "unified")
        where = f"{ref.results_file} (thresholds.models)"
    if not isinstance(data, dict):
        return None
    try:
        return Decision.from_dict(data, where)
    except ThresholdError as exc:
        raise CheckpointError(str(exc)) from exc


def load_run(
    ckpt: Path, device: str = "cpu", category: str | None = None
) -> tuple[AnomalyModule, dict[str, Any], RunRef]:
    """Rebuild the method from the run's checked config and load the checkpoint's weights (weights only)."""
    ref = find_run(ckpt, category)
    config = read_run_config(ref.results_file)
    image_size_of(config, ref.results_file)
    checkpoint = _read_checkpoint(ref.ckpt)
    model: AnomalyModule = instantiate_trusted(config["model"], str(ref.results_file))
    decision = stored_decision(ref, checkpoint)
    model.decision = None if decision is None else decision.to_dict()
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:  # another run's checkpoint, or one cut to the wrong keys
        raise CheckpointError(f"ckpt={ref.ckpt}: does not fit the run's config.model ({_first_line(exc)})") from exc
    return model.to(device).eval(), config, ref


def load_model(ckpt: Path, device: str = "cpu", category: str | None = None) -> tuple[AnomalyModule, dict[str, Any]]:
    """:func:`load_run` without the run reference: the model in eval mode and the run's config."""
    model, config, _ = load_run(ckpt, device, category)
    return model, config


def check_device(device: str) -> torch.device:
    """``device=`` as a torch device, or a one-line error when this machine has no such device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device}: not a device ({_first_line(exc, 120)}); use cpu or cuda[:N]") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: CUDA is not available here; use device=cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return parsed


def list_images(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Images under ``folder`` (recursively), leaving out ``exclude`` (an output folder inside the input)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFolderError(f"input={folder}: not a folder of images")
    skip = exclude.resolve() if exclude is not None else None
    images = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(is_hidden_or_system(part) for part in p.relative_to(folder).parts)
        and not (skip is not None and skip in p.resolve().parents)
    )
    if not images:
        raise InputFolderError(f"input={folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return images


def map_name(relative: Path) -> Path:
    """``maps/<relative path>.png``: the input's own path plus ``.png``, so two inputs never share a map."""
    return Path("maps", *relative.parts[:-1], relative.name + ".png")


def _make_folder(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"{key}={folder}: cannot create the folder ({exc.strerror or exc})") from exc


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def check_threshold(value: str | float | None, key: str) -> float | None:
    """``threshold=`` / ``pixel_threshold=`` as a finite float (None when not given), or a one-line error."""
    if value is None or value == "":
        return None
    try:
        return finite_number(value, key)
    except ThresholdError as exc:
        raise ConfigError(f"{key}={value}: expected a finite number (a raw score of this run's method)") from exc


def _contour(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (the mask minus its erosion), for drawing an outline."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


@torch.no_grad()
def predict_folder(
    ckpt: Path,
    input_dir: Path,
    output_dir: Path,
    batch_size: int = 16,
    device: str = "cpu",
    category: str | None = None,
    threshold: float | str | None = None,
    pixel_threshold: float | str | None = None,
) -> Predictions:
    """Score every image under ``input_dir`` and write, into ``output_dir``:

    * ``scores.csv``: raw score, normalised score (0.5 = at the threshold), ``is_anomalous``, map and mask files;
    * ``maps/<relative path>.png``: image with the defect mask's outline | map overlay;
    * ``masks/<relative path>.png``: the binary defect mask (map >= pixel threshold), 0/255;
    * ``summary.json``: how many images were flagged, with the thresholds used;
    * ``errors.csv``: images that could not be read (skipped with a warning; the rest are still scored).

    The decision is the run's own (fitted on its validation split); ``threshold``/``pixel_threshold`` override it.
    A run without one (``threshold.strategy=none``, or older runs) gets scores and maps only.
    """
    from matplotlib import colormaps
    from PIL import Image

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: expected a positive integer")
    image_override = check_threshold(threshold, "threshold")
    pixel_override = check_threshold(pixel_threshold, "pixel_threshold")
    check_device(device)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    images = list_images(input_dir, exclude=output_dir)
    model, config, ref = load_run(ckpt, device, category)
    image_size = image_size_of(config, ref.results_file)
    decision = None if model.decision is None else Decision.from_dict(model.decision)
    if image_override is not None:
        if decision is None:
            decision = Decision("manual", image_override, image_override - 0.5, image_override + 0.5)
        else:
            decision = decision.with_image_threshold(image_override)
    if pixel_override is not None:
        if decision is None:
            raise ConfigError("pixel_threshold= needs an image threshold too: pass threshold= (this run has none)")
        decision = decision.with_pixel_threshold(pixel_override)
        if decision.pixel_low is None or decision.pixel_high is None:
            decision.pixel_low, decision.pixel_high = pixel_override - 0.5, pixel_override + 0.5
    _make_folder(output_dir, "output")

    result = Predictions()
    readable: list[Path] = []
    tensors: list[torch.Tensor] = []
    for path in images:
        try:
            tensors.append(read_image(path, image_size))
            readable.append(path)
        except (DataError, Image.DecompressionBombError) as exc:
            reason = _first_line(exc)
            log.warning("%s", reason if str(path) in reason else f"cannot read image {path}: {reason}")
            result.errors.append({"path": str(path), "error": reason})
    _write_csv(output_dir / "errors.csv", ERROR_FIELDS, result.errors)
    if not readable:
        raise InputFolderError(
            f"input={input_dir}: none of the {len(images)} images could be read (listed in {output_dir / 'errors.csv'})"
        )
    if result.errors:
        log.warning("%d of %d images could not be read; listed in %s", len(result.errors), len(images),
                    output_dir / "errors.csv")  # fmt: skip

    scores: list[float] = []
    maps: list[torch.Tensor] = []
    for start in range(0, len(tensors), batch_size):
        output = model(torch.stack(tensors[start : start + batch_size]).to(device))
        scores += output.pred_score.float().cpu().tolist()
        maps.append(output.anomaly_map.float().cpu()[:, 0])
    all_maps = torch.cat(maps)
    low, high = float(all_maps.min()), float(all_maps.max())  # one colour scale for the whole folder
    colormap = colormaps["jet"]
    has_masks = decision is not None and decision.pixel_threshold is not None
    for path, score, image, anomaly_map in zip(readable, scores, tensors, all_maps):
        relative = path.relative_to(input_dir)
        heat = colormap(((anomaly_map - low) / max(high - low, 1e-12)).clamp(0, 1).numpy())[..., :3]
        picture = image.permute(1, 2, 0).numpy().copy()
        overlay = 0.5 * picture + 0.5 * heat
        row: dict[str, Any] = {"path": str(path), "pred_score": score, "map_max": float(anomaly_map.max())}
        if decision is not None:
            row["normalised_score"] = float(decision.normalise_scores(score))
            row["is_anomalous"] = int(bool(decision.is_anomalous(score)))
        if has_masks:
            assert decision is not None
            defect = decision.defect_masks(anomaly_map).numpy()
            outline = _contour(defect)
            picture[outline], overlay[outline] = (1.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # red outline on the image
            mask_name = Path("masks", *relative.parts[:-1], relative.name + ".png")
            _make_folder((output_dir / mask_name).parent, "output")
            Image.fromarray(defect.astype(np.uint8) * 255).save(output_dir / mask_name)
            row["mask"] = mask_name.as_posix()
        panel = np.concatenate([picture, overlay], axis=1)
        name = map_name(relative)
        _make_folder((output_dir / name).parent, "output")
        Image.fromarray((panel.clip(0, 1) * 255).round().astype("uint8")).save(output_dir / name)
        row["map"] = name.as_posix()
        result.rows.append(row)
    _write_csv(output_dir / "scores.csv", SCORE_FIELDS, result.rows)
    result.summary = _summary(result, decision)
    atomic_write_text(output_dir / SUMMARY_FILE, json.dumps(result.summary, indent=2) + "\n")
    return result


def _summary(result: Predictions, decision: Decision | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"images": len(result.rows), "unreadable": len(result.errors)}
    if decision is None:
        summary["decision"] = None
        return summary
    summary.update(
        flagged=sum(r["is_anomalous"] for r in result.rows),
        strategy=decision.strategy,
        image_threshold=decision.image_threshold,
        pixel_threshold=decision.pixel_threshold,
        flagged_paths=[r["path"] for r in result.rows if r["is_anomalous"]],
    )
    return summary
