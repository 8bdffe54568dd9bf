"""KolektorSDD2 (Božič et al., Computers in Industry 2021) read as distributed in KolektorSDD2.zip.

Layout: ``<root>/{train,test}/<n>.png`` with the ground truth ``<n>_GT.png`` beside each image, one category (RGB
images of about 230x630 px). An image is defective when its GT has a defect pixel, normal when the GT is empty.
Source: vicoslab/mixed-segdec-net-comind2021 (datasets/README.md: the KSDD2/{train,test} tree; data/input_ksdd2.py
and data/dataset.py: ``<part>.png`` / ``<part>_GT.png``, positive when the grey GT's maximum is above 0).

KSDD2 is a supervised benchmark: its training split holds defective images too (246 of 2331). The anomaly detection
protocol fits on normal images only, so defective training images are left out (counted in the log and the
summary); they are not moved to the test set, which stays the official one (894 normal, 110 defective images),
so results compare with other papers'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from adzoo.data.layouts import dataset_root, files_by_stem, mask_by_stem
from adzoo.data.mvtec import _READ_ERRORS, DataError, IndexedSource, SampleRecord, _mask_values, _Skipped
from adzoo.data.types import select_categories

log = logging.getLogger(__name__)

CATEGORY = "ksdd2"
GT_SUFFIX = "_GT"
NORMAL, DEFECTIVE = "good", "defect"
LAYOUT = "KolektorSDD2 (<root>/train and <root>/test, each <n>.png with <n>_GT.png beside it)"


def has_defect_pixel(mask: Path) -> bool:
    """Whether a KSDD2 ground truth marks any pixel, by the mask contract's one value per pixel (channels reduced
    by their maximum, as :func:`~adzoo.data.mvtec.read_mask` does), so a mask judged defective here always reads."""
    try:
        with Image.open(mask) as img:
            img.load()
            values = _mask_values(img, mask)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read mask {mask}: {exc} (expected a readable PNG mask)") from exc
    return bool(values.size) and float(np.max(values)) > 0


class KSDD2Source(IndexedSource):
    """One category, ``ksdd2``: the normal training images to fit on, the whole official test split to score.

    Normal images carry no mask path (the mask contract refuses an empty mask for a defect image) but do count as
    pixel-labelled, so pixel metrics cover the category. Every ground truth read to decide a label is part of the
    data fingerprint (:meth:`files`), so an edited GT changes it even where the image carries no mask.
    """

    def __init__(self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all") -> None:
        base = dataset_root(root, LAYOUT)
        self._start_index(base, select_categories(categories, [CATEGORY], f"data root {base}", DataError))
        self._label_masks: dict[str, list[str]] = {}  # per split: GTs read for a label, never used as masks
        skipped = _Skipped()
        train = self._split("train", skipped)
        test = self._split("test", skipped)
        skipped.report(CATEGORY, base)
        normal_train = [r for r in train if r.label == 0]
        self.left_out = len(train) - len(normal_train)  # defective training images, not fitted on
        if not normal_train:
            raise DataError(f"empty category: no defect-free training images in {base / 'train'} "
                            f"({len(train)} images, all with defect pixels in their {GT_SUFFIX} masks)")  # fmt: skip
        if self.left_out:
            log.info("%s: %d defective training images left out (anomaly detection fits on normal images only)",
                     base / "train", self.left_out)  # fmt: skip
        # Training images are fitted on as normal: no mask, no pixel labels.
        self._train[CATEGORY] = [SampleRecord(r.path, CATEGORY, 0, None, False, NORMAL) for r in normal_train]
        self._test[CATEGORY] = test

    def _split(self, split: str, skipped: _Skipped) -> list[SampleRecord]:
        """Every image of ``<root>/<split>`` labelled by its GT; defect images carry the GT as their mask."""
        folder = self.root / split
        if not folder.is_dir():
            raise DataError(f"missing folder {folder} (expected {LAYOUT})")
        files = files_by_stem(folder, skipped)
        images = [p for stem, p in sorted(files.items()) if not stem.endswith(GT_SUFFIX)]
        if not images:
            raise DataError(f"empty category: no images in {folder} (expected <n>.png beside <n>{GT_SUFFIX}.png)")
        records: list[SampleRecord] = []
        label_only: list[str] = []
        for image in images:
            mask = mask_by_stem(files, image.stem + GT_SUFFIX, image, folder)
            if has_defect_pixel(Path(mask)):
                records.append(SampleRecord(str(image), CATEGORY, 1, mask, True, DEFECTIVE))
            else:
                records.append(SampleRecord(str(image), CATEGORY, 0, None, True, NORMAL))
                label_only.append(mask)
        if split == "train":  # defective training images are left out: their GTs decided that, so they count too
            label_only += [r.mask_path for r in records if r.mask_path is not None]
        self._label_masks[split] = label_only
        return records

    def summary(self, categories: Sequence[str] | None = None) -> str:
        left_out = f"\n  ({self.left_out} defective training images left out: fitted on normal images only)"
        return super().summary(categories) + (left_out if self.left_out else "")

    def files(self, include_test: bool = True) -> list[str]:
        splits = ("train", "test") if include_test else ("train",)
        return super().files(include_test) + [m for s in splits for m in self._label_masks[s]]
