"""Leaderboard plots (matplotlib, PNG): per-category bars, accuracy vs time, ROC curves, a map gallery, and a
search's optimisation history and parameter importances (from its search.json)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from adzoo.leaderboard import names
from adzoo.leaderboard.collect import Row


def _label(row: Row) -> str:
    g = row.group
    task = "" if g.task == "train" else f", {g.task}"
    return f"{g.method} ({g.profile}, {g.setting}, {g.data} [{row.categories_label}], {row.variant_label}{task})"


def short_labels(rows: Sequence[Row]) -> list[str]:
    """One legend label per row: the method plus only the identity fields in which rows differ, so a legend or
    an annotation stays short enough to sit inside the plot (the page states what every row shares)."""
    fields = [
        (lambda r: r.group.profile),
        (lambda r: r.group.setting),
        (lambda r: r.group.data),
        (lambda r: r.categories_label),
        (lambda r: r.group.backbone),
        (lambda r: r.variant_label),
        (lambda r: r.group.task),
    ]
    varying = [f for f in fields if len({f(r) for r in rows}) > 1]
    labels = []
    for row in rows:
        extra = ", ".join(f(row) for f in varying)
        labels.append(f"{row.group.method} ({extra})" if extra else row.group.method)
    return labels


def save_figure(fig: Figure, path: Path, tight: bool = True) -> Path:
    """Write a figure as a PNG atomically and close it; ``tight=False`` keeps the figure's own size (the
    gallery, whose grids must come out one size for every method)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    tmp.replace(path)
    return path


def bars_figure(rows: Sequence[Row], metric: str) -> Figure:
    """Per-category bars with the seed sd as error bars; the legend sits below the axes (never on a bar), and
    AUROC plots get a dashed chance line at 50 %."""
    categories = [*sorted({c for r in rows for c in r.categories}), "mean"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(categories)), 3.6))
    x = np.arange(len(categories))
    for i, (row, label) in enumerate(zip(rows, short_labels(rows), strict=True)):
        values = [100 * row.cells.get(c, {}).get(metric, (math.nan, 0))[0] for c in categories]
        errors = [100 * row.cells.get(c, {}).get(metric, (0, 0))[1] for c in categories]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, yerr=errors, label=label)
    if metric in names.CHANCE_50:
        ax.axhline(50, color="0.35", ls="--", lw=1, zorder=0.5, label="chance")
    ax.set_xticks(x, categories, rotation=30, ha="right")
    ax.set_ylabel(f"{names.header(metric)} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(names.per_category(metric))
    # below the tick labels, in as many columns as fit: outside the axes, so no bar is hidden
    fig.legend(loc="outside lower center", ncol=min(4, len(rows) + 1), fontsize=8, frameon=False)
    fig.set_layout_engine("constrained")
    return fig


def category_bars(rows: Sequence[Row], metric: str, out: Path) -> Path:
    return save_figure(bars_figure(rows, metric), out / f"bars_{metric}.png")


#: the x ticks of the time plot: values a reader says aloud (10 s, 1 min, 2 min), not 6×10¹
NICE_SECONDS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 4 * 3600, 10 * 3600,
                24 * 3600, 48 * 3600)  # fmt: skip


def time_text(seconds: float, _pos: object = None) -> str:
    """``0.5 s``, ``10 s``, ``2 min``, ``1.5 h``: a wall time as a tick label."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def _time_ticks(low: float, high: float) -> tuple[float, float, list[float]]:
    """Axis limits around [low, high] (log margins) and the nice ticks inside them (at least two)."""
    lo, hi = low / 1.6, high * 1.6
    ticks = [t for t in NICE_SECONDS if lo <= t <= hi]
    if len(ticks) < 2:
        lo = max([t for t in NICE_SECONDS if t <= lo] or [lo])
        hi = min([t for t in NICE_SECONDS if t >= hi] or [hi])
        ticks = [t for t in NICE_SECONDS if lo <= t <= hi]
    return lo, hi, ticks


def time_figure(rows: Sequence[Row], metric: str = "image_auroc") -> Figure:
    """Mean ``metric`` against fit + test time (log axis, plain tick labels). Each point's label is placed toward
    the middle of the plot (left of a point in the right half, below a point near the top), so it stays inside."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    totals = [row.test_s if row.fit_s is None else row.fit_s + row.test_s for row in rows]
    values = [100 * row.cells["mean"][metric][0] for row in rows]
    for row, label, total, value in zip(rows, short_labels(rows), totals, values, strict=True):
        # an eval has no fit time: its point is its test time alone, marked as such rather than given a fit of 0
        ax.scatter(total, value, marker="x" if row.fit_s is None else "o", zorder=3)
        ax.annotate(label + (" (test only)" if row.fit_s is None else ""), (total, value), fontsize=7, zorder=4)
    ax.set_xscale("log")
    lo, hi, ticks = _time_ticks(max(min(totals), 1e-3), max(max(totals), 1e-3))
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(time_text))
    ax.xaxis.set_minor_locator(NullLocator())
    finite = [v for v in values if math.isfinite(v)] or [50.0]
    pad = max(3.0, 0.2 * (max(finite) - min(finite)))
    bottom, top = max(0.0, min(finite) - pad), min(100.0, max(finite) + pad)
    if top - bottom < 2 * pad:  # a point at 0 or 100 keeps the margin on its free side
        bottom, top = max(0.0, top - 2 * pad), min(100.0, bottom + 2 * pad)
    ax.set_ylim(bottom, top)
    span = math.log(hi) - math.log(lo)
    for text, total, value in zip(ax.texts, totals, values, strict=True):
        right = (math.log(total) - math.log(lo)) / span > 0.5
        high = (value - bottom) / max(top - bottom, 1e-9) > 0.8
        text.set_horizontalalignment("right" if right else "left")
        text.set_verticalalignment("top" if high else "bottom")
        text.xyann = (-6 if right else 6, -4 if high else 4)
        text.set_anncoords("offset points")
        text.set_clip_on(True)  # a label still too long is cut at the frame rather than spilling out of it
    _separate_labels(fig, ax)
    test_only = any(row.fit_s is None for row in rows)
    ax.set_xlabel("fit + test wall time (log scale" + ("; x: test only)" if test_only else ")"))
    ax.set_ylabel(f"mean {names.header(metric)} (%)")
    ax.set_title(f"{names.title(metric)} vs wall time")
    ax.grid(True, which="major", color="0.9", lw=0.6)
    return fig


