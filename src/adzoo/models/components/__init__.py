"""Pieces written once and shared by several methods."""

from adzoo.models.components.anomaly_map import avgpool_max, upsample_map
from adzoo.models.components.memory_bank import MemoryBank

__all__ = ["MemoryBank", "avgpool_max", "upsample_map"]
