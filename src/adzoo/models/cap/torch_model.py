"""CAP: constrained adaptive projection with pretrained features (Gui et al., IJCAI 2022).

Pure torch. A frozen backbone gives one pooled feature z per image; a cosine kNN memory bank of the normal
training features, fixed in the pretrained space, gives K neighbours; one bias-free D×D projection W maps the
sample and its neighbours, a reformed self-attention (W_Q, W_K, no value projection) mixes the neighbours into
an adaptive normal representation ẑⁿ, and the anomaly score is 1 − cos(ẑ, ẑⁿ).

Row-vector convention: ``projection(z) = z Wᵀ`` (``nn.Linear``); the paper writes ``W z``. Same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adzoo.errors import ConfigError
from adzoo.models.components import BankOptions, MemoryBank, full_precision, upsample_map
from adzoo.models.output import AnomalyOutput

MAP_VECTORS = ("pretrained", "adapted")
CONSTRAINT_DISTANCES = ("mse", "squared_l2")


class HeadOutput(NamedTuple):
    """``z_hat`` (B, D) adapted sample; ``normal_hat`` (B, D) adaptive normal representation ẑⁿ;
    ``weights`` (B, K) neighbour weights with ``normal_hat == projection(Σ_j weights_j · m_j)``;
    ``attention`` (B, K, K) the reformed self-attention matrix (None without attention)."""

    z_hat: torch.Tensor
    normal_hat: torch.Tensor
    weights: torch.Tensor
    attention: torch.Tensor | None


class ReformedSelfAttention(nn.Module):
    """Eq. 3: softmax((P W_Q)(P W_K)ᵀ / √D) P over the K projected neighbours.

    There is deliberately no value projection (§3.3: "we remove W_V since the data space should keep
    unchanged") and no LayerNorm; the values are the projected neighbours themselves.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, D) → attention output (B, K, D) and the row-stochastic matrix (B, K, K)."""
        logits = self.query(projected) @ self.key(projected).transpose(1, 2) * self.scale
        attention = logits.softmax(dim=-1)
        return attention @ projected, attention


class CAPHead(nn.Module):
    """The trainable part: projection W shared by sample and neighbours (Eq. 1-2), reformed attention (Eq. 3-4).

    ``adaptation=False`` is the paper's "no adaptation" row (Table 1): no parameters, ẑ = z and ẑⁿ = the plain
    mean of the K pretrained neighbours. ``attention=False`` is Table 2's "L without attention": ẑⁿ = the plain
    mean of the projected neighbours. Weights are Xavier-uniform as in the official code.
    """

    def __init__(self, dim: int, attention: bool = True, adaptation: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.adaptation = adaptation
        self.projection = nn.Linear(dim, dim, bias=False) if adaptation else None
        self.attention = ReformedSelfAttention(dim) if (adaptation and attention) else None
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, z: torch.Tensor, neighbours: torch.Tensor) -> HeadOutput:
        """``z`` (B, D) pretrained features, ``neighbours`` (B, K, D) their pretrained kNN from the bank."""
        batch, k, _ = neighbours.shape
        uniform = neighbours.new_full((batch, k), 1.0 / k)
        if self.projection is None:
            return HeadOutput(z, neighbours.mean(dim=1), uniform, None)
        z_hat = self.projection(z)
        projected = self.projection(neighbours)  # the same W for sample and neighbours (Eq. 2)
        if self.attention is None:
            return HeadOutput(z_hat, projected.mean(dim=1), uniform, None)
        mixed, attention = self.attention(projected)
        normal_hat = (projected + mixed).mean(dim=1)  # Eq. 4: residual, then mean over K
        # mean_k(A P + P)_k = Σ_j w_j P_j with w_j = (Σ_k A_kj + 1) / K: ẑⁿ is linear in the neighbours.
        weights = (attention.sum(dim=1) + 1.0) / k
        return HeadOutput(z_hat, normal_hat, weights, attention)


@full_precision
def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cos(a, b) over dim 1, in float32: the score (Eq. 8) and L_S (Eq. 5)."""
    return 1.0 - F.cosine_similarity(a, b, dim=1)


@full_precision
def cap_loss(
    z: torch.Tensor,
    z_hat: torch.Tensor,
    normal_hat: torch.Tensor,
    constraint_weight: float,
    distance: str = "mse",
) -> dict[str, torch.Tensor]:
    """Eq. 7: L = L_S + λ·Ω, batch means. L_S = 1 − cos(ẑ, ẑⁿ) (Eq. 5); Ω = d(z, ẑ) + 1 − cos(z, ẑ) (Eq. 6).

    ``distance="mse"`` (official code, mean over the D elements) or ``"squared_l2"`` (paper Eq. 6, ‖z − ẑ‖²).
    """
    if distance not in CONSTRAINT_DISTANCES:
        raise ValueError(f"constraint distance must be one of {CONSTRAINT_DISTANCES}, got {distance!r}")
    similarity = cosine_distance(z_hat, normal_hat).mean()
    squared = (z - z_hat).pow(2)
    dist = squared.mean(dim=1) if distance == "mse" else squared.sum(dim=1)
    constraint = (dist + 1.0 - F.cosine_similarity(z, z_hat, dim=1)).mean()
    return {
        "loss": similarity + constraint_weight * constraint,
        "similarity": similarity,
        "constraint": constraint,
    }


class CAPModel(nn.Module):
    """Backbone + memory bank + head; ``forward`` scores images and draws the §4.6 localisation map.

    The global feature z is the average-pooled *last* tapped map of the backbone (ResNet-152 layer4 = 2048-d in
    the paper; whatever the backbone's last tap reports otherwise), and the localisation map uses that same map
    f(u). ``bank`` holds the raw pretrained training features (the head consumes them); ``memory_bank`` holds
    their L2-normalised copies in a faiss inner-product index, i.e. cosine search. ``bank_options`` are the shared
    ``bank.*`` (coreset, search back-end, storage); with a coreset both hold only the kept images.
    """

    bank: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        k: int = 4,
        attention: bool = True,
        adaptation: bool = True,
        map_vector: str = "pretrained",
        use_gpu_index: bool = True,
        bank_options: BankOptions | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if map_vector not in MAP_VECTORS:
            raise ValueError(f"map_vector must be one of {MAP_VECTORS}, got {map_vector!r}")
        self.backbone = backbone
        self.k = int(k)
        self.map_vector = map_vector
        self.head = CAPHead(self.feature_dim, attention=attention, adaptation=adaptation)
        self.memory_bank = MemoryBank(metric="cosine", use_gpu=use_gpu_index, options=bank_options)
        self.register_buffer("bank", torch.empty(0, 0), persistent=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "bank"
        if key in state_dict:  # the bank's size is only known from the checkpoint
            self.bank = torch.empty_like(state_dict[key], device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.channels[-1])

    @staticmethod
    def pool(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone maps → (z (B, D) = global average pool of the last map, that map f (B, D, h, w))."""
        fmap = features[-1].float()
        return fmap.mean(dim=(2, 3)), fmap

    # -- memory bank ----------------------------------------------------------------------------------
    def fit(self, features: torch.Tensor) -> torch.Tensor:
        """Fill the bank with the (N, D) pretrained features of the normal training images (§3.1, fixed), or with
        their coreset; returns the kept rows (ascending)."""
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"expected (N, {self.feature_dim}) features, got {tuple(features.shape)}")
        kept = self.memory_bank.options.kept(features.shape[0])
        if kept < self.k + 1:
            raise ConfigError(
                f"model.k={self.k} is too large for a memory bank of {kept} training images: CAP excludes each "
                f"image's own entry, so it needs more than k={self.k}; lower model.k or add training data"
                + (" (or raise bank.coreset_ratio)" if self.memory_bank.options.subsamples else "")
            )
        rows = self.memory_bank.fit(features)
        self.bank = features.detach().float()[rows.to(features.device)].contiguous()
        return rows

    def neighbours(self, z: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Bank indices (B, K) of the K most cosine-similar normal features, nearest first.

        Training passes ``exclude`` = each sample's own bank row (by index, so a duplicated image still finds
        its twin); at test time the top K are used as they are (§3.1).
        """
        _, indices = self.memory_bank.search(z, k=self.k, exclude=exclude)
        return indices.to(self.bank.device)

    def training_neighbours(self, features: torch.Tensor, kept: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """(N, K) bank neighbours of every training image, its own bank row (if kept) excluded: computed once."""
        own = torch.full((len(features),), -1, dtype=torch.long, device=features.device)
        own[kept.to(features.device)] = torch.arange(len(kept), device=features.device)
        starts = range(0, len(features), chunk)
        return torch.cat([self.neighbours(features[s : s + chunk], exclude=own[s : s + chunk]) for s in starts])

    # -- scoring --------------------------------------------------------------------------------------
    def score(self, z: torch.Tensor, neighbours: torch.Tensor) -> tuple[torch.Tensor, HeadOutput]:
        """Eq. 8: s = 1 − cos(ẑ, ẑⁿ) for pretrained features z (B, D) and neighbours (B, K, D)."""
        out = self.head(z, neighbours)
        return cosine_distance(out.z_hat, out.normal_hat), out

    @full_precision
    def normal_vector(self, neighbours: torch.Tensor, out: HeadOutput) -> torch.Tensor:
        """The normal representation compared with f(u) in the map.

        ``pretrained``: zⁿ = Σ_j w_j m_j, the same neighbour weights applied to the pretrained neighbours; it is
        exactly ẑⁿ brought back to the pretrained space (projection(zⁿ) = ẑⁿ, no inverse of W needed), so it is
        comparable with the pretrained map f(u). ``adapted``: ẑⁿ itself, as §4.6 literally writes.
        """
        if self.map_vector == "adapted":
            return out.normal_hat
        return (out.weights.unsqueeze(-1) * neighbours).sum(dim=1)

    @full_precision
    def anomaly_map(
        self, z: torch.Tensor, normal: torch.Tensor, fmap: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """§4.6 (an adzoo addition as a metric): |cos(z, f(u)) − cos(zⁿ, f(u))| per cell, upsampled to ``size``."""
        cos_sample = F.cosine_similarity(fmap, z[:, :, None, None], dim=1)
        cos_normal = F.cosine_similarity(fmap, normal[:, :, None, None], dim=1)
        return upsample_map((cos_sample - cos_normal).abs(), size, align_corners=False)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        return self.score_features(self.backbone(images), tuple(images.shape[-2:]))

    def score_features(self, features: list[torch.Tensor], size: tuple[int, int]) -> AnomalyOutput:
        """Image scores and maps from backbone maps (so a caller can route the backbone through a cache)."""
        z, fmap = self.pool(features)
        neighbours = self.bank[self.neighbours(z)]
        scores, out = self.score(z, neighbours)
        anomaly_map = self.anomaly_map(z, self.normal_vector(neighbours, out), fmap, size)
        return AnomalyOutput(pred_score=scores, anomaly_map=anomaly_map)
