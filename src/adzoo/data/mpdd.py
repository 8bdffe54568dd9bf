"""MPDD (Metal Parts Defect Detection; Jezek et al., ICUMT 2021) read as distributed: plain MVTec AD layout.

Layout: ``<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``, .png
images of 1024x1024 px, six categories (bracket_black, bracket_brown, bracket_white, connector, metal_plate, tubes).
Source: github.com/stepanje/MPDD (README: anomaly-free training subset, pixel-precise masks for every defect image)
and anomalib's MPDD dataset (open-edge-platform/anomalib, data/datasets/image/mpdd.py: the six categories, .png only,
masks matched to their images by stem).

It is a thin :class:`MVTecLayoutSource`: the layout is MVTec's, so only MPDD's own facts live here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from adzoo.data.mvtec import DataError, MVTecLayoutSource

log = logging.getLogger(__name__)

CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


class MPDDSource(MVTecLayoutSource):
    """MVTec-layout indexing, plus MPDD's guarantee that every defect image has a mask: the MVTec loader reads a
    defect folder without ground truth as image-label only, but in MPDD that is a partial download, refused."""

    def __init__(self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all") -> None:
        super().__init__(root, categories)
        unknown = [c for c in self._categories if c not in CATEGORIES]
        if unknown:
            log.warning("data root %s: %s are not MPDD's categories %s; read as MVTec layout", self.root, unknown,
                        CATEGORIES)  # fmt: skip
        for category in self._categories:
            if self.has_masks(category):
                continue
            defects = sorted({r.defect for r in self._test[category] if r.label == 1})
            missing = [self.root / category / "ground_truth" / d for d in defects]
            missing = [p for p in missing if not p.is_dir()] or [self.root / category / "test" / "<defect>"]
            raise DataError(
                f"missing folder {missing[0]} (MPDD ships a defect folder with a <stem>_mask.png for every image "
                f"in it, for category '{category}')"
            )
