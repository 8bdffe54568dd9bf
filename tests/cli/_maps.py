"""A callback that saves what the metric callback scored, so tests can compare runs per image and per pixel.

Composed into a real ``adzoo-train`` run from the command line (``+callbacks.maps._target_=tests.cli._maps.SaveMaps``),
as a user's own callback would be. Every rank writes ``<run>/test_maps/rank<N>.pt`` with its own test images:
path, category, label, method score, anomaly map and mask, exactly as ``on_test_batch_end`` received them.

This module imports torch and Lightning only (not the test modules or their conftest, which set torch's thread
count), so loading it does not change how the run it observes computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

FOLDER = "test_maps"


class SaveMaps(pl.Callback):
    def __init__(self) -> None:
        self._rows: dict[str, list[Any]] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = {"path": [], "category": [], "label": [], "pred_score": [], "anomaly_map": [], "mask": []}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        maps = outputs["anomaly_map"].detach().float().cpu()
        masks = outputs["mask"].detach().cpu()
        self._rows["path"].extend(outputs["path"])
        self._rows["category"].extend(outputs["category"])
        self._rows["label"].append(torch.as_tensor(outputs["label"]).view(-1).cpu())
        self._rows["pred_score"].append(outputs["pred_score"].detach().float().view(-1).cpu())
        self._rows["anomaly_map"].append(maps[:, 0] if maps.dim() == 4 else maps)
        self._rows["mask"].append((masks[:, 0] if masks.dim() == 4 else masks) > 0.5)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._rows
        blob = {
            "path": rows["path"],
            "category": rows["category"],
            **{key: torch.cat(rows[key]) for key in ("label", "pred_score", "anomaly_map", "mask")},
        }
        folder = Path(trainer.default_root_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"rank{trainer.global_rank}.pt"
        tmp = target.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(target)


def load_maps(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every rank's saved images of one run, keyed by path (an image saved twice, by two ranks, is an error)."""
    images: dict[str, dict[str, Any]] = {}
    files = sorted((run_dir / FOLDER).glob("rank*.pt"))
    assert files, f"no {FOLDER}/rank*.pt in {run_dir}"
    for file in files:
        blob = torch.load(file, map_location="cpu", weights_only=True)
        for i, path in enumerate(blob["path"]):
            assert path not in images, f"{path} was scored twice (again in {file.name})"
            images[path] = {
                "category": blob["category"][i],
                "label": int(blob["label"][i]),
                "pred_score": blob["pred_score"][i],
                "anomaly_map": blob["anomaly_map"][i],
                "mask": blob["mask"][i],
            }
    return images
