"""Diagnose a finished run folder: which image-score convention separates, and where the normal maxima sit.

Issue 13 asked what produces the high maxima of normal images in UniAD's maps (borders, object edges,
pose, background). This reloads a run's own config and last checkpoint, scores its test split once and
prints, per category and as the mean of categories, the image AUROC of several conventions, the share of
argmax pixels near the border for normal and anomalous images, and optionally a picture of maps.

    .venv/bin/python bench/diagnose_run.py logs/runs/latest [--threads 2] [--picture out.png --categories pill,screw]

Read-only: nothing is written into the run folder. Not a metric of record (the run's results.json is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from adzoo._config import register_resolvers
from adzoo.utils.checkpoint import load_checkpoint


def _pool_max(maps: torch.Tensor, kernel: int) -> torch.Tensor:
    return F.avg_pool2d(maps[:, None], kernel, stride=1).flatten(1).amax(1)


def _score_conventions(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    side = maps.shape[-1]
    out = {
        "pool16_max": _pool_max(maps, 16),
        "pool32_max": _pool_max(maps, 32),
        "pixel_max": maps.flatten(1).amax(1),
        "mean": maps.flatten(1).mean(1),
    }
    for border in (side // 16, side // 8):  # the same maps with a margin of the image left out
        out[f"pool16_max_inner{border}px"] = _pool_max(maps[:, border : side - border, border : side - border], 16)
    return out


def _per_category_auroc(labels: np.ndarray, scores: np.ndarray, cats: np.ndarray) -> dict[str, float]:
    return {c: 100.0 * roc_auc_score(labels[cats == c], scores[cats == c]) for c in sorted(set(cats))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (holds .hydra/config.yaml and checkpoints/)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--picture", type=Path, default=None, help="write 4 normal + 4 anomalous maps per category")
    parser.add_argument("--categories", default="", help="comma-separated categories for --picture")
    args = parser.parse_args()

    register_resolvers()
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    module = instantiate(cfg.model)
    checkpoint = args.run / "checkpoints" / "last.ckpt"
    module.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    module.eval()

    maps, images, labels, cats = [], [], [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            maps.append(module.eval_step(batch)["anomaly_map"][:, 0])
            if args.picture:  # kept only when a picture is asked for: the images are the bulk of the memory
                images.append(batch["image"])
            labels += batch["label"].tolist()
            cats += list(batch["category"])
    amap, y, cat = torch.cat(maps), np.array(labels), np.array(cats)

    rows = {name: _per_category_auroc(y, s.numpy(), cat) for name, s in _score_conventions(amap).items()}
    print("image AUROC (%) by score convention, per category and mean of categories:")
    names = sorted(set(cat))
    print(f"{'convention':24s} " + " ".join(f"{c[:8]:>8s}" for c in names) + "     mean")
    for name, per in rows.items():
        print(f"{name:24s} " + " ".join(f"{per[c]:8.1f}" for c in names) + f" {np.mean(list(per.values())):8.1f}")

    side = amap.shape[-1]
    arg = amap.flatten(1).argmax(1)
    r, c = arg // side, arg % side
    to_border = torch.minimum(torch.minimum(r, side - 1 - r), torch.minimum(c, side - 1 - c)).numpy()
    print(f"\nshare of argmax pixels within {side // 16} px of the border (1/16 of the side):")
    for name in names:
        sel = cat == name
        share = [100.0 * np.mean(to_border[sel & (y == lab)] < side // 16) for lab in (0, 1)]
        print(f"  {name:10s} normal {share[0]:5.1f}%   anomalous {share[1]:5.1f}%")

    if args.picture:
        from PIL import Image

        pictures = torch.cat(images)
        strips = []
        for name in [c for c in args.categories.split(",") if c] or names:
            idx = [*np.where((cat == name) & (y == 0))[0][:4], *np.where((cat == name) & (y == 1))[0][:4]]
            top = float(amap[torch.from_numpy(cat == name)].max())
            tiles = []
            for i in idx:
                img = (pictures[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                heat = (amap[i].numpy() / top * 255).clip(0, 255).astype(np.uint8)
                tiles.append(np.concatenate([img, np.repeat(heat[..., None], 3, -1)], 0))
            strips.append(np.concatenate(tiles, 1))
        Image.fromarray(np.concatenate(strips, 0)).save(args.picture)
        print(f"\nmaps (4 normal, then 4 anomalous; map scaled to the category's maximum) → {args.picture}")


if __name__ == "__main__":
    main()
