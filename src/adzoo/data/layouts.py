"""The pieces every benchmark loader shares: a source for layouts that ship a validation split, the record builders
for normal and anomalous images, and the lookups by stem for sets whose masks differ in extension from their images.

One place, so a fix to how a missing folder or mask is named reaches every loader (BTAD, KolektorSDD2, MVTec AD 2,
MVTec 3D-AD, MVTec LOCO AD). The MVTec layout itself, and :class:`~adzoo.data.mvtec.IndexedSource`, live in
:mod:`adzoo.data.mvtec`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from adzoo.data.mvtec import DataError, IndexedSource, SampleRecord, _list_images, _Skipped, is_hidden_or_system
from adzoo.data.types import select_categories

log = logging.getLogger(__name__)


def dataset_root(root: str | os.PathLike | None, layout: str, archive_folder: str | None = None) -> Path:
    """``data.root`` as a folder, or a DataError saying what belongs there; descends into ``archive_folder`` when
    the root is the folder an archive was extracted into (so both places a user may point at work)."""
    if root in (None, ""):
        raise DataError(f"data.root is not set (expected the folder holding {layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} does not exist (expected a folder holding {layout}); set data.root")
    if archive_folder is not None and (path / archive_folder).is_dir():
        log.info("data root %s holds the archive folder %s: reading that", path, archive_folder)
        return path / archive_folder
    return path


def files_by_stem(folder: Path, skipped: _Skipped | None = None) -> dict[str, Path]:
    """The images of ``folder`` by stem (hidden/system files skipped); two files of one stem (``0001.png`` and
    ``0001.bmp``) are refused, since either could be the one meant."""
    found: dict[str, Path] = {}
    for path in _list_images(folder, skipped):
        if path.stem in found:
            raise DataError(f"two files of one name in {folder}: {found[path.stem].name} and {path.name}; expected one")
        found[path.stem] = path
    return found


def mask_by_stem(masks: dict[str, Path], stem: str, image: Path, folder: Path) -> str:
    """The mask of ``image``, named ``stem`` with any image extension, or a DataError naming what was expected."""
    if stem not in masks:
        raise DataError(f"no mask for {image}: expected {folder / stem}.png (or .bmp, or another image extension)")
    return str(masks[stem])


Splits = tuple[list[SampleRecord], list[SampleRecord], list[SampleRecord]]


def folder_images(folder: Path, expected: str, skipped: _Skipped) -> list[Path]:
    """The images of one folder the layout requires, or a DataError naming it (missing, or holding no image)."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder} (expected {expected})")
    images = _list_images(folder, skipped)
    if not images:
        raise DataError(f"empty category: no images in {folder} (expected {expected})")
    return images


def normal_records(images: Sequence[Path], category: str, pixel_labels: bool = False) -> list[SampleRecord]:
    """Defect-free images; ``pixel_labels`` says whether their category has masks (so they count in pixel metrics)."""
    return [SampleRecord(str(p), category, 0, None, pixel_labels, "good") for p in images]


def anomalous_records(
    images: Sequence[Path], gt_dir: Path, mask_suffix: str, category: str, defect: str
) -> list[SampleRecord]:
    """Defect images with their mask ``<gt_dir>/<stem><mask_suffix>``; a missing one is a DataError naming both."""
    records = []
    for image in images:
        mask = gt_dir / f"{image.stem}{mask_suffix}"
        if not mask.is_file():
            raise DataError(f"no mask for {image}: expected {mask}")
        records.append(SampleRecord(str(image), category, 1, str(mask), True, defect))
    return records


class BenchmarkFolderSource(IndexedSource):
    """A benchmark read in its own folder layout, with a validation split it ships: the root and category checks
    are the same for every such layout, only :meth:`_index` (train, validation, test of one category) differs.

    Subclasses set ``benchmark`` (named in errors), ``layout`` (what a category folder must hold, for errors) and
    implement :meth:`_index`. A category is a folder of the root holding ``train/`` (files beside the categories,
    such as readme.txt and license.txt, are not categories).
    """

    benchmark: ClassVar[str]
    layout: ClassVar[str]

    def __init__(self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all") -> None:
        if root in (None, ""):
            raise DataError(
                f"data.root is not set (expected the {self.benchmark} folder holding the categories, {self.layout})"
            )
        base = Path(root).expanduser()
        if not base.is_dir():
            raise DataError(f"data root {base} does not exist (expected the {self.benchmark} folder: {self.layout})")
        available = sorted(
            p.name for p in base.iterdir() if p.is_dir() and not is_hidden_or_system(p.name) and (p / "train").is_dir()
        )
        if not available:
            raise DataError(f"no category found under {base} (expected {self.benchmark} layout: {self.layout})")
        self._start_index(base, select_categories(categories, available, f"data root {base}", DataError))
        for category in self._categories:
            skipped = _Skipped()
            self._train[category], self._val[category], self._test[category] = self._index(category, skipped)
            skipped.report(category, base / category)

    def _index(self, category: str, skipped: _Skipped) -> Splits:
        """(train, shipped validation, test) records of one category."""
        raise NotImplementedError
