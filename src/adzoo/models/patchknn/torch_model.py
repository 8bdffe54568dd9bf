"""Patch kNN: PatchCore's locally aware patch features and nearest-neighbour distance, without coreset.

The reference row of every leaderboard (Roth et al., 2022, §3.1 features, §3.3 scoring with k=1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adzoo.models.components import MemoryBank, upsample_map
from adzoo.models.output import AnomalyOutput


class PatchKNNModel(nn.Module):
    """Memory bank of normal patch features; a patch's anomaly = distance to its nearest normal patch."""

    def __init__(self, backbone: nn.Module, neighbourhood: int = 3, k: int = 1, bank_size: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.neighbourhood = neighbourhood
        self.k = k
        self.bank_size = bank_size
        self.memory_bank = MemoryBank(metric="l2")

    @property
    def feature_dim(self) -> int:
        return sum(self.backbone.channels)

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Average each tap over a local neighbourhood, resize to the finest tap and concatenate → (B, D, h, w)."""
        size = features[0].shape[-2:]
        pad = self.neighbourhood // 2
        pooled = []
        for feature in features:
            feature = F.avg_pool2d(feature, self.neighbourhood, stride=1, padding=pad, count_include_pad=False)
            if feature.shape[-2:] != size:
                feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
            pooled.append(feature)
        return torch.cat(pooled, dim=1)

    def fit(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Fill the bank with (N, D) normal patch embeddings, randomly subsampled to ``bank_size`` if set."""
        if self.bank_size is not None and embeddings.shape[0] > self.bank_size:
            keep = torch.randperm(embeddings.shape[0], generator=generator)[: self.bank_size]
            embeddings = embeddings[keep.sort().values]
        self.memory_bank.fit(embeddings)

    def score_embeddings(self, embedding: torch.Tensor, image_size: tuple[int, int]) -> AnomalyOutput:
        batch, dim, height, width = embedding.shape
        flat = embedding.permute(0, 2, 3, 1).reshape(-1, dim)
        distances, _ = self.memory_bank.search(flat, k=self.k)
        patch_scores = distances.mean(dim=1).view(batch, height, width)
        anomaly_map = upsample_map(patch_scores, image_size, align_corners=False)
        return AnomalyOutput(pred_score=patch_scores.flatten(1).amax(dim=1), anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        return self.score_embeddings(self.embed(self.backbone(images)), tuple(images.shape[-2:]))
