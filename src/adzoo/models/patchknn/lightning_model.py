"""Thin LightningModule for patch kNN / PatchCore: one pass over the training images streams patches into the
memory bank; at the epoch's end the bank keeps them (or their coreset) and builds its index."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from adzoo.errors import ConfigError
from adzoo.models.base import AnomalyModule
from adzoo.models.components import BankOptions
from adzoo.models.components.memory_bank import BankFill
from adzoo.models.output import AnomalyOutput
from adzoo.models.patchknn.torch_model import PatchKNNModel


class PatchKNN(AnomalyModule):
    """``method=patchknn`` (exact reference) and ``method=patchcore`` (its paper defaults): see torch_model."""

    fits_once = True

    def __init__(
        self,
        backbone: nn.Module,
        neighbourhood: int = 3,
        k: int = 1,
        reweight_neighbours: int = 0,
        blur_sigma: float = 0.0,
        bank: BankOptions | Mapping[str, Any] | None = None,
        name: str = "patchknn",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        bank = BankOptions.from_config(bank).to_dict()  # checked, and plain values for the checkpoint
        self.save_hyperparameters(ignore=["backbone"])
        self.model = PatchKNNModel(
            backbone,
            neighbourhood=neighbourhood,
            k=k,
            reweight_neighbours=reweight_neighbours,
            blur_sigma=blur_sigma,
            bank=bank,
        )
        self._fill: BankFill | None = None

    def on_train_epoch_start(self) -> None:
        self._fill = self.model.memory_bank.start_fill()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        embedding = self.model.embed(self.extract(self.model.backbone, batch["image"]))
        if batch_idx == 0:  # the fill's size is known now: refuse a bank that cannot fit before it grows
            images = len(getattr(getattr(self.trainer, "datamodule", None), "train_set", ()))
            if images:
                self._fill.expect(images * embedding.shape[-2] * embedding.shape[-1], embedding.shape[1])
        self._fill.add(self.model.patches(embedding))

    def on_train_epoch_end(self) -> None:
        fill, self._fill = self._fill, None
        fill.gather()
        bank = self.model.memory_bank.options.kept(fill.rows)
        if self.model.k > bank:  # found here, before the whole test set fails in the first search
            raise ConfigError(
                f"model.k={self.model.k} is larger than the memory bank ({bank} patches); lower model.k"
                + ("" if not self.model.memory_bank.options.subsamples else " or raise bank.coreset_ratio")
            )
        fill.finish(self.device)
        self.log("train/memory_bank_size", float(len(self.model.memory_bank)), rank_zero_only=True)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        embedding = self.model.embed(self.extract(self.model.backbone, images))
        return self.model.score_embeddings(embedding, tuple(images.shape[-2:]))
