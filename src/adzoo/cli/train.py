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


def main() -> int:
    """Console entry point: Hydra's app, with user mistakes reported in one line."""
    return run_app(app, "adzoo-train")


if __name__ == "__main__":
    sys.exit(main())
