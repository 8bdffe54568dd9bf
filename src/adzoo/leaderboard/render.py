"""Render aggregated rows as Markdown, CSV and a self-contained HTML page (plots embedded)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

from adzoo.leaderboard.collect import Row

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
GROUP_COLUMNS = ("method", "profile", "setting", "data", "backbone", "variant")


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
                *row.group,
                ",".join(map(str, row.seeds)),
                *(fmt(row.cells["mean"][m], n) for m, _ in MAIN_METRICS),
                f"{row.fit_s:.1f}",
                f"{row.test_s:.1f}",
                f"{row.parameters / 1e6:.2f}M",
                "—" if row.throughput is None else f"{row.throughput:.1f}",
                PAPER_NUMBERS.get(row.group[0], "—"),
            ]
        )
    return header, body


def compact_table(rows: Sequence[Row]) -> str:
    """The terminal view at the end of a sweep: one Markdown line per row, the headline metrics and times."""
    header = ["method", "profile", "setting", "backbone", "seeds", "I-AUROC", "P-AUROC", "AUPRO", "fit s", "test s"]
    body = [
        [
            row.group[0],
            row.group[1],
            row.group[2],
            row.group[4],
            ",".join(map(str, row.seeds)),
            *(fmt(row.cells["mean"][m], len(row.runs)) for m in PIVOT_METRICS),
            f"{row.fit_s:.1f}",
            f"{row.test_s:.1f}",
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def pivot_table(rows: Sequence[Row], metric: str) -> tuple[list[str], list[list[str]]]:
    categories = sorted({c for r in rows for c in r.categories})
    header = ["method", "setting", "data", *categories, "mean"]
    body = []
    for row in rows:
        cells = [fmt(row.cells[c][metric], len(row.runs)) if c in row.cells else "" for c in categories]
        body.append([row.group[0], row.group[2], row.group[3], *cells, fmt(row.cells["mean"][metric], len(row.runs))])
    return header, body


def provenance(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "setting", "data", "seed", "run folder", "git commit", "config hash"]
    body = [
        [row.group[0], row.group[2], row.group[3], str(r.seed), str(r.folder), r.commit, r.config_hash]
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
        "number measured here.",
        "",
        markdown_table(*main_table(rows)),
    ]
    for metric in PIVOT_METRICS:
        parts += ["", f"## {metric} per category", "", markdown_table(*pivot_table(rows, metric))]
    parts += ["", "## Provenance", "", markdown_table(*provenance(rows)), ""]
    return "\n".join(parts)


def to_csv(rows: Sequence[Row], metrics: Sequence[str]) -> str:
    categories = sorted({c for r in rows for c in r.categories})
    columns = [*GROUP_COLUMNS, "seeds"]
    for scope in [*categories, "mean"]:
        for m in metrics:
            columns += [f"{scope}/{m}", f"{scope}/{m}_std"]
    columns += ["fit_s", "test_s", "parameters", "throughput_images_per_s", "run_folders", "git_commits",
                "config_hashes"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        values: list[object] = [*row.group, " ".join(map(str, row.seeds))]
        for scope in [*categories, "mean"]:
            for m in metrics:
                mean, std = row.cells.get(scope, {}).get(m, (math.nan, math.nan))
                values += ["" if math.isnan(mean) else repr(mean), "" if math.isnan(std) else repr(std)]
        values += [row.fit_s, row.test_s, row.parameters, row.throughput or ""]
        values += [" ".join(str(r.folder) for r in row.runs), " ".join(r.commit for r in row.runs),
                   " ".join(r.config_hash for r in row.runs)]  # fmt: skip
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
        "own result on its own data, not a number measured here.</p>",
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
