"""The one sample format every data source yields, so methods and metrics never special-case a data set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch


class AnomalySample(TypedDict):
    """One item of any adzoo dataset.

    ``image`` is float32 (3, H, W) in [0, 1]: normalisation belongs to the backbone, which knows its own
    mean/std. ``mask`` is float32 (1, H, W) in {0, 1} (all zeros for normal images and for categories
    without pixel labels). ``label`` is 0 for normal and 1 for anomalous. ``path`` identifies the source
    file (or a stable pseudo-path such as ``digits/train/00012`` for in-memory sets). ``has_mask`` says
    whether pixel labels exist for this sample's category, so pixel metrics can be skipped honestly.
    """

    image: torch.Tensor
    mask: torch.Tensor
    label: int
    category: str
    path: str
    has_mask: bool


def select_categories(
    wanted: Sequence[str] | str | None, available: Sequence[str], where: str, error: type[Exception] = ValueError
) -> list[str]:
    """Resolve ``"all"`` / one name / a list against what exists; unknown names fail, listing what is there."""
    if wanted is None or wanted == "all":
        return list(available)
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [c for c in names if c not in available]
    if unknown:
        raise error(f"{where}: unknown categories {unknown}; available: {', '.join(available)}")
    return names
