"""Collect → check → aggregate → write Markdown, CSV, HTML and plots (all atomically)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from adzoo.leaderboard.collect import METRICS, LeaderboardError, Row, aggregate, collect
from adzoo.leaderboard.render import to_csv, to_html, to_markdown
from adzoo.leaderboard.stats import BootstrapConfig, assess
from adzoo.utils.io import atomic_write_text, read_json


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
    paths = list(paths)
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
        gallery_images = gallery(rows, out / "plots")
    uncertainty = assess(rows, bootstrap, out / "plots" if plots else None)
    searches = search_summaries(paths)
    search_plots: list[tuple[dict, list[Path]]] = []
    for summary in searches:
        images: list[Path] = []
        if plots:
            from adzoo.leaderboard.plots import search_history, search_importances

            images = [p for p in (search_history(summary, out / "plots"), search_importances(summary, out / "plots"))
                      if p is not None]  # fmt: skip
        search_plots.append((summary, images))
    markdown = to_markdown(rows, uncertainty, thresholds=thresholds, searches=searches)
    atomic_write_text(out / "leaderboard.md", markdown)
    atomic_write_text(out / "leaderboard.csv", to_csv(rows, METRICS))
    page = to_html(
        rows, plot_paths, gallery_images, uncertainty, thresholds=thresholds, searches=search_plots, base=out
    )
    atomic_write_text(out / "leaderboard.html", page)
    return rows, markdown


def search_summaries(paths: Iterable[str | Path]) -> list[dict]:
    """The ``search.json`` of every searched sweep folder among ``paths`` (adzoo.search.sweeper writes it)."""
    from adzoo.search.objective import SEARCH_FILE

    found = [Path(p) / SEARCH_FILE for p in paths if (Path(p) / SEARCH_FILE).is_file()]
    return [read_json(f) for f in found]
