"""Render aggregated rows as Markdown, CSV and a self-contained HTML page (plots embedded)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adzoo.leaderboard import names
from adzoo.leaderboard.collect import Row, Run
from adzoo.leaderboard.stats import CI_METRICS, COMPARED, Uncertainty

# The papers' own headline numbers, on their own data (never on ours): shown in a labelled side column.
PAPER_NUMBERS: dict[str, str] = {
    "uniad": "MVTec AD unified: I-AUROC 96.5, P-AUROC 96.8",
    "adtr": "MVTec AD: I-AUROC 96.4, P-AUROC 97.2 (ADTR+ 96.9 / 97.5); CIFAR-10 94.7",
    "cap": "CIFAR-10 97.0, CIFAR-100 96.5, MVTec AD 89.9 (I-AUROC)",
    "transformaly": "CIFAR-10 98.31, CIFAR-100 97.34, Fashion-MNIST 94.43 (unimodal AUROC)",
}

_MAIN_KEYS = ("image_auroc", "image_auroc_avgpool", "pixel_auroc", "pixel_aupro", "image_ap", "pixel_ap",
              "image_f1max", "pixel_f1max")  # fmt: skip
#: (key, header) of the main table's metric columns; the headers come from the one name table (names.py)
MAIN_METRICS: tuple[tuple[str, str], ...] = tuple((m, names.header(m)) for m in _MAIN_KEYS)
#: the test metrics at the thresholds each run fitted on its validation split (``--thresholds``)
_THRESHOLD_KEYS = ("image_fpr_thr", "image_tpr_thr", "image_precision_thr", "image_f1_thr", "pixel_iou_thr",
                   "pixel_dice_thr", "pixel_pro_thr")  # fmt: skip
THRESHOLD_METRICS: tuple[tuple[str, str], ...] = tuple((m, names.header(m)) for m in _THRESHOLD_KEYS)
PIVOT_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
DATA_NOTE = (
    "The data column names what was read by its content fingerprint (first 8 hex), or by its root where there is "
    "none; categories says 'all N' or lists a subset. Each seed counts once per row: copies of a result and evals "
    "that re-test a trained run on its own data are dropped (listed under Provenance). An eval trains nothing, so "
    "its fit time is '—', and fit times average over the runs that trained."
)
GROUP_COLUMNS = ("method", "profile", "setting", "data", "categories", "backbone", "variant", "task")
PAPER_COLUMN = "paper (their data)"
#: one line per main-table column, shown under the table (keyed on the header text; a column without an entry is
#: simply not explained, and a test asks for one)
COLUMN_LEGEND: dict[str, str] = {
    "method": "the anomaly-detection method (its adzoo name, as in method=...)",
    "profile": "the config's size preset: cpu (small, for a CPU), demo (a short demo run), paper (the paper's own)",
    "setting": "unified: one model for every category; separate: one model per category",
    "data": "the data set, named by the first 8 hex of its content fingerprint (or by its root where there is none)",
    "categories": "'all N' when the run asked for the whole data set, else the categories it used",
    "backbone": "the pretrained feature extractor (its weights in brackets)",
    "variant": "the config values in which this row differs from the method's other rows; 'default' when the "
    "method has one variant (the variant hash is in the CSV and under Provenance); 'tuned on validation (N trials)' "
    "when a hyper-parameter search chose the config on the validation split (section Hyper-parameter search)",
    "task": "train, or 'eval of …' naming the trained model an evaluation measured",
    "seeds": "how many training seeds the row aggregates, and which",
    "I-AUROC": "image-level AUROC of the method's own anomaly score",
    "I-AUROC (pool)": "image-level AUROC when an image's score is the max of its 16×16 average-pooled anomaly map "
    "(UniAD/ADer convention; callbacks.metrics.pool_kernel)",
    "P-AUROC": "pixel-level AUROC over every pixel of the test anomaly maps",
    "AUPRO": "area under the per-region-overlap curve up to a false-positive rate of 0.3, divided by 0.3 "
    "(callbacks.metrics.fpr_limit)",
    "I-AP": "image-level average precision of the method's own score",
    "P-AP": "pixel-level average precision",
    "I-F1max": "image-level F1 at the best threshold of the method's own score",
    "P-F1max": "pixel-level F1 at the best threshold",
    "I-FPR@t": "test images flagged among the normal ones, at the image threshold the run fitted on its validation "
    "split (threshold.strategy; no interval)",
    "I-TPR@t": "test images flagged among the anomalous ones (recall), at the run's image threshold",
    "I-Prec@t": "anomalous among the flagged test images, at the run's image threshold",
    "I-F1@t": "F1 of the test decisions at the run's image threshold",
    "P-IoU@t": "intersection over union of the test defect masks (map ≥ the run's pixel threshold) and the ground "
    "truth, over all pixels of a category",
    "P-Dice@t": "Dice coefficient of the test defect masks at the run's pixel threshold",
    "PRO@t": "mean over ground-truth regions of the fraction of the region that the mask at the pixel threshold covers",
    "fit s": "training wall time in seconds, mean over the seeds that trained ('—' for an eval: it trains nothing)",
    "test s": "test wall time in seconds, mean over seeds",
    "params": "the model's parameters in millions, frozen backbone included",
    "img/s": "test images per second (test images / test s)",
    "GFLOPs/img": "floating-point operations of the eval forward for one image, in 10⁹: torch's matmul, convolution "
    "and attention ops as FlopCounterMode counts them, plus the memory-bank search (2·d per compared vector); "
    "element-wise ops are not counted (results.json cost)",
    "peak GiB": "the run's peak memory: CUDA's allocator peak on a GPU, else the process's peak resident set "
    "(sampled), frozen backbone and data included",
    PAPER_COLUMN: "the paper's own published result, on the paper's own data (not measured here): the note it "
    "points to is listed under the table",
}
# HTML cells of these columns wrap (text; the long ones wider); every other cell stays on one line (numbers)
WRAP_COLUMNS = frozenset({"data", "backbone", "variant", "task"})
LONG_TEXT_COLUMNS = frozenset({"run folder", "duplicates dropped", "result"})


def group_cells(row: Row, variant_hash: bool = False) -> list[str]:
    """The row's identity as table cells: the data column names the data by fingerprint and the categories
    column says whether it is the whole set, so two data sets or a subset never read as the same data. The
    variant column says what the variant changes (:attr:`Row.variant_label`), or its hash with ``variant_hash``."""
    g = row.group
    variant = g.variant if variant_hash else row.variant_label
    return [g.method, g.profile, g.setting, g.data, row.categories_label, g.backbone, variant, g.task]


def seconds(value: float | None) -> str:
    """A time in seconds, or "—" where none was measured (an eval has no fit time; it is not 0)."""
    return "—" if value is None else f"{value:.1f}"


def fmt(cell: tuple[float, float], seeds: int) -> str:
    mean, std = cell
    if math.isnan(mean):
        return "—"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def cell_text(row: Row, scope: str, metric: str, marks: bool = False) -> str:
    """``74.5 [67.2, 81.0]``: the value with its bootstrap interval, to the decimals the interval supports; with
    several seeds the seed-to-seed sd follows; ``marks`` adds "best" / "≈ best" from the paired tests. Falls back to
    :func:`fmt` where the run left no per-image artifacts."""
    from adzoo.leaderboard.stats import interval_decimals

    cell = row.cells.get(scope, {}).get(metric, (math.nan, math.nan))
    interval = (row.stats.interval.get(scope, {}) if row.stats is not None else {}).get(metric)
    if interval is None or math.isnan(cell[0]) or not all(math.isfinite(v) for v in interval):
        return fmt(cell, len(row.runs))
    d = interval_decimals(*interval)
    text = f"{100 * cell[0]:.{d}f} [{100 * interval[0]:.{d}f}, {100 * interval[1]:.{d}f}]"
    if len(row.runs) > 1:
        text += f" sd {100 * cell[1]:.{d}f}"
    if marks and scope == "mean" and row.stats is not None:
        mark = row.stats.vs_best.get(metric, ("", 1.0))[0]
        text += f" {mark}" if mark else ""
    return text


def paper_notes(rows: Sequence[Row]) -> dict[str, str]:
    """method → its note mark (``[1]``…) for the methods in ``rows`` that have a paper number, in row order."""
    methods = dict.fromkeys(r.group.method for r in rows if r.group.method in PAPER_NUMBERS)
    return {m: f"[{i}]" for i, m in enumerate(methods, 1)}


def paper_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """The papers' own numbers that the main table's paper column points to (their data, not ours)."""
    return ["method", "note", "result"], [[m, mark, PAPER_NUMBERS[m]] for m, mark in paper_notes(rows).items()]


def main_table(
    rows: Sequence[Row], paper_marks: bool = False, thresholds: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The leaderboard; with ``paper_marks`` the paper column holds a note mark (:func:`paper_table`) instead of
    the paper's text, which keeps a page's table narrow; ``thresholds`` adds the test metrics at each run's own
    validation-fitted thresholds (the threshold-free columns stay as they are)."""
    extra = THRESHOLD_METRICS if thresholds else ()
    header = [*GROUP_COLUMNS, "seeds", *(t for _, t in MAIN_METRICS), *(t for _, t in extra), "fit s", "test s",
              "params", "img/s", "GFLOPs/img", "peak GiB", PAPER_COLUMN]  # fmt: skip
    papers = paper_notes(rows) if paper_marks else PAPER_NUMBERS
    body = []
    for row in rows:
        body.append(
            [
                *group_cells(row),
                row.seeds_label,
                *(cell_text(row, "mean", m, marks=True) for m, _ in MAIN_METRICS),
                *(cell_text(row, "mean", m) for m, _ in extra),
                seconds(row.fit_s),
                seconds(row.test_s),
                f"{row.parameters / 1e6:.2f}M",
                "—" if row.throughput is None else f"{row.throughput:.1f}",
                "—" if row.gflops is None else f"{row.gflops:.3g}",
                "—" if row.peak_memory_gib is None else f"{row.peak_memory_gib:.2f}",
                papers.get(row.group.method, "—"),
            ]
        )
    return header, body


