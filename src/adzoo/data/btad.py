"""BTAD (beanTech Anomaly Detection; Mishra et al., ISIE 2021) read as distributed in btad.zip.

Layout: ``<root>/<01|02|03>/{train/ok, test/ok, test/ko, ground_truth/ko}`` (``<root>`` may also be the folder holding
the archive's own top folder ``BTech_Dataset_transformed``). Extensions differ per category: images/masks are
.bmp/.png in 01, .png/.png in 02 and .bmp/.bmp in 03, so a mask is found by its image's stem, whatever its extension.
Source: the BTech datamodule and dataset of github.com/openvinotoolkit/anomalib (its extension table, before it
converts every .bmp to .png), and BTAD's README (CC-BY-SA; products of 1600x1600, 600x600 and 800x600 px).

Its stem and root helpers live in :mod:`adzoo.data.layouts`, shared with the KolektorSDD2 loader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from adzoo.data.layouts import dataset_root, files_by_stem, mask_by_stem
from adzoo.data.mvtec import DataError, IndexedSource, SampleRecord, _list_images, _Skipped, is_hidden_or_system
from adzoo.data.types import select_categories

log = logging.getLogger(__name__)

CATEGORIES = ("01", "02", "03")
ARCHIVE_FOLDER = "BTech_Dataset_transformed"  # what btad.zip extracts to
NORMAL, ANOMALOUS = "ok", "ko"
LAYOUT = "<root>/<01|02|03>/train/ok, test/ok, test/ko, ground_truth/ko"


class BTADSource(IndexedSource):
    """Indexes BTAD's three products: ``train/ok`` to fit on, ``test/ok`` (normal) and ``test/ko`` (anomalous, one
    mask each in ``ground_truth/ko``). BTAD ships a mask for every ``ko`` image, so a missing one is an error."""

    def __init__(self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all") -> None:
        base = dataset_root(root, f"BTAD ({LAYOUT})", ARCHIVE_FOLDER)
        available = sorted(
            p.name for p in base.iterdir() if p.is_dir() and not is_hidden_or_system(p.name) and (p / "train").is_dir()
        )
        if not available:
            raise DataError(f"no BTAD category found under {base} (expected {LAYOUT})")
        unknown = [c for c in available if c not in CATEGORIES]
        if unknown:
            log.warning("data root %s: %s are not BTAD's categories %s; read as BTAD", base, unknown, CATEGORIES)
        self._start_index(base, select_categories(categories, available, f"data root {base}", DataError))
        for category in self._categories:
            self._train[category], self._test[category] = self._index(category)

    def _index(self, category: str) -> tuple[list[SampleRecord], list[SampleRecord]]:
        base = self.root / category
        train_dir, test_dir = base / "train" / NORMAL, base / "test"
        normal_dir, anomalous_dir = test_dir / NORMAL, test_dir / ANOMALOUS
        gt_dir = base / "ground_truth" / ANOMALOUS
        for required in (train_dir, normal_dir, anomalous_dir, gt_dir):
            if not required.is_dir():
                raise DataError(f"missing folder {required} (expected BTAD layout {LAYOUT} for category '{category}')")
        skipped = _Skipped()
        train = [SampleRecord(str(p), category, 0, None, False, NORMAL) for p in _list_images(train_dir, skipped)]
        if not train:
            raise DataError(f"empty category: no training images in {train_dir}")
        test = [SampleRecord(str(p), category, 0, None, True, NORMAL) for p in _list_images(normal_dir, skipped)]
        masks = files_by_stem(gt_dir, skipped)
        anomalous = _list_images(anomalous_dir, skipped)
        for image in anomalous:
            mask = mask_by_stem(masks, image.stem, image, gt_dir)
            test.append(SampleRecord(str(image), category, 1, mask, True, ANOMALOUS))
        orphans = sorted(set(masks) - {p.stem for p in anomalous})
        if orphans:
            log.warning("category %s: %d masks in %s have no image in %s, e.g. %s", category, len(orphans), gt_dir,
                        anomalous_dir, masks[orphans[0]].name)  # fmt: skip
        skipped.report(category, base)
        if not test:
            raise DataError(f"empty category: no test images in {normal_dir} or {anomalous_dir}")
        return train, test
