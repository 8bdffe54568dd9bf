"""ADTR (You et al., 2022): anomaly detection transformer reconstructing frozen pre-trained features.

Pure torch. The taps at the ends of stages 1-5 are aligned to one grid (stride 16: 256² → 16×16) and
concatenated (720 channels for EfficientNet-B4), projected to the hidden size per position (the paper's
1×1 conv), encoded by a standard transformer encoder and rebuilt by a standard decoder whose input is one
learnable query table (one query per token), then projected back. There is no neighbour mask and no
jitter: the query embedding alone stops the "identical shortcut" (§3.2), because the decoder never gets
the features as its input, only through attention. Map and score are the shared reconstruction ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adzoo.models.components.reconstruction import FeatureReconstructionModel


class ADTRModel(FeatureReconstructionModel):
    """Frozen backbone + ADTR's query-embedding transformer; ``forward`` returns the score and the map."""

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
    ) -> None:
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
            neighbour_mask=False,  # ADTR: every token may attend to every token
            layerwise_query=False,  # one query table, the decoder's first input
            decoder_final_norm=decoder_final_norm,
        )
