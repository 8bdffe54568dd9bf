"""Thin LightningModule for UniAD: MSE between the clean features and the reconstruction of jittered ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from adzoo.models.base import AnomalyModule
from adzoo.models.components import mse_loss
from adzoo.models.output import AnomalyOutput
from adzoo.models.uniad.torch_model import UniADModel


class UniAD(AnomalyModule):
    """UniAD on a frozen backbone. Jitter comes after the backbone, so the spine's feature cache is exact."""

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int | Sequence[int] = 224,
        feature_stride: int = 16,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        neighbour_mask: bool = True,
        neighbour_mask_size: int | Sequence[int] = 7,
        neighbour_mask_sites: Sequence[bool] = (True, True, True),
        layerwise_query: bool = True,
        feature_jitter: bool = True,
        jitter_scale: float = 20.0,
        jitter_prob: float = 1.0,
        score_mode: str = "max",
        pool_kernel: int = 16,
        align_mode: str = "bilinear",
        **kwargs: Any,
    ) -> None:
        super().__init__(name="uniad", **kwargs)
        # Plain Python types (not Hydra ListConfig) so checkpoints load with torch.load(weights_only=True).
        image_size = image_size if isinstance(image_size, int) else [int(s) for s in image_size]
        neighbour_mask_size = (
            neighbour_mask_size if isinstance(neighbour_mask_size, int) else [int(s) for s in neighbour_mask_size]
        )
        neighbour_mask_sites = [bool(s) for s in neighbour_mask_sites]
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.model = UniADModel(
            backbone,
            image_size=image_size,
            feature_stride=feature_stride,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            activation=activation,
            neighbour_mask=neighbour_mask,
            neighbour_mask_size=neighbour_mask_size,
            neighbour_mask_sites=neighbour_mask_sites,
            layerwise_query=layerwise_query,
            feature_jitter=feature_jitter,
            jitter_scale=jitter_scale,
            jitter_prob=jitter_prob,
            score_mode=score_mode,
            pool_kernel=pool_kernel,
            align_mode=align_mode,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        features = self.model.align(self.extract(self.model.backbone, images), tuple(images.shape[-2:]))
        # §3.3 objective: MSE to the clean features (the jitter only perturbs the input).
        loss = self.check_loss(mse_loss(self.model.reconstruct(features), features))
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=features.shape[0])
        return loss

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        return self.model.predict(self.extract(self.model.backbone, images), tuple(images.shape[-2:]))