def _separate_labels(fig: Figure, ax: Axes) -> None:
    """Move each point label that would overlap an earlier one by one line, away from it, so two rows with close
    numbers and times stay readable (a simple greedy pass; a plot has a handful of rows)."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    marker = 5 * fig.dpi / 72  # half a marker, in pixels: a label must not cover another row's point either
    points = [ax.transData.transform(text.xy) for text in ax.texts]
    placed = [Bbox.from_extents(x - marker, y - marker, x + marker, y + marker) for x, y in points]
    for text in ax.texts:
        for _ in range(2 * len(ax.texts)):
            box = text.get_window_extent(renderer)
            clash = next((b for b in placed if box.overlaps(b)), None)
            if clash is None:
                break
            step = (box.height + 1) * 72 / fig.dpi  # one text line, in points
            direction = 1 if box.y0 + box.y1 > clash.y0 + clash.y1 else -1
            dx, dy = text.xyann
            text.xyann = (dx, dy + direction * step)
        placed.append(text.get_window_extent(renderer))


def accuracy_vs_time(rows: Sequence[Row], out: Path, metric: str = "image_auroc") -> Path:
    return save_figure(time_figure(rows, metric), out / "accuracy_vs_time.png")


def _predictions(folder: Path) -> list[dict[str, str]]:
    path = folder / "predictions.csv"
    if not path.is_file():
        return []
    return list(csv.DictReader(path.read_text().splitlines()))


def roc_figure(rows: Sequence[Row]) -> Figure | None:
    """Image-level ROC per category from the first seed's predictions.csv of each row; every panel has its own
    legend giving each curve's AUC (None where no category has both labels)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    categories = sorted({c for r in rows for c in r.categories})
    cols = min(3, len(categories))
    nrows = math.ceil(len(categories) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, (3.3 + 0.12 * len(rows)) * nrows), squeeze=False)
    predictions = [_predictions(row.runs[0].folder) for row in rows]
    drawn = False
    for n, (ax, category) in enumerate(zip(axes.flat, categories)):
        for items_all, label in zip(predictions, short_labels(rows), strict=True):
            items = [p for p in items_all if p["category"] == category]
            labels = [int(p["label"]) for p in items]
            if len(set(labels)) < 2:
                continue
            scores = [float(p["pred_score"]) for p in items]
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, label=f"{label}: AUC {100 * roc_auc_score(labels, scores):.1f}")
            drawn = True
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8, label="chance: AUC 50")
        ax.set_title(category, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("false-positive rate", fontsize=8)
        if n % cols == 0:
            ax.set_ylabel("true-positive rate", fontsize=8)
        # under its own panel, so no legend hides a curve (a poor method's curve runs through the lower right)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    for ax in list(axes.flat)[len(categories) :]:
        ax.axis("off")
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle("Image ROC per category (first seed of each row)")
    fig.set_layout_engine("constrained")
    return fig


def roc_curves(rows: Sequence[Row], out: Path) -> Path | None:
    fig = roc_figure(rows)
    return None if fig is None else save_figure(fig, out / "roc.png")


@dataclass(frozen=True)
class Example:
    """One example panel a run wrote (``examples/<category>_<n>.png``: image | ground truth | map), with what is
    known about it: ``label`` 0 normal / 1 anomalous, its defect type and image score (None: not recorded)."""

    file: Path
    category: str
    label: int
    defect: str | None
    score: float | None

    @property
    def caption(self) -> str:
        kind = "good" if self.label == 0 else self.defect or "anomalous"
        score = "score n/a" if self.score is None else f"score {self.score:.3g}"
        return f"{self.category} · {kind} · {score}"


PANEL_PX = 96  # every panel is resized to 3·PANEL_PX × PANEL_PX, whichever method or image size wrote it


def _example_folders(folder: Path) -> list[Path]:
    """Where a run's panels are: ``examples/`` (unified), ``categories/<c>/examples/`` (separate: one per model)."""
    return [path for path in [folder / "examples", *sorted(folder.glob("categories/*/examples"))] if path.is_dir()]


def _panel_files(examples: Path) -> dict[str, list[Path]]:
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in examples.glob("*.png"):
        category, _, n = path.stem.rpartition("_")
        if category and n.isdigit():
            found.setdefault(category, []).append((int(n), path))
    return {c: [p for _, p in sorted(items)] for c, items in sorted(found.items())}


def _mask_says_anomalous(path: Path) -> bool:
    """Whether the panel's middle third (the ground-truth mask) has any defect pixel."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("L"))
    width = array.shape[1] // 3
    return bool((array[:, width : 2 * width] > 127).any())


def examples_of(folder: Path) -> list[Example]:
    """The run's example panels with captions from the ``examples.json`` the metric callback writes beside them;
    a run written before that file existed is captioned from each panel's mask alone (no defect, no score)."""
    from adzoo.callbacks.anomaly_metrics import EXAMPLES_INDEX

    out = []
    for examples in _example_folders(folder):
        index = examples / EXAMPLES_INDEX
        records = {r["file"]: r for r in json.loads(index.read_text())} if index.is_file() else {}
        for category, paths in _panel_files(examples).items():
            for path in paths:
                record = records.get(path.name)
                if record is None:
                    out.append(Example(path, category, int(_mask_says_anomalous(path)), None, None))
                else:
                    out.append(Example(path, category, record["label"], record.get("defect"), record.get("score")))
    return out


def _colour_bar(fig: Figure, cax: Axes) -> None:
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), cax=cax, ticks=[0, 1])
    bar.ax.set_yticklabels(["min", "max"], fontsize=6)
    bar.set_label("map, row scale", fontsize=6, labelpad=-4)


