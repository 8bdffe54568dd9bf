"""Log a leaderboard to wandb as a ``wandb.Table`` (offline by default; ``wandb sync`` uploads it later).

The table is the same as leaderboard.csv's main view, so the numbers on the wandb page are the numbers in the
run folders. It goes to its own run (job_type ``leaderboard``) in the sweep's group, beside the jobs' runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adzoo.leaderboard.collect import Row
from adzoo.leaderboard.render import main_table, pivot_table


def log_leaderboard(
    rows: Sequence[Row], project: str = "adzoo", group: str = "adhoc", save_dir: str | Path = ".", offline: bool = True
) -> Path:
    """Log the main table and the per-category image-AUROC pivot; returns the run's folder. Always finishes the run."""
    import wandb

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        group=group,
        job_type="leaderboard",
        name=f"leaderboard-{group}",
        dir=str(save_dir),
        mode="offline" if offline else "online",
        reinit="finish_previous",
    )
    exit_code = 1
    try:
        header, body = main_table(rows)
        pivot_header, pivot_body = pivot_table(rows, "image_auroc")
        run.log(
            {
                "leaderboard": wandb.Table(columns=header, data=body),
                "leaderboard_per_category/image_auroc": wandb.Table(columns=pivot_header, data=pivot_body),
            }
        )
        run.summary["leaderboard_rows"] = len(body)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)
    return Path(run.dir).parent
