"""Collect → check → aggregate → write Markdown, CSV, HTML and plots (all atomically)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from adzoo.leaderboard.collect import METRICS, LeaderboardError, Row, aggregate, collect
from adzoo.leaderboard.render import to_csv, to_html, to_markdown
from adzoo.leaderboard.stats import BootstrapConfig, assess
from adzoo.utils.io import atomic_write_text


def build_leaderboard(
    paths: Iterable[str | Path],
    out: str | Path,
    plots: bool = True,
    bootstrap: BootstrapConfig | None = None,
    thresholds: bool = False,
) -> tuple[list[Row], str]:
    """Write ``leaderboard.{md,csv,html}`` (+ ``plots/``) into ``out``; returns the rows and the Markdown.

    Every interval is recomputed here from the runs' per-image artifacts (``bootstrap`` sets how).
    """
    runs = collect(paths)
    if not runs:
        raise LeaderboardError(f"no complete results.json found under {', '.join(map(str, paths))}")
    rows = aggregate(runs)
    out = Path(out)
    plot_paths: list[Path] = []
    gallery_images: dict[str, list[Path]] = {}
    if plots:
        from adzoo.leaderboard.plots import gallery, make_plots

        plot_paths = make_plots(rows, out / "plots")
        gallery_images = gallery(rows)
    uncertainty = assess(rows, bootstrap, out / "plots" if plots else None)
    markdown = to_markdown(rows, uncertainty, thresholds=thresholds)
    atomic_write_text(out / "leaderboard.md", markdown)
    atomic_write_text(out / "leaderboard.csv", to_csv(rows, METRICS))
    page = to_html(rows, plot_paths, gallery_images, uncertainty, thresholds=thresholds)
    atomic_write_text(out / "leaderboard.html", page)
    return rows, markdown
