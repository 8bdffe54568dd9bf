"""Score a folder of images with a trained run: anomaly maps as PNG overlays plus a CSV of scores."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from adzoo.data.mvtec import IMAGE_EXTENSIONS, read_image
from adzoo.models.base import AnomalyModule
from adzoo.utils.io import atomic_write_text, read_json

log = logging.getLogger(__name__)


def find_run(ckpt: Path) -> tuple[Path, Path]:
    """(run folder holding results.json, checkpoint file) from a .ckpt path or a run folder."""
    ckpt = Path(ckpt).expanduser()
    if ckpt.is_dir():
        candidate = ckpt / "checkpoints" / "last.ckpt"
        if not candidate.is_file():
            raise FileNotFoundError(f"ckpt={ckpt}: no checkpoints/last.ckpt in this folder (expected a run folder)")
        ckpt = candidate
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: checkpoint not found")
    for parent in ckpt.parents:
        if (parent / "results.json").is_file():
            return parent, ckpt
    raise FileNotFoundError(f"ckpt={ckpt}: no results.json above it (expected a checkpoint inside an adzoo run folder)")


def load_model(ckpt: Path, device: str = "cpu") -> tuple[AnomalyModule, dict[str, Any]]:
    """Rebuild the method from the run's resolved config and load the checkpoint safely (weights only)."""
    run_dir, ckpt_file = find_run(ckpt)
    config = read_json(run_dir / "results.json")["config"]
    model: AnomalyModule = instantiate(OmegaConf.create(config["model"]))
    state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), config


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"input={folder}: not a folder of images")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"input={folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return images


@torch.no_grad()
def predict_folder(
    ckpt: Path, input_dir: Path, output_dir: Path, batch_size: int = 16, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Write ``scores.csv`` and ``maps/<name>.png`` (image | map overlay) for every image under ``input_dir``."""
    from matplotlib import colormaps
    from PIL import Image

    model, config = load_model(ckpt, device)
    image_size = int(config["data"]["image_size"])
    images = list_images(Path(input_dir))
    scores: list[float] = []
    maps: list[torch.Tensor] = []
    tensors: list[torch.Tensor] = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([read_image(p, image_size) for p in images[start : start + batch_size]]).to(device)
        output = model(batch)
        scores += output.pred_score.float().cpu().tolist()
        maps.append(output.anomaly_map.float().cpu()[:, 0])
        tensors.append(batch.cpu())
    all_maps, all_images = torch.cat(maps), torch.cat(tensors)
    low, high = float(all_maps.min()), float(all_maps.max())  # one colour scale for the whole folder
    colormap = colormaps["jet"]
    rows = []
    output_dir = Path(output_dir)
    (output_dir / "maps").mkdir(parents=True, exist_ok=True)
    for path, score, image, anomaly_map in zip(images, scores, all_images, all_maps):
        heat = colormap(((anomaly_map - low) / max(high - low, 1e-12)).clamp(0, 1).numpy())[..., :3]
        overlay = 0.5 * image.permute(1, 2, 0).numpy() + 0.5 * heat
        panel = torch.cat([image.permute(1, 2, 0), torch.from_numpy(overlay).float()], dim=1).numpy()
        name = "__".join(path.relative_to(input_dir).with_suffix("").parts) + ".png"
        Image.fromarray((panel.clip(0, 1) * 255).round().astype("uint8")).save(output_dir / "maps" / name)
        rows.append(
            {"path": str(path), "pred_score": score, "map_max": float(anomaly_map.max()), "map": f"maps/{name}"}
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "pred_score", "map_max", "map"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(output_dir / "scores.csv", buffer.getvalue())
    return rows
