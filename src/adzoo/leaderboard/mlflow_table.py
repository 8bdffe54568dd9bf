"""Log a leaderboard to MLflow as table artifacts, in the same local store as the sweep's job runs.

The tables are leaderboard.csv's main view and the per-category image-AUROC pivot (the wandb logger's two), so the
numbers in ``mlflow ui`` are the numbers in the run folders. They go to their own run (tag ``job_type=leaderboard``)
beside the jobs' runs, with the sweep's leaderboard.md as a text artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from adzoo.leaderboard.collect import Row
from adzoo.leaderboard.render import main_table, pivot_table
from adzoo.utils.loggers import local_mlflow

if TYPE_CHECKING:
    import pandas as pd


def _frame(header: list[str], body: list[list[str]]) -> pd.DataFrame:
    """A table as an object-dtype DataFrame: mlflow's str-column check warns on pandas 3's own string dtype."""
    import pandas as pd

    return pd.DataFrame(body, columns=header, dtype=object)


def log_leaderboard(
    rows: Sequence[Row],
    tracking_uri: str,
    experiment_name: str = "adzoo",
    run_name: str = "leaderboard",
    sweep_dir: str | Path | None = None,
    artifact_location: str | None = None,
) -> str:
    """Log the two tables (and ``sweep_dir/leaderboard.md`` when present) to a new run; returns its id.

    The run always ends: FINISHED, or FAILED when logging raised. ``artifact_location`` is used only when the
    experiment does not exist yet (the jobs' logger normally created it).
    """
    mlflow = local_mlflow()
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location)
    else:
        experiment_id = experiment.experiment_id
    run_id = client.create_run(experiment_id, run_name=run_name, tags={"job_type": "leaderboard"}).info.run_id
    status = "FAILED"
    try:
        header, body = main_table(rows)
        client.log_table(run_id, data=_frame(header, body), artifact_file="leaderboard.json")
        pivot_header, pivot_body = pivot_table(rows, "image_auroc")
        client.log_table(
            run_id, data=_frame(pivot_header, pivot_body), artifact_file="leaderboard_per_category/image_auroc.json"
        )
        client.log_metric(run_id, "leaderboard_rows", len(body))
        markdown = Path(sweep_dir) / "leaderboard.md" if sweep_dir is not None else None
        if markdown is not None and markdown.is_file():
            client.log_text(run_id, markdown.read_text(encoding="utf-8"), artifact_file="leaderboard.md")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return run_id
