"""Thin LightningModule for ADTR and ADTR+ (``anomaly_supervision``: none | pixel | image)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adzoo.data.confetti import ConfettiConfig
from adzoo.models.adtr.anomalies import AnomalySource
from adzoo.models.adtr.losses import (
    LABEL_DOWNSAMPLING,
    downsample_labels,
    image_loss,
    normal_loss,
    pixel_loss,
    pseudo_huber,
)
from adzoo.models.adtr.torch_model import ADTRModel
from adzoo.models.base import AnomalyModule
from adzoo.models.components import residual
from adzoo.models.output import AnomalyOutput

log = logging.getLogger(__name__)

SUPERVISION = ("none", "pixel", "image")
RECONSTRUCTION_PREFIX = "model.reconstruction."


def resolve_finetune_checkpoint(path: str | Path, categories: Sequence[str] = ()) -> Path:
    """A ``.ckpt`` file, or a run folder: its per-category checkpoint (separate setting) or its own one."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    candidates = []
    if len(categories) == 1:
        candidates.append(path / "categories" / categories[0] / "checkpoints" / "last.ckpt")
    candidates.append(path / "checkpoints" / "last.ckpt")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"method.finetune_from: no checkpoint at {path} (looked for {', '.join(str(c) for c in candidates)})"
    )


class ADTR(AnomalyModule):
    """ADTR on a frozen backbone; ADTR+ adds labelled anomalies and the push-pull losses.

    Normal-only training uses the spine's feature cache. For ADTR+ the anomalies change the input, so only
    the clean normals come from the cache; the anomalies go through the backbone every time. The supervised
    loss replaces L_norm (its pull term already fits the normal positions) from epoch
    ``supervised_start × max_epochs`` on, or from the start when fine-tuning a normal-only checkpoint.
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int | Sequence[int] = 256,
        feature_stride: int = 16,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        decoder_final_norm: bool = True,
        score_mode: str = "max",
        pool_kernel: int = 16,
        align_mode: str = "bilinear",
        anomaly_supervision: str = "none",
        alpha: float = 0.003,
        top_k: int = 20,
        anomaly_ratio: float = 1.0,
        supervised_start: float = 0.625,
        finetune_from: str | None = None,
        keep_normal_loss: bool = False,
        label_downsampling: str = "max",
        outlier_source: str = "confetti",
        confetti: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name="adtr", **kwargs)
        if anomaly_supervision not in SUPERVISION:
            raise ValueError(f"method.anomaly_supervision must be one of {SUPERVISION}, got {anomaly_supervision!r}")
        if not 0.0 <= supervised_start < 1.0:
            raise ValueError(f"method.supervised_start must be in [0, 1), got {supervised_start}")
        if anomaly_ratio <= 0:
            raise ValueError(f"method.anomaly_ratio must be > 0, got {anomaly_ratio}")
        if label_downsampling not in LABEL_DOWNSAMPLING:
            raise ValueError(
                f"method.label_downsampling must be one of {LABEL_DOWNSAMPLING}, got {label_downsampling!r}"
            )
        if top_k < 1:
            raise ValueError(f"method.top_k must be >= 1, got {top_k}")
        # Plain Python types (not Hydra containers) so checkpoints load with torch.load(weights_only=True).
        image_size = image_size if isinstance(image_size, int) else [int(s) for s in image_size]
        confetti = dict(confetti or {})
        finetune_from = None if finetune_from in (None, "") else str(finetune_from)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.supervision = anomaly_supervision
        self.alpha = float(alpha)
        self.top_k = int(top_k)
        self.anomaly_ratio = float(anomaly_ratio)
        self.supervised_start = float(supervised_start)
        self.finetune_from = finetune_from
        self.keep_normal_loss = keep_normal_loss
        self.label_downsampling = label_downsampling
        self.anomalies = AnomalySource(outlier_source, ConfettiConfig(**confetti))
        self.model = ADTRModel(
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
            decoder_final_norm=decoder_final_norm,
            score_mode=score_mode,
            pool_kernel=pool_kernel,
            align_mode=align_mode,
        )

    # -- fine-tuning ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Load the normal-only reconstruction before fitting (before any resume, which then wins)."""
        if stage != "fit" or self.finetune_from is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        categories = list(getattr(datamodule, "categories", []) or [])
        path = resolve_finetune_checkpoint(self.finetune_from, categories)
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        weights = {k[len(RECONSTRUCTION_PREFIX) :]: v for k, v in state.items() if k.startswith(RECONSTRUCTION_PREFIX)}
        self.model.reconstruction.load_state_dict(weights)
        log.info("adtr: fine-tuning the reconstruction loaded from %s", path)

    def supervised_at(self, epoch: int, max_epochs: int | None) -> bool:
        """ADTR+ is active: from the first epoch when fine-tuning, else after the normal-only share."""
        if self.supervision == "none":
            return False
        if self.finetune_from is not None or max_epochs is None or max_epochs < 1:
            return True
        return epoch >= int(self.supervised_start * max_epochs)

    def supervised_now(self) -> bool:
        if self._trainer is None:
            return self.supervised_at(0, None)
        return self.supervised_at(self.current_epoch, self.trainer.max_epochs)

    # -- steps ----------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["image"]
        size = tuple(images.shape[-2:])
        clean = self.model.align(self.extract(self.model.backbone, images), size)
        if not self.supervised_now():
            loss = normal_loss(residual(clean, self.model.reconstruct(clean)))
            return self._log_loss(loss, clean.shape[0])
        count = max(1, round(self.anomaly_ratio * images.shape[0]))
        anomalies, masks = self.anomalies(images, count)
        with torch.no_grad():  # frozen backbone; never cached: these pixels are new every step
            noisy = self.model.align(self.model.backbone(anomalies), size)
        features = torch.cat([clean, noisy])
        difference = residual(features, self.model.reconstruct(features))
        phi = pseudo_huber(difference)
        if self.supervision == "pixel":
            normal_masks = torch.zeros_like(masks[:1]).expand(clean.shape[0], -1, -1, -1)
            labels = downsample_labels(torch.cat([normal_masks, masks]), self.model.grid, self.label_downsampling)
            loss = pixel_loss(phi, labels, self.alpha)
        else:
            labels = torch.cat([phi.new_zeros(clean.shape[0]), phi.new_ones(count)])
            loss = image_loss(phi, labels, self.alpha, self.top_k)
        if self.keep_normal_loss:
            loss = loss + normal_loss(difference[: clean.shape[0]])
        return self._log_loss(loss, features.shape[0])

    def _log_loss(self, loss: Tensor, batch_size: int) -> Tensor:
        loss = self.check_loss(loss)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def forward(self, images: Tensor) -> AnomalyOutput:
        return self.model.predict(self.extract(self.model.backbone, images), tuple(images.shape[-2:]))
