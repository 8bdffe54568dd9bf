"""``adzoo-eval ckpt_path=<run folder or .ckpt> [overrides]``: test a trained run's checkpoint again.

The method, model, backbone and data come from the run's own results.json (allow-listed targets only), so no
training override needs repeating; overrides given here (``data.categories=[pill]``) apply to this eval only.
It writes into its own folder under ``<log_dir>/evals/``, never into the training run's. A config mistake
prints one line (``adzoo-eval: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from adzoo._config import config_dir, register_resolvers
from adzoo.cli.train import FLAGS, usage, wants_help
from adzoo.config_checks import validate_config
from adzoo.errors import run_app
from adzoo.utils.quiet import quiet

register_resolvers()


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    quiet(bool(cfg.get("verbose", False)))  # before torch and Lightning say anything
    from adzoo.run_identity import eval_config

    try:
        cfg = eval_config(cfg)
    except Exception:
        _remove_unresolved_folder()
        raise
    validate_config(cfg)  # before importing torch: a typo is reported in a second, not after the imports
    from adzoo.engine import run

    results = run(cfg, evaluate_only=True)
    return None if results is None else results["metrics"]["mean"].get("image_auroc")


def _remove_unresolved_folder() -> None:
    """Hydra made the eval's folder before the app could say that ``ckpt_path`` is wrong: leave no empty husk."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    folder = Path(HydraConfig.get().runtime.output_dir)
    if folder.name.startswith("unresolved-") and not (folder / "results.json").exists():
        shutil.rmtree(folder, ignore_errors=True)


KEYS = {
    "ckpt_path=": "run folder written by adzoo-train, or a checkpoint in it; logs/runs/latest: the newest (required)",
    "data.categories=": "[a,b]: test on these categories only",
    "data=": "another data set of the same categories (with data.root=)",
    "data.root=": "where that data set is",
    "paths.log_dir=": "where the eval folder goes: <log_dir>/evals/ (default logs/)",
    "torch_threads=": "CPU threads; 1 on a machine shared with other jobs",
    "logger=": "csv (default), tensorboard, wandb, mlflow, many",
    "verbose=true": "show every warning and Lightning's info lines",
}
SUMMARY = (
    "Tests a trained run's checkpoint again. The method, model, backbone and data come from the run's own "
    "results.json, so no training key needs repeating; keys given here change this eval only. It writes into its "
    "own folder under <log_dir>/evals/, never into the training run's."
)


def main() -> int:
    """Console entry point: Hydra's app, with user mistakes reported in one line; ``--help`` in plain text."""
    if wants_help(sys.argv[1:]):
        print(usage("adzoo-eval", SUMMARY, KEYS, {k: v for k, v in FLAGS.items() if k != "--hydra-help"}))
        return 0
    return run_app(app, "adzoo-eval")


if __name__ == "__main__":
    sys.exit(main())
