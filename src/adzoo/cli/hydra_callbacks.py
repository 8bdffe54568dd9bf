"""Hydra callbacks: a one-line summary per job and, at the end of a sweep, its leaderboard.

They live in ``conf/hydra/default.yaml`` (``hydra.callbacks``), so every ``adzoo-train -m`` sweep reports each job
as it finishes and ends with the table a user came for, without a second command. Both only read the run
folders' artifacts (results.json), like ``adzoo-leaderboard``. They sit with the apps (``adzoo.cli``), the top
layer, because they drive the leaderboard; ``adzoo.utils`` stays free of anything above it (tests/test_layering.py).
Run folders never record them (results.json drops the ``hydra`` node), so the move needs no alias at the old path.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from adzoo.utils.io import read_json

log = logging.getLogger("adzoo")

SUMMARY_METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_aupro", "AUPRO"))


def _is_worker() -> bool:
    """DDP worker processes re-run the app; only the launching process reports."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def summary_line(results: dict[str, Any], intervals: dict[str, tuple[float, float]] | None = None) -> str:
    """``uniad synthetic/unified seed 0: I-AUROC 64.5 [58.1, 70.6] P-AUROC … | fit 278s test 6s``.

    ``intervals`` (from :func:`job_intervals`) adds each metric's bootstrap interval, to the decimals it supports.
    """
    from adzoo.leaderboard.stats import interval_decimals

    search = results.get("search") or {}
    if "objective" in search:  # a search trial: its validation objective, not test metrics (it has none)
        return (
            f"{results['method']} [{results.get('profile', '?')}] {results.get('data', {}).get('name', '?')}/"
            f"{results['setting']} seed {results['seed']}: search trial, {search['objective']} "
            f"{100 * search['value']:.2f} (validation) | fit {results.get('timing', {}).get('fit_s') or 0:.0f}s"
        )
    mean = results["metrics"]["mean"]
    cells = []
    for key, title in SUMMARY_METRICS:
        value = mean.get(key, math.nan)
        found = (intervals or {}).get(key)
        if value is None or math.isnan(value):
            cells.append(f"{title} —")
        elif found is not None and all(math.isfinite(v) for v in found):
            d = interval_decimals(*found)
            cells.append(f"{title} {100 * value:.{d}f} [{100 * found[0]:.{d}f}, {100 * found[1]:.{d}f}]")
        else:
            cells.append(f"{title} {100 * value:.2f}")
    timing = results.get("timing", {})
    data = results.get("data", {}).get("name", "?")
    fit = timing.get("fit_s")
    fit_text = "eval" if fit is None else f"fit {fit:.0f}s"
    return (
        f"{results['method']} [{results.get('profile', '?')}] {data}/{results['setting']} seed {results['seed']}: "
        f"{' '.join(cells)} | {fit_text} test {timing.get('test_s') or 0:.0f}s"
    )


def job_intervals(results_path: Path, payload: dict[str, Any]) -> dict[str, tuple[float, float]] | None:
    """The run's own bootstrap intervals (default settings) from its artifacts; None when it has none."""
    from adzoo.leaderboard.collect import LeaderboardError, read_run
    from adzoo.leaderboard.stats import run_intervals

    try:
        return run_intervals(read_run(results_path, payload))
    except (LeaderboardError, OSError, ValueError) as exc:
        log.warning("no interval for %s: %s", results_path.parent, exc)
        return None


class JobSummary(Callback):
    """After each job: one line with its mean metrics and times, or why it failed (the sweep log's index)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if _is_worker():
            return
        run_dir = Path(job_return.working_dir or ".")
        job = ""
        if job_return.hydra_cfg is not None:
            run_dir = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
            num = job_return.hydra_cfg.hydra.job.get("num")
            job = "" if num in (None, "") else f" job {num}"
        if job_return.status == JobStatus.FAILED:
            if not job:
                return  # a single run: the app reports the error itself, once
            from adzoo.errors import user_error_message

            error = job_return._return_value
            reason = (
                user_error_message(error)
                or f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            )
            print(f"[adzoo]{job} FAILED in {run_dir}: {reason}", flush=True)
            return
        results_path = run_dir / "results.json"
        if not results_path.is_file():
            return
        payload = read_json(results_path)
        trial = "objective" in (payload.get("search") or {})
        line = summary_line(payload, None if trial else job_intervals(results_path, payload))
        print(f"[adzoo]{job} done: {line} → {run_dir}", flush=True)


class SweepLeaderboard(Callback):
    """After a sweep: build the leaderboard of its folder, print it, and log it to wandb and MLflow when the sweep
    does.

    ``enabled`` turns it off; ``plots`` skips matplotlib for speed. A sweep whose jobs all failed leaves no
    leaderboard (and says so) instead of raising after the work is done.
    """

    def __init__(
        self,
        enabled: bool = True,
        plots: bool = True,
        bootstrap: dict[str, Any] | None = None,
        thresholds: bool = False,
    ) -> None:
        from adzoo.leaderboard.stats import BootstrapConfig

        self.enabled = enabled
        self.plots = plots
        self.thresholds = thresholds
        self.bootstrap = BootstrapConfig(
            **dict(bootstrap or {})
        )  # a bad key or value fails at start-up, not at the end

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or _is_worker():
            return
        from adzoo.leaderboard import LeaderboardError, build_leaderboard
        from adzoo.leaderboard.render import compact_table

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows, _ = build_leaderboard(
                [sweep_dir], sweep_dir, plots=self.plots, bootstrap=self.bootstrap, thresholds=self.thresholds
            )
        except LeaderboardError as exc:
            print(f"[adzoo] no leaderboard for {sweep_dir}: {exc}", flush=True)
            return
        print(f"\n{compact_table(rows)}\n\nleaderboard: {sweep_dir / 'leaderboard.md'} (.csv, .html)", flush=True)
        loggers = config.get("logger") or {}
        wandb_cfg = loggers.get("wandb")
        if wandb_cfg is not None:
            from adzoo.leaderboard.wandb_table import log_leaderboard

            run_file = log_leaderboard(
                rows,
                project=wandb_cfg.get("project", "adzoo"),
                group=str(config.get("sweep_name", "adhoc")),
                save_dir=sweep_dir,
                offline=bool(wandb_cfg.get("offline", True)),
            )
            print(f"leaderboard table logged to wandb: {run_file}", flush=True)
        mlflow_cfg = loggers.get("mlflow")
        if mlflow_cfg is not None:
            from adzoo.leaderboard.mlflow_table import log_leaderboard as log_mlflow_leaderboard

            run_id = log_mlflow_leaderboard(
                rows,
                tracking_uri=mlflow_cfg.tracking_uri,
                experiment_name=mlflow_cfg.get("experiment_name", "adzoo"),
                run_name=f"leaderboard-{config.get('sweep_name', 'adhoc')}",
                sweep_dir=sweep_dir,
                artifact_location=mlflow_cfg.get("artifact_location"),
            )
            print(f"leaderboard table logged to mlflow: run {run_id} in {mlflow_cfg.tracking_uri}", flush=True)
