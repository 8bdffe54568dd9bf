"""Transformaly in the unified setting: one global density against one density per category.

Issue 13 asks whether Transformaly's near-chance image AUROC in the unified setting comes from its single
Gaussian over every category. This reloads a finished unified run (its config and last checkpoint), takes
z_p and z_f of every training image once, and scores the test split twice: with the run's own densities
(fitted on all categories together, as trained) and with a copy of the model refitted on each category's
training images alone. The students are the run's own in both, so only the density changes.

    .venv/bin/python bench/transformaly_per_category.py logs/runs/latest [--threads 2]

Read-only: nothing is written into the run folder. Not a metric of record (the run's results.json is).
"""

from __future__ import annotations

import argparse
import copy
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from adzoo._config import register_resolvers
from adzoo.utils.checkpoint import load_checkpoint


@torch.no_grad()
def _features(module, loader) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """z_p, z_f, labels and categories of every image of a loader (teacher and students in eval mode)."""
    model = module.model
    z_p, z_f, labels, cats = [], [], [], []
    for batch in loader:
        images = batch["image"]
        p, f, _ = model.features(model.teacher_states(images, model.needed_states(model.scored)), model.grid(images))
        z_p.append(p.float())
        z_f.append(f.float())
        labels += batch["label"].tolist() if "label" in batch else [0] * len(images)
        cats += list(batch["category"])
    return torch.cat(z_p), torch.cat(z_f), np.array(labels), np.array(cats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished unified Transformaly run folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    register_resolvers()
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    if cfg.method_name != "transformaly":
        raise SystemExit(f"{args.run}: method_name is {cfg.method_name!r}, expected 'transformaly'")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    module = instantiate(cfg.model)
    module.load_state_dict(load_checkpoint(args.run / "checkpoints" / "last.ckpt")["state_dict"])
    module.eval()

    train_p, train_f, _, train_cat = _features(module, datamodule.fit_once_dataloader())
    test_p, test_f, y, test_cat = _features(module, datamodule.test_dataloader())
    global_score = -module.model.normality(test_p, test_f).numpy()

    names = sorted(set(test_cat))
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for c in names:
        own = copy.deepcopy(module.model)
        own.fit(train_p[train_cat == c], train_f[train_cat == c])  # eq. 3-4 on this category's normals only
        at = test_cat == c
        rows["one density (as trained)"][c] = 100 * roc_auc_score(y[at], global_score[at])
        rows["a density per category"][c] = 100 * roc_auc_score(y[at], -own.normality(test_p[at], test_f[at]).numpy())

    print("image AUROC (%), per category and mean of categories:")
    print(f"{'density':28s}" + "".join(f"{n:>9s}" for n in names) + f"{'mean':>9s}")
    for label, row in rows.items():
        print(f"{label:28s}" + "".join(f"{row[n]:9.1f}" for n in names) + f"{np.mean(list(row.values())):9.2f}")


if __name__ == "__main__":
    main()
