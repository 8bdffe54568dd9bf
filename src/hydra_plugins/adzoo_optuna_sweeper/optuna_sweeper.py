"""``hydra/sweeper=optuna``: Hydra's entry point for :class:`adzoo.search.sweeper.OptunaSearch`.

Hydra imports every module of ``hydra_plugins`` when an app starts, so this one stays light: Optuna is imported
only when a search is configured.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hands every call to :class:`~adzoo.search.sweeper.OptunaSearch` (options: ``conf/hydra/sweeper/optuna.yaml``)."""

    def __init__(self, **options: Any) -> None:
        from adzoo.search.sweeper import OptunaSearch

        self.search = OptunaSearch(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
