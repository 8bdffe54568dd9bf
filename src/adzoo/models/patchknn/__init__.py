"""Patch kNN baseline (PatchCore without coreset)."""

from adzoo.models.patchknn.lightning_model import PatchKNN

__all__ = ["PatchKNN"]
