"""Progress output that suits where it goes: Lightning's rich bar in a terminal, one plain line per epoch and per
evaluation pass elsewhere (CI, ``make demo > log``), where a bar's carriage-return redraws grew a demo log to
250 KB. Neither shows ``v_num``, which with a run-named logger is a meaningless fragment of the run name.

Every variant also picks ``trainer.log_every_n_steps`` from the number of training batches: with fewer batches per
epoch than the interval, Lightning would log no training step at all (and warn about it).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar


class LogCadence(pl.Callback):
    """``log_every_n_steps`` lowered to the number of training batches per epoch when that is smaller."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or trainer.limit_train_batches == 0:
            return
        configured = trainer.log_every_n_steps
        trainer.log_every_n_steps = 1  # loading the train loader early (as estimated_stepping_batches does) now
        try:
            trainer.fit_loop.setup_data()
        finally:
            trainer.log_every_n_steps = configured
        batches = trainer.num_training_batches
        if isinstance(batches, int) and 0 < batches < configured:
            trainer.log_every_n_steps = batches


def _without_version(metrics: dict[str, Any]) -> dict[str, Any]:
    metrics.pop("v_num", None)
    return metrics


class RichBar(LogCadence, RichProgressBar):
    """Lightning's rich bar for terminals, without ``v_num``."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


def _format(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineProgress(LogCadence, ProgressBar):
    """One plain line per training epoch and per validation, test or predict pass, written when it ends."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started: dict[str, float] = {}
        self._batches: dict[str, int] = {}

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _start(self, stage: str) -> None:
        self._started[stage] = time.perf_counter()
        self._batches[stage] = 0

    def _count(self, stage: str) -> None:
        self._batches[stage] = self._batches.get(stage, 0) + 1

    def _line(self, text: str, stage: str) -> None:
        if self._enabled:
            seconds = time.perf_counter() - self._started.get(stage, time.perf_counter())
            batches = self._batches.get(stage, 0)
            print(f"{text}: {batches} batch{'es' * (batches != 1)} in {seconds:.1f}s", end="", flush=False)
            metrics = self.get_metrics(self.trainer, self.trainer.lightning_module) if stage == "train" else {}
            shown = ", ".join(f"{k} {_format(v)}" for k, v in metrics.items())
            print(f", {shown}" if shown else "", flush=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("train")

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._count("train")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", "train")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start("validation")

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._count("validation")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._line("validation", "validation")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("test")

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._count("test")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line("test", "test")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("predict")

    def on_predict_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._count("predict")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._line("predict", "predict")


class ProgressOutput(pl.Callback):
    """The config's progress callback (a class, so saved run configs pass :mod:`adzoo.safe_load`): constructing it
    gives :class:`RichBar` when stdout is a terminal, :class:`LineProgress` otherwise, and only
    :class:`LogCadence` when ``trainer.enable_progress_bar=false`` (Lightning refuses a progress bar callback
    then). ``terminal`` overrides the ``sys.stdout.isatty()`` test."""

    def __new__(cls, enabled: bool = True, terminal: bool | None = None) -> pl.Callback:  # type: ignore[misc]
        if not enabled:
            return LogCadence()
        if terminal is None:
            terminal = sys.stdout.isatty()
        return RichBar() if terminal else LineProgress()
