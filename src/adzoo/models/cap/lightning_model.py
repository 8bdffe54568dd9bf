"""Thin LightningModule for CAP: features and neighbours are computed once, then training is matrix algebra.

Design. CAP has no augmentation and a frozen backbone, so every quantity the loss needs is fixed before the
first step. ``on_fit_start`` passes once over ``datamodule.fit_once_dataloader()`` (training images in a fixed
order), pools the features, gathers them across DDP ranks (so every rank holds the same bank), fills the bank
and computes each entry's K neighbours with its own row excluded by index. The Trainer then runs its ordinary
epochs over the datamodule's shuffled training loader, so batch size, epochs, DDP sharding, optimiser and
scheduler are all the configured ones; a batch only contributes its ``path`` strings, which name the rows of
the precomputed tables (the images it carries never go through the backbone again). A training step is one
D×D projection, a K×K attention and the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from adzoo.models.base import AnomalyModule, OptimizerFactory, SchedulerFactory
from adzoo.models.cap.torch_model import CONSTRAINT_DISTANCES, CAPModel, cap_loss
from adzoo.models.components import BankOptions
from adzoo.models.output import AnomalyOutput
from adzoo.utils.distributed import gather_cat, gather_objects

log = logging.getLogger(__name__)


class CAP(AnomalyModule):
    """CAP (Gui et al., IJCAI 2022). ``constraint_weight`` is λ of Eq. 7; ``adaptation``/``attention`` switch the
    paper's ablations off (Tables 1-2); ``map_vector`` picks the normal vector of the localisation map."""

    def __init__(
        self,
        backbone: nn.Module,
        k: int = 4,
        constraint_weight: float = 0.1,
        attention: bool = True,
        adaptation: bool = True,
        map_vector: str = "pretrained",
        constraint_distance: str = "mse",
        use_gpu_index: bool = True,
        bank: BankOptions | Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        feature_cache: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            optimizer=optimizer, scheduler=scheduler, feature_cache=feature_cache, name="cap", compile=compile
        )
        bank = BankOptions.from_config(bank).to_dict()  # checked, and plain values for the checkpoint
        if constraint_distance not in CONSTRAINT_DISTANCES:
            raise ValueError(f"constraint_distance must be one of {CONSTRAINT_DISTANCES}, got {constraint_distance!r}")
        if constraint_weight < 0:
            raise ValueError(f"constraint_weight (λ) must be >= 0, got {constraint_weight}")
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.model = CAPModel(
            backbone,
            k=k,
            attention=attention,
            adaptation=adaptation,
            map_vector=map_vector,
            use_gpu_index=use_gpu_index,
            bank_options=bank,
        )
        self.constraint_weight = float(constraint_weight)
        self.constraint_distance = constraint_distance
        # Without adaptation there is nothing to optimise: the epochs run but steps do nothing.
        self.automatic_optimization = adaptation
        self._rows: dict[str, int] = {}
        self._train_features: torch.Tensor | None = None  # every training image's z (the bank may be a coreset)
        self._train_neighbours: torch.Tensor | None = None

    # -- the one pass before training -----------------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "fit_once_dataloader"):
            raise RuntimeError(
                "CAP builds its memory bank from datamodule.fit_once_dataloader(): fit it with an adzoo datamodule"
            )
        features, paths = self.pooled_features(datamodule.fit_once_dataloader())
        self.fit_bank(features, paths)

    @torch.no_grad()
    def pooled_features(self, loader: Any) -> tuple[torch.Tensor, list[str]]:
        """Pooled pretrained features and paths of every training image, gathered over DDP ranks in rank order."""
        local: list[torch.Tensor] = []
        local_paths: list[str] = []
        for batch in loader:
            z, _ = self.model.pool(self.extract(self.model.backbone, batch["image"].to(self.device)))
            local.append(z.cpu())
            local_paths.extend(batch["path"])
        features = gather_cat(torch.cat(local))
        paths = [p for part in gather_objects(local_paths) for p in part]
        return features.to(self.device), paths

    def fit_bank(self, features: torch.Tensor, paths: list[str]) -> None:
        """Fill the bank and, when there is something to train, the self-excluded neighbour table."""
        if len(paths) != len(features):
            raise ValueError(f"{len(paths)} paths for {len(features)} features")
        kept = self.model.fit(features)
        # A path listed twice keeps its last row; the twin row has identical features and stays a neighbour.
        self._rows = {path: row for row, path in enumerate(paths)}
        self._train_features = features.detach().float()
        adapting = self.model.head.adaptation
        self._train_neighbours = self.model.training_neighbours(self._train_features, kept) if adapting else None
        log.info("cap: memory bank of %d of %d features (D=%d), K=%d", len(kept), len(features), features.shape[1],
                 self.model.k)  # fmt: skip

    # -- training -------------------------------------------------------------------------------------
    def rows_of(self, paths: list[str]) -> torch.Tensor:
        try:
            rows = [self._rows[p] for p in paths]
        except KeyError as exc:
            raise KeyError(f"cap: training image {exc} is not in the memory bank built in on_fit_start") from exc
        return torch.as_tensor(rows, device=self._train_features.device)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self._train_neighbours is None:
            return None
        rows = self.rows_of(list(batch["path"]))
        z = self._train_features[rows]
        neighbours = self.model.bank[self._train_neighbours[rows]]
        out = self.model.head(z, neighbours)
        losses = cap_loss(z, out.z_hat, out.normal_hat, self.constraint_weight, self.constraint_distance)
        self.log_dict(
            {f"train/{name}": value.detach() for name, value in losses.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=False,
            batch_size=len(rows),
        )
        return self.check_loss(losses["loss"])

    def on_train_epoch_end(self) -> None:
        projection = self.model.head.projection
        if projection is not None:  # the Proposition's collapse would show here first
            self.log("train/projection_norm", projection.weight.detach().norm(), rank_zero_only=True)

    def configure_optimizers(self) -> Any:
        if not any(p.requires_grad for p in self.parameters()):
            return None
        return super().configure_optimizers()

    # -- inference ------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        features = self.extract(self.model.backbone, images)
        return self.model.score_features(features, tuple(images.shape[-2:]))
