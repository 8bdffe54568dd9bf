"""Per-defect-type image AUROC of a finished run: the diagnostic used to calibrate the generated default set.

A category's image AUROC mixes four defect types; calibrating the generator needs each one on its own
(normal test images vs the images of one defect type). This reads a run's ``predictions.csv`` (written by
``adzoo-train``), so the numbers are exactly the real command's, and prints one row per category.

Run, e.g. with a larger test split on the dev seed for steadier per-defect estimates::

    OMP_NUM_THREADS=1 PYTHONPATH=src python -m adzoo.cli.train method=patchknn torch_threads=1 \\
        data.source.seed=1 data.source.n_test_good=40 data.source.n_test_per_defect=20 \\
        paths.data_dir=/tmp/calib/data paths.log_dir=/tmp/calib/logs
    PYTHONPATH=src python bench/calibrate_synthetic.py /tmp/calib/logs/runs/latest
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from adzoo.metrics import auroc


def _auroc(good: list[float], defect: list[float]) -> float:
    """The metric callback's own AUROC of one defect type against the category's good test images."""
    scores = torch.tensor(good + defect, dtype=torch.float64)
    return auroc(scores, torch.cat([torch.zeros(len(good)), torch.ones(len(defect))]).bool())


def per_defect(predictions: Path, column: str = "pred_score") -> dict[str, dict[str, float]]:
    """category → defect type → image AUROC of that type against the category's good test images."""
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with predictions.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            defect = Path(row["path"]).parent.name  # <root>/<category>/test/<defect>/000.png
            scores[row["category"]][defect].append(float(row[column]))
    out: dict[str, dict[str, float]] = {}
    for cat, by_defect in sorted(scores.items()):
        good = by_defect.get("good", [])
        out[cat] = {d: _auroc(good, v) for d, v in by_defect.items() if d != "good"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a run folder holding predictions.csv and results.json")
    ap.add_argument("--column", default="pred_score", help="score column (pred_score or avgpool_score)")
    args = ap.parse_args()
    table = per_defect(args.run_dir / "predictions.csv", args.column)
    per_cat: dict[str, dict[str, float]] = {}
    results = args.run_dir / "results.json"
    if results.is_file():
        per_cat = json.loads(results.read_text(encoding="utf-8"))["metrics"]["per_category"]
    print(f"{'category':8s} {'I-AUROC':>7s} {'P-AUROC':>7s} {'AUPRO':>6s}  per defect type (image AUROC)")
    for cat, cells in table.items():
        m = per_cat.get(cat, {})
        head = " ".join(f"{100 * m[k]:7.1f}" if k in m else f"{'-':>7s}" for k in ("image_auroc", "pixel_auroc"))
        aupro = f"{100 * m['pixel_aupro']:6.1f}" if "pixel_aupro" in m else f"{'-':>6s}"
        body = "  ".join(f"{d}={100 * a:5.1f}" for d, a in cells.items())
        print(f"{cat:8s} {head} {aupro}  {body}")
    if per_cat:
        keys = ("image_auroc", "pixel_auroc", "pixel_aupro")
        i_auc, p_auc, aupro = (100 * float(np.mean([v[k] for v in per_cat.values()])) for k in keys)
        print(f"{'mean':8s} {i_auc:7.1f} {p_auc:7.1f} {aupro:6.1f}")


if __name__ == "__main__":
    main()
