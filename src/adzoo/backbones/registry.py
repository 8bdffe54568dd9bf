"""Entry point used by configs: ``backbone.name``, ``backbone.weights``, ... map straight onto these args."""

from __future__ import annotations

from collections.abc import Sequence

from adzoo.backbones.extractor import FeatureExtractor
from adzoo.backbones.weights import list_packaged

__all__ = ["build_backbone", "list_packaged"]


def build_backbone(
    name: str,
    out_indices: Sequence[int] = (0, 1, 2, 3),
    weights: str = "packaged",
    frozen: bool = True,
    kind: str = "auto",
) -> FeatureExtractor:
    """Build the feature extractor a method asks for; ``weights="packaged"`` works offline."""
    return FeatureExtractor(name, out_indices=out_indices, weights=weights, frozen=frozen, kind=kind)
