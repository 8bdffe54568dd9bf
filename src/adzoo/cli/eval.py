"""``adzoo-eval ckpt_path=<run>/checkpoints/last.ckpt [same overrides as training]``: test a checkpoint.

A config mistake prints one line (``adzoo-eval: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from adzoo._config import config_dir, register_resolvers
from adzoo.config_checks import validate_config
from adzoo.errors import run_app

register_resolvers()


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    validate_config(cfg)  # before importing torch: a typo is reported in a second, not after the imports
    from adzoo.engine import run

    results = run(cfg, evaluate_only=True)
    return None if results is None else results["metrics"]["mean"].get("image_auroc")


def main() -> int:
    """Console entry point: Hydra's app, with user mistakes reported in one line."""
    return run_app(app, "adzoo-eval")


if __name__ == "__main__":
    sys.exit(main())
