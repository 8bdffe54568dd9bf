"""Backbones: timm feature extractors with offline weights and a frozen-feature cache."""

from adzoo.backbones.cache import FeatureCache, content_keys
from adzoo.backbones.extractor import FeatureExtractor, resolve_kind
from adzoo.backbones.registry import build_backbone
from adzoo.backbones.weights import (
    PACKAGED_WEIGHTS,
    create_timm_model,
    list_packaged,
    packaged_state_dict,
    register_packaged,
)

__all__ = [
    "PACKAGED_WEIGHTS",
    "FeatureCache",
    "FeatureExtractor",
    "build_backbone",
    "content_keys",
    "create_timm_model",
    "list_packaged",
    "packaged_state_dict",
    "register_packaged",
    "resolve_kind",
]
