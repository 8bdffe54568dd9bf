"""Pieces written once and shared by several methods."""

from adzoo.models.components.anomaly_map import SCORE_MODES, gaussian_blur, image_score, upsample_map
from adzoo.models.components.attention import (
    DecoderLayer,
    Encoder,
    EncoderLayer,
    PositionEmbedding2d,
    neighbour_mask,
    xavier_init_linears,
)
from adzoo.models.components.memory_bank import BankOptions, BankTooLargeError, MemoryBank
from adzoo.models.components.precision import full_precision, mse_loss, residual
from adzoo.models.components.reconstruction import (
    FeatureReconstructionModel,
    ReconstructionTransformer,
    align_features,
    distance_map,
)

__all__ = [
    "SCORE_MODES",
    "BankOptions",
    "BankTooLargeError",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "FeatureReconstructionModel",
    "MemoryBank",
    "PositionEmbedding2d",
    "ReconstructionTransformer",
    "align_features",
    "distance_map",
    "full_precision",
    "gaussian_blur",
    "image_score",
    "mse_loss",
    "neighbour_mask",
    "residual",
    "upsample_map",
    "xavier_init_linears",
]
