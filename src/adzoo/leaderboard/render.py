"""Render aggregated rows as Markdown, CSV and a self-contained HTML page (plots embedded)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

from adzoo.leaderboard.collect import Row, Run

# The papers' own headline numbers, on their own data (never on ours): shown in a labelled side column.
PAPER_NUMBERS: dict[str, str] = {
    "uniad": "MVTec AD unified: I-AUROC 96.5, P-AUROC 96.8",
    "adtr": "MVTec AD: I-AUROC 96.4, P-AUROC 97.2 (ADTR+ 96.9 / 97.5); CIFAR-10 94.7",
    "cap": "CIFAR-10 97.0, CIFAR-100 96.5, MVTec AD 89.9 (I-AUROC)",
    "transformaly": "CIFAR-10 98.31, CIFAR-100 97.34, Fashion-MNIST 94.43 (unimodal AUROC)",
}

MAIN_METRICS: tuple[tuple[str, str], ...] = (
    ("image_auroc", "I-AUROC"),
    ("image_auroc_avgpool", "I-AUROC (pool)"),
    ("pixel_auroc", "P-AUROC"),
    ("pixel_aupro", "AUPRO"),
    ("image_ap", "I-AP"),
    ("pixel_ap", "P-AP"),
    ("image_f1max", "I-F1max"),
    ("pixel_f1max", "P-F1max"),
)
PIVOT_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
DATA_NOTE = (
    "The data column names what was read by its content fingerprint (first 8 hex), or by its root where there is "
    "none; categories says 'all N' or lists a subset. Each seed counts once per row: copies of a result and evals "
    "that re-test a trained run on its own data are dropped (listed under Provenance). An eval trains nothing, so "
    "its fit time is '—', and fit times average over the runs that trained."
)
GROUP_COLUMNS = ("method", "profile", "setting", "data", "categories", "backbone", "variant", "task")


def group_cells(row: Row) -> list[str]:
    """The row's identity as table cells: the data column names the data by fingerprint and the categories
    column says whether it is the whole set, so two data sets or a subset never read as the same data."""
    g = row.group
    return [g.method, g.profile, g.setting, g.data, row.categories_label, g.backbone, g.variant, g.task]


def seconds(value: float | None) -> str:
    """A time in seconds, or "—" where none was measured (an eval has no fit time; it is not 0)."""
    return "—" if value is None else f"{value:.1f}"


def fmt(cell: tuple[float, float], seeds: int) -> str:
    mean, std = cell
    if math.isnan(mean):
        return "—"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def main_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    header = [*GROUP_COLUMNS, "seeds", *(t for _, t in MAIN_METRICS), "fit s", "test s", "params", "img/s",
              "paper (their data)"]  # fmt: skip
    body = []
    for row in rows:
        n = len(row.runs)
        body.append(
            [
                *group_cells(row),
                ",".join(map(str, row.seeds)),
                *(fmt(row.cells["mean"][m], n) for m, _ in MAIN_METRICS),
                seconds(row.fit_s),
                seconds(row.test_s),
                f"{row.parameters / 1e6:.2f}M",
                "—" if row.throughput is None else f"{row.throughput:.1f}",
                PAPER_NUMBERS.get(row.group.method, "—"),
            ]
        )
    return header, body


def compact_table(rows: Sequence[Row]) -> str:
    """The terminal view at the end of a sweep: one Markdown line per row, the headline metrics and times."""
    header = ["method", "profile", "setting", "data", "categories", "backbone", "task", "seeds", "I-AUROC",
              "P-AUROC", "AUPRO", "fit s", "test s"]  # fmt: skip
    body = [
        [
            row.group.method,
            row.group.profile,
            row.group.setting,
            row.group.data,
            row.categories_label,
            row.group.backbone,
            row.group.task,
            ",".join(map(str, row.seeds)),
            *(fmt(row.cells["mean"][m], len(row.runs)) for m in PIVOT_METRICS),
            seconds(row.fit_s),
            seconds(row.test_s),
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def pivot_table(rows: Sequence[Row], metric: str) -> tuple[list[str], list[list[str]]]:
    categories = sorted({c for r in rows for c in r.categories})
    header = ["method", "setting", "data", "task", *categories, "mean"]
    body = []
    for row in rows:
        g = row.group
        cells = [fmt(row.cells[c][metric], len(row.runs)) if c in row.cells else "" for c in categories]
        body.append([g.method, g.setting, g.data, g.task, *cells, fmt(row.cells["mean"][metric], len(row.runs))])
    return header, body


def dropped_text(run: Run) -> str:
    """The results.json files left out in favour of this run, with why: a dropped duplicate stays traceable."""
    return "; ".join(f"{d.folder} ({d.task}: {d.reason})" for d in run.dropped)


def provenance(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "setting", "data", "task", "seed", "run folder", "git commit", "config hash", "identity",
              "duplicates dropped"]  # fmt: skip
    body = [
        [
            row.group.method,
            row.group.setting,
            row.group.data,
            row.group.task,
            str(r.seed),
            str(r.folder),
            r.commit,
            r.config_hash,
            r.identity or "—",
            dropped_text(r) or "—",
        ]
        for row in rows
        for r in row.runs
    ]
    return header, body


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def to_markdown(rows: Sequence[Row]) -> str:
    parts = [
        "# adzoo leaderboard",
        "",
        "Metrics in %, mean ± std over seeds, macro-averaged over categories. Every number is read from the run "
        "folders listed under Provenance. The last column is each paper's own result on its own data, not a "
        "number measured here. " + DATA_NOTE,
        "",
        markdown_table(*main_table(rows)),
    ]
    for metric in PIVOT_METRICS:
        parts += ["", f"## {metric} per category", "", markdown_table(*pivot_table(rows, metric))]
    parts += ["", "## Provenance", "", markdown_table(*provenance(rows)), ""]
    return "\n".join(parts)


def to_csv(rows: Sequence[Row], metrics: Sequence[str]) -> str:
    categories = sorted({c for r in rows for c in r.categories})
    columns = [*GROUP_COLUMNS, "data_id", "category_list", "seeds"]
    for scope in [*categories, "mean"]:
        for m in metrics:
            columns += [f"{scope}/{m}", f"{scope}/{m}_std"]
    columns += ["fit_s", "test_s", "parameters", "throughput_images_per_s", "run_folders", "git_commits",
                "config_hashes", "dropped_duplicates"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        values: list[object] = [*group_cells(row), row.group.data_id, " ".join(row.categories),
                                " ".join(map(str, row.seeds))]  # fmt: skip
        for scope in [*categories, "mean"]:
            for m in metrics:
                mean, std = row.cells.get(scope, {}).get(m, (math.nan, math.nan))
                values += ["" if math.isnan(mean) else repr(mean), "" if math.isnan(std) else repr(std)]
        values += ["" if row.fit_s is None else row.fit_s, row.test_s, row.parameters, row.throughput or ""]
        values += [" ".join(str(r.folder) for r in row.runs), " ".join(r.commit for r in row.runs),
                   " ".join(r.config_hash for r in row.runs),
                   " ".join(str(d.folder) for d in row.dropped)]  # fmt: skip
        writer.writerow(values)
    return buffer.getvalue()


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def to_html(rows: Sequence[Row], plots: Sequence[Path] = (), gallery: dict[str, list[Path]] | None = None) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:4px}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>adzoo leaderboard</title><style>{style}</style>"
        "</head><body><h1>adzoo leaderboard</h1><p>Metrics in %, mean ± std over seeds, macro-averaged over "
        "categories; every number is read from the run folders under Provenance. The last column is each paper's "
        f"own result on its own data, not a number measured here. {html.escape(DATA_NOTE)}</p>",
        _html_table(*main_table(rows)),
    ]
    for metric in PIVOT_METRICS:
        parts += [f"<h2>{metric} per category</h2>", _html_table(*pivot_table(rows, metric))]
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(_img(p) for p in plots))
    for label, images in (gallery or {}).items():
        parts.append(f"<h3>Anomaly maps: {html.escape(label)} (image | ground truth | map)</h3>")
        parts.append("".join(_img(p) for p in images))
    parts += ["<h2>Provenance</h2>", _html_table(*provenance(rows)), "</body></html>"]
    return "\n".join(parts)
