"""Cheap checks of a composed config, run before any data is read or model built.

A mistake found after an hour of training (or deep inside torch with a shape error) costs the user the hour and
the diagnosis; these checks cost microseconds and raise :class:`~adzoo.errors.ConfigError` naming the key.
Checks that need the data or the model (k against the memory bank, a neighbour mask against the token grid)
live where those are known, and raise the same error type.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from adzoo.errors import ConfigError

#: config keys under which a run writes files (loggers, callbacks, the trainer)
WRITE_KEYS = frozenset({"default_root_dir", "save_dir", "dirpath", "output_dir", "log_dir", "dir"})
WRITE_SECTIONS = ("trainer", "logger", "callbacks")


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _require_int(cfg: DictConfig, key: str, minimum: int, *, optional: bool = False, what: str = "") -> int | None:
    value = _select(cfg, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = what or ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        raise ConfigError(f"{key}={value!r} must be {expected}")
    return value


def validate_config(cfg: DictConfig) -> None:
    """Reject values that cannot work, each with a one-line message naming the key."""
    image_size = _require_int(cfg, "data.image_size", 1)
    stride = _select(cfg, "model.feature_stride")
    if isinstance(stride, int) and stride > 0 and image_size % stride:
        raise ConfigError(
            f"data.image_size={image_size} must be a positive multiple of model.feature_stride={stride} "
            f"(e.g. {max(stride, round(image_size / stride) * stride)})"
        )
    _require_int(cfg, "data.batch_size", 1)
    _require_int(cfg, "data.eval_batch_size", 1, optional=True)
    if _select(cfg, "data.num_workers") != "auto":
        _require_int(cfg, "data.num_workers", 0, optional=True, what="auto or an integer >= 0")
    _require_int(cfg, "torch_threads", 1, optional=True)
    objective = _select(cfg, "search.objective")
    if objective is not None:
        from adzoo.search.objective import check_objective

        val_fraction = float(_select(cfg, "data.val_fraction") or 0)
        check_objective(objective, val_fraction, str(_select(cfg, "data.val_anomalies")))
    _require_int(cfg, "seed", 0, what="an integer in [0, 2**32 - 1]")
    if cfg.seed > 2**32 - 1:
        raise ConfigError(f"seed={cfg.seed} must be an integer in [0, 2**32 - 1]")
    max_epochs = _select(cfg, "trainer.max_epochs")
    if max_epochs == -1:
        max_steps = _select(cfg, "trainer.max_steps")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps <= 0:
            raise ConfigError(
                "trainer.max_epochs=-1 trains forever without a positive trainer.max_steps; set one of them"
            )
    elif max_epochs is not None:
        _require_int(cfg, "trainer.max_epochs", 1, what="a positive integer (or -1 with trainer.max_steps)")
    if _select(cfg, "trainer.fast_dev_run") not in (None, False, 0):
        # It skips the epoch-end hooks that fill memory banks and fit Gaussians, and writes no checkpoint.
        raise ConfigError(
            "trainer.fast_dev_run is not supported (fit-once methods need their epoch-end hooks); for a smoke run "
            "use trainer.max_epochs=1 trainer.limit_train_batches=1 trainer.limit_test_batches=1"
        )
    for key in ("model.k", "model.neighbourhood", "model.neighbour_mask_size"):
        _require_int(cfg, key, 1, optional=True)
    bank = _select(cfg, "model.bank")
    if bank is not None:  # the memory bank's options (coreset ratio, search, storage) named as bank.<key>
        from adzoo.models.components.memory_bank import BankOptions

        BankOptions.from_config(bank)
    for key in ("model.optimizer.lr", "model.constraint_weight"):
        value = _select(cfg, key)
        if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
            raise ConfigError(f"{key}={value!r} must be a finite number >= 0")
    if not cfg.get("allow_external_paths", False):
        check_paths_inside(cfg)


def _write_paths(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, DictConfig):
        for key in node:
            value = _select(node, str(key))
            if str(key) in WRITE_KEYS and isinstance(value, str | Path):
                yield f"{prefix}.{key}", str(value)
            elif isinstance(value, DictConfig | ListConfig):
                yield from _write_paths(value, f"{prefix}.{key}")


def check_paths_inside(cfg: DictConfig) -> None:
    """Every folder the run writes to must lie inside ``paths.output_dir``, so a config (a shared experiment
    file, a typo like ``../..``) cannot scatter or overwrite files elsewhere; ``allow_external_paths=true`` opts
    out."""
    run_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    targets: list[tuple[str, str]] = []
    for section in WRITE_SECTIONS:
        node = cfg.get(section)
        targets += list(_write_paths(node, section)) if node is not None else []
    targets += list(_logger_folders(cfg))
    for key, value in targets:
        target = Path(value).expanduser().resolve()
        if target != run_dir and run_dir not in target.parents:
            raise ConfigError(
                f"{key}={value} writes outside the run folder {run_dir}; point it inside, or set "
                "allow_external_paths=true"
            )


def _logger_folders(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """A logger writes to ``save_dir/name/version``: ``name=../../..`` escapes a save_dir that is inside."""
    loggers = cfg.get("logger")
    if not isinstance(loggers, DictConfig):
        return
    for logger_name in loggers:
        node = _select(loggers, str(logger_name))
        if not isinstance(node, DictConfig) or "wandb" in str(_select(node, "_target_")).lower():
            continue  # a wandb run's name is a label, not a folder
        save_dir = _select(node, "save_dir") or _select(node, "dir") or cfg.paths.output_dir
        folder = Path(str(save_dir))
        for part in ("name", "version"):
            value = _select(node, part)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                folder = folder / str(value)
                yield f"logger.{logger_name}.{part}", str(folder)
