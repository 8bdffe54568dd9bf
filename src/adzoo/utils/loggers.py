"""The experiment loggers of a run (``conf/logger/*``): built per trained model, closed even when the run fails.

Lightning's loggers disagree on how a run is named (``version`` for CSV/TensorBoard, ``name`` for wandb), so the
per-model label (``unified`` or the category) is passed the way each one expects.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def build_loggers(cfg: DictConfig, version: str) -> list[Any]:
    """Instantiate every configured logger for the model labelled ``version``."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        extra = {} if "wandb" in str(logger_cfg._target_).lower() else {"version": version}
        if extra == {}:
            extra = {"name": f"{logger_cfg.get('name', name)}-{version}"} if version != "unified" else {}
        loggers.append(instantiate(logger_cfg, **extra))
    return loggers


def close_loggers(loggers: list[Any], failed: bool) -> None:
    """Finish wandb runs even when the job fails, marked failed, so no run is left open in the process."""
    for logger in loggers:
        if "Wandb" in type(logger).__name__:
            import wandb

            with contextlib.suppress(Exception):
                logger.finalize("failed" if failed else "success")
            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)
