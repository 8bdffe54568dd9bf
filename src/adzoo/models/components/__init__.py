"""Pieces written once and shared by several methods."""

from adzoo.models.components.anomaly_map import avgpool_max, upsample_map
from adzoo.models.components.attention import (
    DecoderLayer,
    Encoder,
    EncoderLayer,
    PositionEmbedding2d,
    neighbour_mask,
    xavier_init_linears,
)
from adzoo.models.components.memory_bank import MemoryBank

__all__ = [
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "MemoryBank",
    "PositionEmbedding2d",
    "avgpool_max",
    "neighbour_mask",
    "upsample_map",
    "xavier_init_linears",
]
