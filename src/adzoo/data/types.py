"""The one sample format every data source yields, so methods and metrics never special-case a data set."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TypedDict

import torch

log = logging.getLogger(__name__)


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
    """Resolve ``"all"`` / one name / a list against what exists; unknown names fail, listing what is there.

    A name given twice (``[pill, pill]``) is kept once, in first-seen order, with a warning naming it: counting a
    category twice would weigh it double in the unified setting and in the mean over categories.
    """
    if wanted is None or wanted == "all":
        return list(dict.fromkeys(available))
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [c for c in names if c not in available]
    if unknown:
        raise error(f"{where}: unknown categories {unknown}; available: {', '.join(available)}")
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        log.warning("%s: categories %s are listed more than once; each is used once", where, duplicates)
    return list(dict.fromkeys(names))
