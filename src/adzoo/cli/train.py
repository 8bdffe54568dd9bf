"""``adzoo-train``: compose method × data × backbone × trainer × logger with Hydra, train, test, write results.

Examples::

    adzoo-train                                   # patchknn on the generated default set
    adzoo-train method=patchknn data=mvtec data.root=/data/mvtec_anomaly_detection data.setting=separate
    adzoo-train -m data.setting=unified,separate  # a sweep; finished runs are skipped on rerun
    adzoo-train --cfg job                         # print the composed config

A config mistake prints one line (``adzoo-train: error: ...``) and exits with status 2;
``HYDRA_FULL_ERROR=1`` shows its full traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from adzoo._config import config_dir, register_resolvers
from adzoo.config_checks import validate_config
from adzoo.errors import run_app
from adzoo.utils.quiet import quiet

log = logging.getLogger("adzoo")
register_resolvers()


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    quiet(bool(cfg.get("verbose", False)))  # before torch and Lightning say anything
    validate_config(cfg)  # before importing torch: a typo is reported in a second, not after the imports
    from adzoo.engine import run

    results = run(cfg)
    if results is None:
        return None
    if "objective" in (results.get("search") or {}):  # a search trial: the sweeper maximises its validation value
        return results["search"]["value"]
    return results["metrics"]["mean"].get("image_auroc")


def choices(group: str) -> str:
    """The options of a config group (conf/<group>/*.yaml), comma-separated."""
    return ", ".join(sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml")))


def usage(prog: str, summary: str, keys: dict[str, str], flags: dict[str, str]) -> str:
    """Plain-text ``--help`` for a Hydra app: the keys people set most, then the flags."""
    width = max(map(len, [*keys, *flags])) + 1
    lines = [f"usage: {prog} [flags] [key=value ...]", "", summary, "", "keys people set most (any config key works):"]
    lines += [f"  {key:<{width}}  {text}" for key, text in keys.items()]
    lines += ["", "flags:"] + [f"  {flag:<{width}}  {text}" for flag, text in flags.items()]
    return "\n".join(lines)


KEYS = {
    "method=": f"which method ({choices('method')}; default patchknn)",
    "data=": f"which data set ({choices('data')}; default synthetic)",
    "backbone=": f"feature extractor ({choices('backbone')}; default tf_efficientnet_lite0, packaged offline)",
    "data.root=": "the data set's folder (MVTec layout for data=mvtec/folder; root variables MVTEC_ROOT, ...)",
    "data.categories=": "[a,b]: only these categories (default: all)",
    "data.setting=": "unified (one model for all categories, default) or separate (one per category)",
    "paths.log_dir=": "where run folders go (default logs/, or $ADZOO_LOG_DIR)",
    "torch_threads=": "CPU threads per run; 1 on a machine shared with other jobs",
    "seed=": "random seed (default 0); part of the run's identity",
    "trainer=": f"{choices('trainer')} (trainer=debug: a few batches, to check a method runs)",
    "logger=": f"{choices('logger')} (default csv)",
    "sweep=": f"a named sweep, with -m: {choices('sweep')}",
    "experiment=": "a named profile from conf/experiment/ (e.g. demo_uniad, uniad_paper_mvtec)",
    "ckpt_path=last": "resume a killed run from its last checkpoint",
    "force=true": "rerun even when the run folder holds a complete result",
    "verbose=true": "show every warning and Lightning's info lines",
}
FLAGS = {
    "-m": "multirun: comma-separated values sweep (method=patchknn,cap), one run folder each",
    "--cfg job": "print the composed config and exit",
    "--hydra-help": "Hydra's own help (launchers, logging, config search path)",
    "-h, --help": "this help",
}
SUMMARY = (
    "Trains and tests one anomaly-detection method on one data set (per category or unified) and writes "
    "results.json, predictions.csv, checkpoints and logs into a run folder named after the config. A finished "
    "run is skipped on rerun. Examples: adzoo-train data=mvtec data.root=/data/mvtec_anomaly_detection; "
    "adzoo-train -m sweep=seeds; HYDRA_FULL_ERROR=1 shows the full traceback of an error."
)


def wants_help(args: list[str]) -> bool:
    return any(token in ("-h", "--help") for token in args)


def main() -> int:
    """Console entry point: Hydra's app, with user mistakes reported in one line; ``--help`` in plain text."""
    if wants_help(sys.argv[1:]):
        print(usage("adzoo-train", SUMMARY, KEYS, FLAGS))
        return 0
    return run_app(app, "adzoo-train")


if __name__ == "__main__":
    sys.exit(main())
