"""Thin LightningModule for patch kNN: one pass over the training images fills the memory bank."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adzoo.errors import ConfigError
from adzoo.models.base import AnomalyModule
from adzoo.models.output import AnomalyOutput
from adzoo.models.patchknn.torch_model import PatchKNNModel
from adzoo.utils.distributed import gather_cat


class PatchKNN(AnomalyModule):
    fits_once = True

    def __init__(
        self,
        backbone: nn.Module,
        neighbourhood: int = 3,
        k: int = 1,
        bank_size: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name="patchknn", **kwargs)
        self.save_hyperparameters(ignore=["backbone"])
        self.model = PatchKNNModel(backbone, neighbourhood=neighbourhood, k=k, bank_size=bank_size)
        self.seed = seed
        self._embeddings: list[torch.Tensor] = []

    def on_train_epoch_start(self) -> None:
        self._embeddings = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        embedding = self.model.embed(self.extract(self.model.backbone, batch["image"]))
        self._embeddings.append(embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]).cpu())

    def on_train_epoch_end(self) -> None:
        embeddings = gather_cat(torch.cat(self._embeddings))
        bank = min(len(embeddings), self.model.bank_size or len(embeddings))
        if self.model.k > bank:  # found here, before the whole test set fails in the first search
            raise ConfigError(
                f"model.k={self.model.k} is larger than the memory bank ({bank} patches); lower model.k"
                + ("" if self.model.bank_size is None else " or raise model.bank_size")
            )
        self.model.fit(embeddings, generator=torch.Generator().manual_seed(self.seed))
        self.model.memory_bank.to(self.device)
        self._embeddings = []
        self.log("train/memory_bank_size", float(len(self.model.memory_bank)), rank_zero_only=True)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        embedding = self.model.embed(self.extract(self.model.backbone, images))
        return self.model.score_embeddings(embedding, tuple(images.shape[-2:]))
