"""UniAD (You et al., NeurIPS 2022): feature reconstruction with a neighbour-masked transformer.

Pure torch. The frozen backbone's taps are aligned to one stride-16 grid and concatenated (§3.3), jittered
during training (§3.2 FJ), projected to the hidden size, passed through a neighbour-masked encoder (NME) and
a layer-wise query decoder (LQD), and projected back. The anomaly map is the per-token L2 distance between
the features and their reconstruction (§3.3), upsampled to the input. The reconstruction stack, the neck
and the scoring are shared with ADTR (``models/components/reconstruction.py``); UniAD adds the jitter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adzoo.models.components.anomaly_map import SCORE_MODES, image_score
from adzoo.models.components.reconstruction import (
    FeatureReconstructionModel,
    ReconstructionTransformer,
    align_features,
)

# UniAD's name for the shared stack (its defaults are UniAD's: NMA and LQD on).
UniADReconstruction = ReconstructionTransformer

__all__ = [
    "SCORE_MODES",
    "UniADModel",
    "UniADReconstruction",
    "align_features",
    "feature_jitter",
    "image_score",
]


def feature_jitter(tokens: Tensor, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """Add N(0, (scale·‖f_tok‖₂ / C)²) noise to each token of (..., C) features (§3.2 FJ, one draw per entry)."""
    sigma = scale * tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1]
    noise = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=tokens.dtype)
    return tokens + noise * sigma


class UniADModel(FeatureReconstructionModel):
    """Frozen backbone + UniAD reconstruction (NME + LQD) with feature jitter in training."""

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
    ) -> None:
        if not 0.0 <= jitter_prob <= 1.0:
            raise ValueError(f"model.jitter_prob must be in [0, 1], got {jitter_prob}")
        super().__init__(
            backbone,
            image_size=image_size,
            feature_stride=feature_stride,
            score_mode=score_mode,
            pool_kernel=pool_kernel,
            align_mode=align_mode,
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
            decoder_final_norm=True,  # §2.3.6: a final LayerNorm after the last decoder layer
        )
        self.feature_jitter = feature_jitter
        self.jitter_scale = float(jitter_scale)
        self.jitter_prob = float(jitter_prob)

    def perturb(self, tokens: Tensor) -> Tensor:
        """§3.2 FJ: in training, with probability p per batch, jitter the tokens (the target stays clean)."""
        if self.training and self.feature_jitter and torch.rand(()).item() < self.jitter_prob:
            return feature_jitter(tokens, self.jitter_scale)
        return tokens
