"""Metrics shared by every method, so numbers are comparable across the zoo.

Exact functions live in :mod:`adzoo.metrics.functional`; :mod:`adzoo.metrics.pixel` accumulates pixel
metrics batch by batch with an exact or a fixed-memory streaming back-end; :mod:`adzoo.metrics.image`
holds image-level metrics and the avg-pool-max image score.
"""

from adzoo.metrics.connected import connected_components
from adzoo.metrics.functional import (
    aupro,
    auroc,
    average_precision,
    binary_metrics,
    category_mean,
    f1_max,
    pixel_metrics,
)
from adzoo.metrics.image import avgpool_max_score, image_metrics
from adzoo.metrics.pixel import (
    PIXEL_METRIC_KEYS,
    ExactPixelMetrics,
    PixelMetrics,
    StreamingPixelMetrics,
    make_pixel_metrics,
)

__all__ = [
    "PIXEL_METRIC_KEYS",
    "ExactPixelMetrics",
    "PixelMetrics",
    "StreamingPixelMetrics",
    "aupro",
    "auroc",
    "average_precision",
    "avgpool_max_score",
    "binary_metrics",
    "category_mean",
    "connected_components",
    "f1_max",
    "image_metrics",
    "make_pixel_metrics",
    "pixel_metrics",
]
