"""The base LightningModule: shared eval/predict steps, optimiser wiring and the frozen-feature cache.

A method subclasses :class:`AnomalyModule`, builds its pure-torch model in ``__init__`` and writes
``training_step``; everything the metric callback needs comes from :meth:`eval_step`.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from adzoo.models.output import AnomalyOutput

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss becomes NaN or infinite, naming where."""


class AnomalyModule(pl.LightningModule):
    """Base for every method. Subclasses set ``self.model`` (an ``nn.Module`` returning AnomalyOutput)."""

    #: methods that fit once (memory banks, statistics) instead of optimising with gradients
    fits_once: bool = False
    model: nn.Module

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        feature_cache: bool = True,
        name: str | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.use_feature_cache = feature_cache
        #: ``model.compile``: torch.compile the trained parts of ``self.model`` (see :meth:`compile_trained_parts`)
        self.compile_model = bool(compile)
        self._compiled = False
        self.method_name = name or type(self).__name__.lower()
        self._feature_cache = None
        #: the decision rule fitted on the validation split (adzoo.thresholds.Decision.to_dict()); the checkpoint
        #: carries it, so a deployed or re-tested model decides as the run did
        self.decision: dict[str, Any] | None = None
        if self.fits_once:
            self.automatic_optimization = False

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from adzoo.thresholds import CHECKPOINT_KEY

        if self.decision is not None:
            checkpoint[CHECKPOINT_KEY] = dict(self.decision)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from adzoo.thresholds import CHECKPOINT_KEY

        self.decision = checkpoint.get(CHECKPOINT_KEY)

    def configure_model(self) -> None:
        if self.compile_model and not self._compiled:
            self._compiled = True
            self.compile_trained_parts()

    def compile_trained_parts(self) -> list[str]:
        """``model.compile=true``: compile, in place (``nn.Module.compile``, so state-dict keys do not change),
        every direct child of ``self.model`` that has trainable parameters. The frozen backbone is left alone:
        its features are computed once and cached. Returns the names compiled.

        Where torch.compile cannot run (no C++ compiler for the CPU backend, or an op it cannot trace), the
        run goes on eagerly with one warning: nothing about the results depends on the switch."""
        compiler = next((c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)), None)
        if self.device.type == "cpu" and compiler is None:
            log.warning("model.compile=true: no C++ compiler (g++, clang++) for torch.compile's CPU backend; eager")
            return []
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True  # a graph torch.compile cannot build runs eagerly instead
        names = [
            name for name, child in self.model.named_children() if any(p.requires_grad for p in child.parameters())
        ]
        for name in names:
            getattr(self.model, name).compile()
        log.info("model.compile=true: compiled %s", ", ".join(names) if names else "nothing (no trainable part)")
        return names

    # -- features -------------------------------------------------------------------------------------
    def extract(self, backbone: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features, computed once per image when the backbone is frozen and caching is on."""
        frozen = not any(p.requires_grad for p in backbone.parameters())
        if not (self.use_feature_cache and frozen):
            return backbone(images)
        if self._feature_cache is None:
            from adzoo.backbones import FeatureCache

            object.__setattr__(self, "_feature_cache", FeatureCache(backbone))
        return self._feature_cache(images)

    # -- steps ----------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        return self.model(images)

    def check_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Stop at once on a NaN/inf loss, naming method, epoch and step (nothing is written as a result)."""
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"{self.method_name}: non-finite loss {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}"
            )
        return loss

    def eval_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        output = self(batch["image"])
        anomaly_map = output.anomaly_map
        if anomaly_map.shape[-2:] != batch["image"].shape[-2:]:
            raise ValueError(
                f"{self.method_name}: anomaly map {tuple(anomaly_map.shape[-2:])} is not at input resolution "
                f"{tuple(batch['image'].shape[-2:])}"
            )
        return {
            "pred_score": output.pred_score.detach(),
            "anomaly_map": anomaly_map.detach(),
            "label": batch["label"],
            "mask": batch["mask"],
            "category": batch["category"],
            "path": batch["path"],
            "has_mask": batch["has_mask"],
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.eval_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.eval_step(batch)

    # -- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.fits_once or self.optimizer_factory is None:
            return None
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        factory = self.scheduler_factory
        if _accepts(factory, "total_steps") and getattr(factory, "keywords", {}).get("total_steps") is None:
            # Step-counted schedules (adzoo.utils.schedules) learn the run's length from the trainer.
            scheduler = factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        else:
            scheduler = factory(optimizer=optimizer)
        interval = getattr(scheduler, "interval", "epoch")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable, "frozen": total - trainable}


def _accepts(factory: Any, name: str) -> bool:
    """Whether a scheduler factory (a class or a functools.partial of one) takes the keyword ``name``."""
    target = getattr(factory, "func", factory)
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
