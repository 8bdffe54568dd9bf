"""Patch kNN and PatchCore: locally aware patch features, a memory bank of normal patches, nearest-neighbour
distance (Roth et al., CVPR 2022).

``patchknn`` is the exact reference row of every leaderboard: every training patch, exact search, image score =
the largest patch distance (§3.1 features, §3.3 scoring with k=1). ``patchcore`` is the same model with the
paper's defaults: a 10 % greedy coreset (§3.2), the image score re-weighted by the nearest neighbour's
neighbourhood (§3.3, Eq. 7) and a Gaussian-smoothed map (σ=4). The bank's options are shared with CAP
(:class:`adzoo.models.components.BankOptions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adzoo.models.components import BankOptions, MemoryBank, full_precision, gaussian_blur, upsample_map
from adzoo.models.output import AnomalyOutput


class PatchKNNModel(nn.Module):
    """Memory bank of normal patch features; a patch's anomaly = distance to its nearest normal patch.

    ``reweight_neighbours`` is b of Eq. 7 (0: the image score is the plain maximum); ``blur_sigma`` smooths the
    upsampled map (0: none).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neighbourhood: int = 3,
        k: int = 1,
        reweight_neighbours: int = 0,
        blur_sigma: float = 0.0,
        bank: BankOptions | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neighbourhood = neighbourhood
        self.k = k
        self.reweight_neighbours = int(reweight_neighbours)
        self.blur_sigma = float(blur_sigma)
        self.memory_bank = MemoryBank(metric="l2", options=bank)

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

    @staticmethod
    def patches(embedding: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) → (B·h·w, D), the rows the bank holds."""
        return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])

    def fit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Fill the bank with (N, D) normal patch embeddings (or their coreset); returns the kept rows."""
        return self.memory_bank.fit(embeddings)

    def reweighted_score(self, flat: torch.Tensor, patch_scores: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
        """Eq. 7: s = (1 − exp‖m* − m_b*‖ / Σ_{m ∈ N_b(m_b*)} exp‖m* − m‖) · s*, where m* is the test patch with the
        largest score s*, m_b* its nearest bank patch and N_b(m_b*) the b bank patches nearest to m_b* (itself
        among them). A far test patch whose neighbour sits in a dense region keeps its score; one whose
        neighbour is isolated (a rare normal pattern) is damped. Computed as a stable log-sum-exp."""
        batch, patches = patch_scores.shape
        worst = patch_scores.argmax(dim=1)
        rows = torch.arange(batch, device=flat.device)
        star = patch_scores[rows, worst]
        test_patch = flat.view(batch, patches, -1)[rows, worst]
        neighbour = nearest.view(batch, patches)[rows, worst]
        bank = self.memory_bank
        b = min(self.reweight_neighbours, len(bank))
        _, support = bank.search(bank.vectors(neighbour), k=b)
        distances = torch.linalg.vector_norm(test_patch.float().unsqueeze(1) - bank.vectors(support), dim=-1)
        weight = 1.0 - torch.exp(star - torch.logsumexp(distances, dim=1))
        return weight * star

    @full_precision
    def score_embeddings(self, embedding: torch.Tensor, image_size: tuple[int, int]) -> AnomalyOutput:
        batch, _, height, width = embedding.shape
        flat = self.patches(embedding)
        distances, indices = self.memory_bank.search(flat, k=self.k)
        patch_scores = distances.mean(dim=1).view(batch, height * width)
        if self.reweight_neighbours > 0:
            pred_score = self.reweighted_score(flat, patch_scores, indices[:, 0])
        else:
            pred_score = patch_scores.amax(dim=1)
        anomaly_map = upsample_map(patch_scores.view(batch, height, width), image_size, align_corners=False)
        if self.blur_sigma > 0:
            anomaly_map = gaussian_blur(anomaly_map, self.blur_sigma)
        return AnomalyOutput(pred_score=pred_score, anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        return self.score_embeddings(self.embed(self.backbone(images)), tuple(images.shape[-2:]))
