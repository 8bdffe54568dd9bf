"""Thin LightningModule for Transformaly: train the students, then fit the two densities once after training.

Training follows §5.4 except where methods.md "Decisions" say otherwise: the teacher stays in eval mode (no
dropout noise in the targets) and the last epoch's students are used (no selection on test-normal loss). The
densities are fitted at the end of the last training epoch, before the checkpoint callback runs, so
``last.ckpt`` carries them and ``adzoo-eval`` reproduces the scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from adzoo.backbones import FeatureExtractor
from adzoo.models.base import AnomalyModule
from adzoo.models.output import AnomalyOutput
from adzoo.models.transformaly.cache import States, TeacherStateCache
from adzoo.models.transformaly.teacher import build_teacher
from adzoo.models.transformaly.torch_model import TransformalyModel
from adzoo.utils.distributed import gather_cat

log = logging.getLogger(__name__)

CACHE_DTYPES: dict[str, torch.dtype | None] = {
    "same": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class Transformaly(AnomalyModule):
    model: TransformalyModel

    def __init__(
        self,
        backbone: FeatureExtractor,
        scored_blocks: int | Sequence[int] | None = None,
        train_all_students: bool = True,
        feature_spaces: str = "both",
        pretrained_feature: str = "cls",
        pca_variance: float | None = 0.9,
        pca_off_by_one: bool = False,
        pretrained_density: str = "gaussian",
        finetuned_density: str = "gaussian",
        gmm_components: int = 5,
        knn_k: int = 2,
        ridge: float = 1e-6,
        qkv_init: str = "separate",
        pos_embed_antialias: bool = False,
        feature_cache: bool = True,
        feature_cache_max_mb: float = 4096,
        feature_cache_dtype: str = "same",
        feature_cache_on_device: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name="transformaly", feature_cache=feature_cache, **kwargs)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        if feature_cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"feature_cache_dtype must be one of {list(CACHE_DTYPES)}, got {feature_cache_dtype!r}")
        teacher = build_teacher(backbone, pos_embed_antialias=pos_embed_antialias)
        self.model = TransformalyModel(
            teacher,
            scored_blocks=scored_blocks,
            train_all_students=train_all_students,
            feature_spaces=feature_spaces,
            pretrained_feature=pretrained_feature,
            pca_variance=pca_variance,
            pca_off_by_one=pca_off_by_one,
            pretrained_density=pretrained_density,
            finetuned_density=finetuned_density,
            gmm_components=gmm_components,
            knn_k=knn_k,
            ridge=ridge,
            qkv_init=qkv_init,
            seed=seed,
        )
        self.teacher_description = f"{teacher.kind} teacher {backbone.name} (weights={backbone.weights})"
        self._cache = TeacherStateCache(
            self.model.training_states,
            max_bytes=int(feature_cache_max_mb * 2**20),
            dtype=CACHE_DTYPES[feature_cache_dtype],
            on_device=feature_cache_on_device,
        )
        self._epoch_started = 0.0

    # -- teacher states ----------------------------------------------------------------------------------
    def training_states(self, images: Tensor) -> States:
        """Teacher states for training images, from the cache when it is on (the teacher is deterministic)."""
        if not self.use_feature_cache:
            return self.model.teacher_states(images)
        return self._cache(images, self.model.teacher)

    # -- hooks -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        log.info(
            "transformaly: %s; students for blocks %s, scored blocks %s, feature spaces: %s",
            self.teacher_description,
            self.model.student_blocks,
            self.model.scored,
            self.model.feature_spaces,
        )

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["image"]
        loss = self.check_loss(self.model.student_loss(self.training_states(images)))
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/epoch_s", time.perf_counter() - self._epoch_started, rank_zero_only=True)
        if self.use_feature_cache:
            for key, value in self._cache.stats.items():
                self.log(f"train/teacher_cache_{key}", float(value), rank_zero_only=True)
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else None
        if max_epochs is not None and self.current_epoch + 1 >= max_epochs:
            self.fit_densities()  # before ModelCheckpoint's epoch-end hook, so last.ckpt holds the fit

    def on_train_end(self) -> None:
        if not self.model.is_fitted:  # stopped by max_steps/time: fit now (the last checkpoint predates it)
            log.warning("transformaly: training stopped before the last epoch; fitting the densities now")
            self.fit_densities()
        self._cache.clear()  # the states of training images are not needed for testing

    # -- density fit -------------------------------------------------------------------------------------
    def _fit_loader(self):
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "fit_once_dataloader"):
            return datamodule.fit_once_dataloader()
        return self.trainer.train_dataloader

    @torch.no_grad()
    def fit_densities(self) -> None:
        """One pass over the training images in eval mode: z_p and z_f of every normal image, then fit (§3)."""
        was_training = self.training
        self.eval()
        z_p, z_f = [], []
        started = time.perf_counter()
        try:
            with self.trainer.precision_plugin.forward_context():
                for batch in self._fit_loader():
                    images = batch["image"].to(self.device)
                    p, f, _ = self.model.features(self.training_states(images), self.model.grid(images))
                    z_p.append(p.float().cpu())
                    z_f.append(f.float().cpu())
            self.model.fit(gather_cat(torch.cat(z_p)), gather_cat(torch.cat(z_f)))
        finally:
            self.train(was_training)
        self.model.to(self.device)
        log.info(
            "transformaly: densities fitted on %d images in %.1fs",
            sum(len(p) for p in z_p),
            time.perf_counter() - started,
        )

    def forward(self, images: Tensor) -> AnomalyOutput:
        return self.model(images)