def gallery_figure(examples: Sequence[Example], categories: Sequence[str], columns: int) -> Figure:
    """A grid of one row per category and ``columns`` panels (anomalous and normal, as the run kept them),
    each resized to one panel size and captioned; a colour bar per row, since each category has its own scale.
    The figure's size depends only on ``categories`` and ``columns``, so every method's grid is the same size."""
    from PIL import Image

    panel_w, panel_h, caption_h = 2.4, 0.8, 0.22
    fig = plt.figure(figsize=(columns * panel_w + 0.6, len(categories) * (panel_h + caption_h) + 0.6))
    grid = fig.add_gridspec(len(categories), columns + 1, width_ratios=[*([1.0] * columns), 0.04], left=0.01,
                            right=0.95, top=1 - 0.45 / fig.get_figheight(), bottom=0.02, wspace=0.06,
                            hspace=caption_h / panel_h + 0.1)  # fmt: skip
    by_category = {c: [e for e in examples if e.category == c] for c in categories}
    for r, category in enumerate(categories):
        for k in range(columns):
            ax = fig.add_subplot(grid[r, k])
            ax.set_axis_off()
            if k >= len(by_category[category]):
                continue
            example = by_category[category][k]
            with Image.open(example.file) as image:
                panel = np.asarray(image.convert("RGB").resize((3 * PANEL_PX, PANEL_PX), Image.Resampling.BILINEAR))
            ax.imshow(panel, aspect="auto", interpolation="nearest")
            ax.set_title(example.caption, fontsize=7, pad=2)
        if by_category[category]:
            _colour_bar(fig, fig.add_subplot(grid[r, columns]))
    normal = any(e.label == 0 for e in examples)
    note = "" if normal else " (no normal test image among this run's examples)"
    fig.suptitle(f"each panel: image | ground truth | map{note}", fontsize=8, x=0.01, ha="left")
    return fig


def gallery(rows: Sequence[Row], out: Path) -> dict[str, list[Path]]:
    """Per row, one composed grid of the example panels its first run wrote (``out/gallery_<n>.png``), every grid
    with the same categories and columns so that all come out one size."""
    found = {_label(row): examples_of(row.runs[0].folder) for row in rows}
    found = {label: examples for label, examples in found.items() if examples}
    if not found:
        return {}
    categories = sorted({e.category for examples in found.values() for e in examples})
    columns = max(sum(e.category == c for e in examples) for examples in found.values() for c in categories)
    return {
        label: [save_figure(gallery_figure(examples, categories, columns), out / f"gallery_{n}.png", False)]
        for n, (label, examples) in enumerate(found.items())
    }


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
    params = sorted(importances, key=importances.get)
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * len(params)))
    ax.barh(params, [importances[p] for p in params])
    ax.set_xlabel(f"importance for {summary['objective']} (fANOVA, sums to 1)")
    ax.set_title(f"{summary['study']}: parameter importances")
    return save_figure(fig, out / f"{summary['study']}_importances.png")
