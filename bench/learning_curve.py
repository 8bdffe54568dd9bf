"""Learning curve of a finished run: the test metrics of each kept checkpoint against its optimiser step.

Issue 13 asks for the metric against optimiser steps, out to the plateau. Train once keeping every k-th
epoch's weights, then score each of them through ``adzoo-eval`` (the real evaluation path):

    .venv/bin/adzoo-train method=uniad data=mvtec_like data.source.seed=1 \
        trainer.max_epochs=40 callbacks.checkpoint.save_top_k=-1 callbacks.checkpoint.every_n_epochs=8
    .venv/bin/python bench/learning_curve.py logs/runs/latest [--threads 2] [--csv curve.csv]

A run's schedule is set by its own length (warm-up, then lr ×γ after 80 % of the steps), so the points
before the decay are the constant-lr part of that one run, not shorter runs. Each eval writes its own folder
under ``<run>/../../evals/curve-<run>-<epoch>``; the run folder itself is never written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from adzoo.utils.checkpoint import load_checkpoint

METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")  # keys of results.json, reported in %


def epoch_index(ckpt: Path) -> int:
    """The zero-based epoch in an ``epochNNN.ckpt`` name."""
    return int(re.sub(r"\D", "", ckpt.stem))


def checkpoints(run: Path) -> list[Path]:
    """The run's ``epochNNN.ckpt`` files, oldest first (``last.ckpt`` is a link to one of them)."""
    found = sorted((run / "checkpoints").glob("epoch*.ckpt"), key=epoch_index)
    if not found:
        raise SystemExit(
            f"{run}/checkpoints holds no epochNNN.ckpt; train with callbacks.checkpoint.save_top_k=-1 "
            "callbacks.checkpoint.every_n_epochs=K to keep a curve's worth of them"
        )
    return found


def global_step(ckpt: Path) -> int:
    """Optimiser steps taken when the checkpoint was written (Lightning stores it)."""
    return int(load_checkpoint(ckpt)["global_step"])


def evaluate(ckpt: Path, out_dir: Path, threads: int) -> dict[str, float]:
    """Score one checkpoint with ``adzoo-eval`` into ``out_dir``; return the mean-of-categories metrics in %."""
    results = out_dir / "results.json"
    if not results.exists():  # a curve interrupted half-way resumes at the first checkpoint not yet scored
        adzoo_eval = Path(sys.executable).with_name("adzoo-eval")
        command = [str(adzoo_eval), f"ckpt_path={ckpt}", f"hydra.run.dir={out_dir}", f"torch_threads={threads}"]
        command += ["print_table=false"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    mean = json.loads(results.read_text())["metrics"]["mean"]
    return {name: 100.0 * float(mean[name]) for name in METRICS if name in mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished adzoo-train run folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for each eval")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    args = parser.parse_args()
    run = args.run.resolve()
    evals = run.parent.parent / "evals"
    rows = []
    print(f"{'epoch':>5} {'step':>6} " + " ".join(f"{m:>12}" for m in METRICS), flush=True)
    for ckpt in checkpoints(run):
        scores = evaluate(ckpt, evals / f"curve-{run.name}-{ckpt.stem}", args.threads)
        row = {"epoch": epoch_index(ckpt) + 1, "step": global_step(ckpt), **scores}
        rows.append(row)
        print(f"{row['epoch']:>5} {row['step']:>6} " + " ".join(f"{row.get(m, float('nan')):>12.2f}" for m in METRICS))
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["epoch", "step", *METRICS])
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
