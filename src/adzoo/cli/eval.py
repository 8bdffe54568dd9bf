"""``adzoo-eval ckpt_path=<run>/checkpoints/last.ckpt [same overrides as training]``: test a checkpoint."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from adzoo._config import config_dir, register_resolvers

register_resolvers()


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from adzoo.engine import run

    results = run(cfg, evaluate_only=True)
    return None if results is None else results["metrics"]["mean"].get("image_auroc")


if __name__ == "__main__":
    sys.exit(main())
