"""Leaderboard plots (matplotlib, PNG): per-category bars, accuracy vs time, ROC curves, a map gallery, and a
search's optimisation history and parameter importances (from its search.json)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from adzoo.leaderboard.collect import Row


def _label(row: Row) -> str:
    g = row.group
    task = "" if g.task == "train" else f", {g.task}"
    return f"{g.method} ({g.profile}, {g.setting}, {g.data} [{row.categories_label}], {g.variant}{task})"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a figure as a PNG atomically and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def category_bars(rows: Sequence[Row], metric: str, out: Path) -> Path:
    categories = [*sorted({c for r in rows for c in r.categories}), "mean"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(categories)), 3.6))
    x = np.arange(len(categories))
    for i, row in enumerate(rows):
        values = [100 * row.cells.get(c, {}).get(metric, (math.nan, 0))[0] for c in categories]
        errors = [100 * row.cells.get(c, {}).get(metric, (0, 0))[1] for c in categories]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, yerr=errors, label=_label(row))
    ax.set_xticks(x, categories, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{metric} per category")
    return save_figure(fig, out / f"bars_{metric}.png")


def accuracy_vs_time(rows: Sequence[Row], out: Path, metric: str = "image_auroc") -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for row in rows:
        # an eval has no fit time: its point is its test time alone, marked as such rather than given a fit of 0
        total = row.test_s if row.fit_s is None else row.fit_s + row.test_s
        label = _label(row) + (" (test only)" if row.fit_s is None else "")
        ax.scatter(total, 100 * row.cells["mean"][metric][0], marker="x" if row.fit_s is None else "o")
        ax.annotate(label, (total, 100 * row.cells["mean"][metric][0]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("fit + test wall time (s, log; x: test only)")
    ax.set_ylabel(f"mean {metric} (%)")
    ax.set_title("accuracy vs time")
    return save_figure(fig, out / "accuracy_vs_time.png")


def _predictions(folder: Path) -> list[dict[str, str]]:
    path = folder / "predictions.csv"
    if not path.is_file():
        return []
    return list(csv.DictReader(path.read_text().splitlines()))


def roc_curves(rows: Sequence[Row], out: Path) -> Path | None:
    """Image-level ROC per category from the first seed's predictions.csv of each row."""
    from sklearn.metrics import roc_curve

    categories = sorted({c for r in rows for c in r.categories})
    cols = min(3, len(categories))
    nrows = math.ceil(len(categories) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False)
    drawn = False
    for ax, category in zip(axes.flat, categories):
        for row in rows:
            items = [p for p in _predictions(row.runs[0].folder) if p["category"] == category]
            labels = [int(p["label"]) for p in items]
            if len(set(labels)) < 2:
                continue
            fpr, tpr, _ = roc_curve(labels, [float(p["pred_score"]) for p in items])
            ax.plot(fpr, tpr, label=row.group.method)
            drawn = True
        ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8)
        ax.set_title(category, fontsize=9)
    for ax in list(axes.flat)[len(categories) :]:
        ax.axis("off")
    if not drawn:
        plt.close(fig)
        return None
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("image ROC (first seed)")
    return save_figure(fig, out / "roc.png")


def gallery(rows: Sequence[Row], per_row: int = 6) -> dict[str, list[Path]]:
    """The example panels each row's first run wrote (image | ground truth | map), a few per row."""
    found: dict[str, list[Path]] = {}
    for row in rows:
        images = sorted((row.runs[0].folder / "examples").glob("*.png"))
        # one per category first, so every category shows up
        firsts = [p for p in images if p.stem.endswith("_0")]
        chosen = (firsts + [p for p in images if p not in firsts])[:per_row]
        if chosen:
            found[_label(row)] = chosen
    return found


def make_plots(rows: Sequence[Row], out: Path) -> list[Path]:
    paths = [category_bars(rows, m, out) for m in ("image_auroc", "pixel_auroc", "pixel_aupro")]
    paths.append(accuracy_vs_time(rows, out))
    roc = roc_curves(rows, out)
    if roc is not None:
        paths.append(roc)
    return paths


def search_history(summary: dict[str, Any], out: Path) -> Path:
    """Each finished trial's validation objective in trial order, and the best so far (Optuna's history plot)."""
    done = [t for t in summary["trials"] if t["state"] == "COMPLETE" and t["value"] is not None]
    numbers = [t["number"] for t in done]
    values = [t["value"] for t in done]
    pick = max if summary.get("direction", "maximize") == "maximize" else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.scatter(numbers, values, label="trial", zorder=3)
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{summary['objective']} (validation)")
    ax.set_title(f"{summary['study']}: optimisation history")
    ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, out / f"{summary['study']}_history.png")


def search_importances(summary: dict[str, Any], out: Path) -> Path | None:
    """The searched parameters ranked by Optuna's fANOVA importance for the objective (None before 2 trials)."""
    importances = summary.get("importances") or {}
    if not importances:
        return None
    names = sorted(importances, key=importances.get)
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * len(names)))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {summary['objective']} (fANOVA, sums to 1)")
    ax.set_title(f"{summary['study']}: parameter importances")
    return save_figure(fig, out / f"{summary['study']}_importances.png")