def compact_table(rows: Sequence[Row]) -> str:
    """The terminal view at the end of a sweep: one Markdown line per row, the headline metrics and times."""
    header = ["method", "profile", "setting", "data", "categories", "backbone", "variant", "task", "seeds",
              "I-AUROC", "P-AUROC", "AUPRO", "fit s", "test s"]  # fmt: skip
    body = [
        [
            row.group.method,
            row.group.profile,
            row.group.setting,
            row.group.data,
            row.categories_label,
            row.group.backbone,
            row.variant_label,
            row.group.task,
            row.seeds_label,
            *(cell_text(row, "mean", m, marks=True) for m in PIVOT_METRICS),
            seconds(row.fit_s),
            seconds(row.test_s),
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def pivot_table(rows: Sequence[Row], metric: str) -> tuple[list[str], list[list[str]]]:
    categories = sorted({c for r in rows for c in r.categories})
    header = ["method", "setting", "data", "variant", "task", *categories, "mean"]
    body = []
    for row in rows:
        g = row.group
        cells = [cell_text(row, c, metric) if c in row.cells else "" for c in categories]
        body.append([g.method, g.setting, g.data, row.variant_label, g.task, *cells,
                     cell_text(row, "mean", metric, marks=True)])  # fmt: skip
    return header, body


def dropped_text(run: Run) -> str:
    """The results.json files left out in favour of this run, with why: a dropped duplicate stays traceable."""
    return "; ".join(f"{d.folder} ({d.task}: {d.reason})" for d in run.dropped)


def provenance(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "setting", "data", "task", "variant", "seed", "run folder", "git commit", "config hash",
              "identity", "duplicates dropped"]  # fmt: skip
    body = [
        [
            row.group.method,
            row.group.setting,
            row.group.data,
            row.group.task,
            row.group.variant,
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


def _href(target: Path, base: Path | None) -> str:
    """A link to ``target``: relative to the page's folder ``base`` (the page and the runs move together), else
    an absolute file URI."""
    if base is None:
        return html.escape(target.resolve().as_uri(), quote=True)
    relative = os.path.relpath(target.resolve(), base.resolve())
    return html.escape(urllib.parse.quote(Path(relative).as_posix()), quote=True)


def _link(target: Path, text: str, base: Path | None) -> str:
    """A link whose text may wrap after a hyphen or slash (run folder names are long), never inside a word."""
    shown = html.escape(text).replace("-", "-<wbr>").replace("/", "/<wbr>")
    return f'<a href="{_href(target, base)}">{shown}</a>'


def commit_url(remote: str, commit: str) -> str | None:
    """The web page of ``commit`` on a GitHub/GitLab-style ``remote`` (https or scp-like ssh), else None."""
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", remote)
    url = f"https://{scp[1]}/{scp[2]}" if scp else remote
    if not re.match(r"https?://", url) or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return None
    return f"{url.removesuffix('.git').rstrip('/')}/commit/{commit}"


def _git_cell(run: Run) -> str:
    """The commit as text, and a link to it only where the run's results.json names a remote (``git.remote``)."""
    git = run.git
    full = str(git.get("commit") or run.commit)
    url = commit_url(str(git["remote"]), full) if git.get("remote") else None
    text = f"<code>{html.escape(run.commit)}</code>" + (" (dirty)" if git.get("dirty") else "")
    return text + (f' <a href="{html.escape(url, quote=True)}">commit</a>' if url else "")


PROVENANCE_LINKS = ("run folder", "files", "git commit")


def provenance_html(rows: Sequence[Row], base: Path | None) -> tuple[list[str], list[list[str]]]:
    """:func:`provenance` with links: the run folder, its resolved config and results.json (relative to the
    page), and the commit (text, linked only where a remote is known)."""
    header, body = provenance(rows)
    folder_i, commit_i = header.index("run folder"), header.index("git commit")
    out_header = [*header[: folder_i + 1], "files", *header[folder_i + 1 :]]
    runs = [r for row in rows for r in row.runs]
    out_body = []
    for line, run in zip(body, runs, strict=True):
        shown = os.path.relpath(run.folder, base.resolve()) if base is not None else str(run.folder)
        files = [(run.folder / ".hydra" / "config.yaml", "config"), (run.folder / "results.json", "results.json"),
                 (run.folder / "predictions.csv", "predictions")]  # fmt: skip
        cells = list(line)  # the plain cells are escaped by _html_table
        cells[folder_i] = _link(run.folder, shown + "/", base)
        cells[commit_i] = _git_cell(run)
        links = " · ".join(_link(path, text, base) for path, text in files if path.is_file())
        out_body.append([*cells[: folder_i + 1], links or "—", *cells[folder_i + 1 :]])
    return out_header, out_body


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def legend(header: Sequence[str]) -> list[tuple[str, str]]:
    """(column, what it means) for each column of ``header`` that :data:`COLUMN_LEGEND` explains."""
    return [(h, COLUMN_LEGEND[h]) for h in header if h in COLUMN_LEGEND]


def search_text(summary: dict[str, Any]) -> str:
    """One paragraph on a hyper-parameter search: what it maximised on which split, and what it chose."""
    best = summary.get("best") or {}
    chosen = ", ".join(f"{k}={v}" for k, v in (best.get("params") or {}).items()) or "—"
    value = best.get("value")
    shown = "—" if value is None else f"{100 * value:.2f}"
    return (
        f"Search {summary['study']}: {summary['complete']} of {summary['n_trials']} trials finished, each scored by "
        f"{summary['objective']} on the validation split (held-out normal images with synthetic anomalies; no trial "
        f"read a test image). Best trial {best.get('number', '—')}: {shown} % with {chosen}. Its config was then "
        "tested once: the row tagged 'tuned on validation'."
    )


def to_markdown(
    rows: Sequence[Row],
    uncertainty: Uncertainty | None = None,
    thresholds: bool = False,
    searches: Sequence[dict[str, Any]] = (),
) -> str:
    header, body = main_table(rows, paper_marks=True, thresholds=thresholds)
    parts = [
        "# adzoo leaderboard",
        "",
        "Metrics in %, macro-averaged over categories, each with its bootstrap interval [low, high] (see Uncertainty "
        "below; sd = seed-to-seed standard deviation where there are several seeds). Every number is read from the run "
        "folders listed under Provenance. The paper column points to each paper's own result on its own data, "
        "not a number measured here. " + DATA_NOTE,
        "",
        markdown_table(header, body),
        "",
        "Columns:",
        "",
        *(f"- **{h}**: {text}" for h, text in legend(header)),
    ]
    if paper_notes(rows):
        parts += ["", "Papers' own numbers (their data, not measured here):", "", markdown_table(*paper_table(rows))]
    for metric in PIVOT_METRICS:
        parts += ["", f"## {names.per_category(metric)}", "", markdown_table(*pivot_table(rows, metric))]
    if uncertainty is not None:
        parts += ["", "## Uncertainty", "", uncertainty.text(), "", uncertainty.ranks_text()]
        if uncertainty.diagram is not None:
            parts += ["", f"![critical-difference diagram](plots/{uncertainty.diagram.name})"]
        header_c, body_c = uncertainty.comparisons_table(rows)
        if body_c:
            parts += ["", "### Paired comparisons", "", markdown_table(header_c, body_c)]
    for summary in searches:
        parts += ["", f"## Hyper-parameter search {summary['study']}", "", search_text(summary)]
    parts += ["", "## Provenance", "", markdown_table(*provenance(rows)), ""]
    return "\n".join(parts)


def to_csv(rows: Sequence[Row], metrics: Sequence[str]) -> str:
    categories = sorted({c for r in rows for c in r.categories})
    columns = [*GROUP_COLUMNS, "data_id", "category_list", "variant_overrides", "seeds", "n_seeds"]
    for scope in [*categories, "mean"]:
        for m in metrics:
            columns += [f"{scope}/{m}", f"{scope}/{m}_std"]
            if m in CI_METRICS:
                columns += [f"{scope}/{m}_lo", f"{scope}/{m}_hi", f"{scope}/{m}_test_lo", f"{scope}/{m}_test_hi"]
    columns += [f"mean/{m}_vs_best" for m in COMPARED] + [f"mean/{m}_p_holm_vs_best" for m in COMPARED]
    columns += ["fit_s", "test_s", "parameters", "throughput_images_per_s", "gflops_per_image", "peak_memory_gib",
                "run_folders", "git_commits", "config_hashes", "dropped_duplicates"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        values: list[object] = [*group_cells(row, variant_hash=True), row.group.data_id, " ".join(row.categories),
                                row.variant_label, " ".join(map(str, row.seeds)), len(row.seeds)]  # fmt: skip
        for scope in [*categories, "mean"]:
            for m in metrics:
                mean, std = row.cells.get(scope, {}).get(m, (math.nan, math.nan))
                values += ["" if math.isnan(mean) else repr(mean), "" if math.isnan(std) else repr(std)]
                if m in CI_METRICS:
                    for source in ("interval", "test_interval"):
                        found = getattr(row.stats, source, {}).get(scope, {}).get(m) if row.stats else None
                        values += ["", ""] if found is None else [repr(found[0]), repr(found[1])]
        marks = row.stats.vs_best if row.stats is not None else {}
        values += [marks[m][0] if m in marks else "" for m in COMPARED]
        values += [repr(marks[m][1]) if m in marks else "" for m in COMPARED]
        values += ["" if row.fit_s is None else row.fit_s, row.test_s, row.parameters, row.throughput or ""]
        values += ["" if row.gflops is None else row.gflops, "" if row.peak_memory_gib is None else row.peak_memory_gib]
        values += [" ".join(str(r.folder) for r in row.runs), " ".join(r.commit for r in row.runs),
                   " ".join(r.config_hash for r in row.runs),
                   " ".join(str(d.folder) for d in row.dropped)]  # fmt: skip
        writer.writerow(values)
    return buffer.getvalue()


_INTERVAL_CELL = re.compile(r"^(?P<value>\S+) (?P<interval>\[[^\]]+\])(?: sd (?P<sd>\S+))?(?: (?P<mark>≈ best|best))?$")


def _html_cell(text: str) -> str:
    """A :func:`cell_text` cell stacked on two lines (value and mark, then the interval as ``low–high`` and the sd,
    smaller), which halves the width an interval column needs; the full interval stays in the tooltip; any other
    cell as it is."""
    m = _INTERVAL_CELL.match(text)
    if m is None:
        return html.escape(text)
    mark = f" <span class='mark'>{html.escape(m['mark'])}</span>" if m["mark"] else ""
    sd = f" sd {html.escape(m['sd'])}" if m["sd"] else ""
    low, high = m["interval"][1:-1].split(", ")
    dash = " to " if low[0] in "+-" or high[0] in "+-" else "–"  # "-20.3–-5.4" would read as a typo
    tip = html.escape(f"interval {m['interval']}" + (f", seed sd {m['sd']}" if m["sd"] else ""), quote=True)
    return (f"<span title=\"{tip}\">{html.escape(m['value'])}</span>{mark}<br>"
            f"<span class='ci'>{html.escape(low)}{dash}{html.escape(high)}{sd}</span>")  # fmt: skip


def _html_header(text: str) -> str:
    """A header cell that may wrap after a slash or before a bracket, so narrow number columns stay narrow."""
    return html.escape(text).replace("/", "/<wbr>").replace(" (", " <wbr>(")


def _html_table(header: list[str], body: list[list[str]], css: str = "", raw: Sequence[str] = ()) -> str:
    """A table in a box that scrolls sideways only when the table is still wider than the page after its headers
    wrap and its intervals stack (the last resort, rather than squeezing numbers); ``raw`` columns hold HTML."""
    wrap = [' class="w"' if h in WRAP_COLUMNS else ' class="w l"' if h in LONG_TEXT_COLUMNS else "" for h in header]
    head = "".join(f"<th{w}>{_html_header(h)}</th>" for h, w in zip(header, wrap, strict=True))
    cell = [(lambda c: c) if h in raw else _html_cell for h in header]
    rows = "".join(
        "<tr>" + "".join(f"<td{w}>{f(c)}</td>" for c, w, f in zip(row, wrap, cell, strict=True)) + "</tr>"
        for row in body
    )
    table = f"<table class='{css}'>" if css else "<table>"
    return f"<div class='scroll'>{table}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


SHARED_COLUMNS = ("profile", "setting", "data", "categories", "backbone", "variant", "task")


def split_shared(header: list[str], body: list[list[str]]) -> tuple[list[str], list[list[str]], list[tuple[str, str]]]:
    """Move the identity columns in which every row agrees out of the table, as (column, value) pairs for one line
    above it: on a page, a column repeating one value on every row only costs width. One row keeps them all."""
    if len(body) < 2:
        return header, body, []
    same = [i for i, h in enumerate(header) if h in SHARED_COLUMNS and len({line[i] for line in body}) == 1]
    keep = [i for i in range(len(header)) if i not in same]
    shared = [(header[i], body[0][i]) for i in same]
    return [header[i] for i in keep], [[line[i] for i in keep] for line in body], shared


def _html_shared(shared: list[tuple[str, str]]) -> str:
    if not shared:
        return ""
    items = " · ".join(f"<b>{html.escape(h)}</b> {html.escape(v)}" for h, v in shared)
    return f"<p class='shared'>Every row: {items}</p>"


def _html_legend(header: Sequence[str]) -> str:
    items = "".join(f"<li><b>{html.escape(h)}</b>: {html.escape(text)}</li>" for h, text in legend(header))
    return f"<ul class='legend'>{items}</ul>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


#: the page's style sheet. The main table fits a laptop page (1,366 px): headers wrap within a few ems, intervals
#: stack under their value, text cells wrap, and ``.scroll`` scrolls sideways only as the last resort.
PAGE_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1em auto;padding:0 1em;max-width:96em;color:#222;"
    "line-height:1.35}p{max-width:75em}.scroll{overflow-x:auto;max-width:100%;margin:.8em 0}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 4px;text-align:right;font-size:12px;"
    "white-space:nowrap;vertical-align:top;font-variant-numeric:tabular-nums}"
    "th{background:#f3f3f3;white-space:normal;vertical-align:bottom;overflow-wrap:break-word}"
    "table.main{table-layout:auto;max-width:100%}table.main th{max-width:6.5em;hyphens:manual}"
    "table.main td{padding:2px 3px}"
    ".w{white-space:normal;text-align:left;max-width:11em;overflow-wrap:break-word}.l{max-width:40em}"
    "td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:#fff;"
    "box-shadow:1px 0 0 #ccc}th:first-child{background:#f3f3f3}tbody tr:nth-child(even) td{background:#fafafa}"
    ".legend{columns:2 34em;column-gap:2em;font-size:13px;padding-left:1.2em;margin:.5em 0 1em}"
    ".legend li{break-inside:avoid;margin-bottom:2px}img{max-width:100%;margin:4px}"
    ".shared{font-size:13px;margin:.8em 0 0}.ci{color:#666;font-size:11px}"
    ".mark{font-size:11px;font-weight:600;color:#1a6b2f}a{color:#1a4f8b}"
    "code{font-size:11px}"
)
GALLERY_NOTE = (
    "One grid per row, one line per category: the first anomalous test images and the highest-scoring normal "
    "one (the likeliest false positive). Each panel: the test image | its ground-truth mask | the anomaly map "
    "over the image (jet: blue low, red high), captioned with the category, the defect type ('good' for a normal "
    "image) and the image's anomaly score. The colour scale is per category and run, from the lowest to the "
    "highest map value among its examples, so scores and colours do not compare across methods. Every panel is "
    "drawn at one size, whichever method or image size wrote it."
)


def to_html(
    rows: Sequence[Row],
    plots: Sequence[Path] = (),
    gallery: dict[str, list[Path]] | None = None,
    uncertainty: Uncertainty | None = None,
    thresholds: bool = False,
    searches: Sequence[tuple[dict[str, Any], Sequence[Path]]] = (),
    base: Path | None = None,
) -> str:
    """The page; ``base`` is the folder it is written to, which its provenance links are relative to (absolute
    file links without it)."""
    header, body = main_table(rows, paper_marks=True, thresholds=thresholds)
    shown, shown_body, shared = split_shared(header, body)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>adzoo leaderboard</title><style>{PAGE_CSS}"
        "</style></head><body><h1>adzoo leaderboard</h1><p>Metrics in %, macro-averaged over "
        "categories, each with its bootstrap interval low–high under it (see Uncertainty below); every number is "
        "read from the run folders under Provenance. The paper column points to each "
        f"paper's own result on its own data, not a number measured here. {html.escape(DATA_NOTE)}</p>",
        _html_shared(shared),
        _html_table(shown, shown_body, css="main"),
        _html_legend(header),
    ]
    if paper_notes(rows):
        parts += ["<h3>Papers' own numbers (their data, not measured here)</h3>", _html_table(*paper_table(rows))]
    for metric in PIVOT_METRICS:
        pivot, pivot_body, _ = split_shared(*pivot_table(rows, metric))  # the shared values are stated above
        parts += [f"<h2>{html.escape(names.per_category(metric))}</h2>", _html_table(pivot, pivot_body)]
    if uncertainty is not None:
        parts += ["<h2>Uncertainty</h2>", f"<p>{html.escape(uncertainty.text())}</p>",
                  f"<p>{html.escape(uncertainty.ranks_text())}</p>"]  # fmt: skip
        if uncertainty.diagram is not None and uncertainty.diagram.is_file():
            parts.append(_img(uncertainty.diagram))
        header_c, body_c = uncertainty.comparisons_table(rows)
        if body_c:
            parts += ["<h3>Paired comparisons</h3>", _html_table(header_c, body_c)]
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(_img(p) for p in plots if p != getattr(uncertainty, "diagram", None)))
    for summary, images in searches:
        parts += [f"<h2>Hyper-parameter search {html.escape(summary['study'])}</h2>",
                  f"<p>{html.escape(search_text(summary))}</p>", "".join(_img(p) for p in images)]  # fmt: skip
    if gallery:
        parts += ["<h2>Anomaly maps</h2>", f"<p>{html.escape(GALLERY_NOTE)}</p>"]
    for label, images in (gallery or {}).items():
        parts.append(f"<h3>{html.escape(label)}</h3>")
        parts.append("".join(_img(p) for p in images))
    parts += ["<h2>Provenance</h2>", _html_table(*provenance_html(rows, base), raw=PROVENANCE_LINKS),
              "</body></html>"]  # fmt: skip
    return "\n".join(parts)
