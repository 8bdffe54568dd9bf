"""The experiment loggers of a run (``conf/logger/*``): built per trained model, closed even when the run fails.

Lightning's loggers disagree on how a run is named (``version`` for CSV/TensorBoard, ``name`` for wandb,
``run_name`` for MLflow), so the per-model label (``unified`` or the category) is passed the way each one expects.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

# The argument that names a logger's run, by a word of its ``_target_``; every other logger takes ``version``.
RUN_NAME_ARGS = {"wandb": "name", "mlflow": "run_name"}
# Loggers whose runs carry a status (matched in the class name): finished as failed when the job fails.
STATUS_LOGGERS = ("Wandb", "MLFlow")


def local_mlflow() -> ModuleType:
    """Import mlflow with its usage telemetry off, so nothing leaves the machine.

    mlflow 3 posts usage events to mlflow.org unless ``MLFLOW_DISABLE_TELEMETRY`` is set; an explicit value
    wins. mlflow decides at import, so it is told again in case something imported it first.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.telemetry import set_telemetry_client

    set_telemetry_client()
    return mlflow


def _model_args(logger_cfg: DictConfig, name: str, label: str) -> dict[str, Any]:
    """The arguments that tell one logger which model (``label``) it logs."""
    target = str(logger_cfg._target_).lower()
    arg = next((arg for word, arg in RUN_NAME_ARGS.items() if word in target), None)
    if arg is None:
        return {"version": label}
    args: dict[str, Any] = {} if label == "unified" else {arg: f"{logger_cfg.get(arg, name)}-{label}"}
    if "mlflow" in target:
        local_mlflow()
        if isinstance(logger_cfg.get("tags"), ListConfig):  # MLflow tags are key/value pairs: a label is a key
            args["tags"] = {str(tag): "true" for tag in logger_cfg.tags}
    return args


def build_loggers(cfg: DictConfig, version: str) -> list[Any]:
    """Instantiate every configured logger for the model labelled ``version``."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        # A plain dict, so an argument may change type (MLflow's tags: a list in the config, a dict for MLflow).
        node = {**OmegaConf.to_container(logger_cfg, resolve=True), **_model_args(logger_cfg, str(name), version)}
        loggers.append(instantiate(node))
    return loggers


def close_loggers(loggers: list[Any], failed: bool) -> None:
    """Finish wandb and MLflow runs even when the job fails, marked failed, so no run is left open or "running"."""
    status = "failed" if failed else "success"
    for logger in loggers:
        kind = type(logger).__name__
        if any(word in kind for word in STATUS_LOGGERS):
            try:
                logger.finalize(status)
            except Exception as exc:  # closing must not hide the job's own error
                log.warning("could not finalize the %s run as %s: %s", kind, status, exc)
        if "Wandb" in kind:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)
