"""``adzoo-leaderboard RUN_DIR... [--out DIR]``: a self-checked leaderboard from finished runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adzoo.leaderboard import LeaderboardError, build_leaderboard
from adzoo.leaderboard.render import main_table, markdown_table
from adzoo.leaderboard.stats import BootstrapConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adzoo-leaderboard",
        description="Collect results.json files below the given run or sweep folders, check that every mean "
        "matches its per-category values, aggregate seeds, bootstrap a confidence interval for every number "
        "from the runs' per-image artifacts, test rows on the same test images against each other, and "
        "write leaderboard.md, .csv, "
        ".html and plots.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, sweep folders or results.json files")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first RUN folder)")
    parser.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots and map gallery")
    parser.add_argument(
        "--wandb",
        metavar="PROJECT",
        default=None,
        help="also log the table to wandb (offline; wandb sync uploads it) in this project",
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument(
        "--ci-method",
        default="BCa",
        choices=("percentile", "BCa", "basic"),
        help="scipy bootstrap interval (default BCa)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="paired tests: '≈ best' at Holm-adjusted p >= alpha")
    parser.add_argument(
        "--thresholds",
        action="store_true",
        help="add the test metrics at each run's validation-fitted thresholds (FPR, TPR, precision, F1, IoU, "
        "Dice, PRO)",
    )
    parser.add_argument("--wandb-group", default="adhoc", help="wandb group of the leaderboard run (default: adhoc)")
    args = parser.parse_args(argv)
    out = args.out or (args.runs[0] if args.runs[0].is_dir() else args.runs[0].parent)
    try:
        bootstrap = BootstrapConfig(args.resamples, args.seed, args.confidence, args.ci_method, args.alpha)
        rows, _ = build_leaderboard(
            args.runs, out, plots=not args.no_plots, bootstrap=bootstrap, thresholds=args.thresholds
        )
    except LeaderboardError as exc:
        print(f"adzoo-leaderboard: refused: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(*main_table(rows, thresholds=args.thresholds)))
    print(f"\nwrote {out / 'leaderboard.md'}, .csv, .html ({len(rows)} rows)")
    if args.wandb:
        from adzoo.leaderboard.wandb_table import log_leaderboard

        print(f"wandb: {log_leaderboard(rows, project=args.wandb, group=args.wandb_group, save_dir=out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
