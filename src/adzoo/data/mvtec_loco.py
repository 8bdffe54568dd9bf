"""MVTec LOCO AD (Bergmann et al., IJCV 2022) read in the layout it is distributed in; no conversion step.

Layout, per category (``breakfast_box, juice_bottle, pushpins, screw_bag, splicing_connectors``)::

    <root>/<category>/train/good/*.png               normal training images
    <root>/<category>/validation/good/*.png          normal validation images: the datamodule's validation split
    <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/*.png    the test split
    <root>/<category>/ground_truth/<type>/<stem>/000.png, 001.png, ...   the ground truth of test/<type>/<stem>.png
    <root>/<category>/defects_config.json            [{defect_name, pixel_value, saturation_threshold,
                                                       relative_saturation}, ...]

The ground truth of one anomalous image is a folder with one mask per defect: 0 outside it and, inside, the
``pixel_value`` of its defect type in ``defects_config.json``. The pixel mask the datamodule yields is the union of
the folder's masks (:func:`read_mask_folder`, every file read by :func:`~adzoo.data.mvtec.read_mask`'s contract);
:meth:`MVTecLOCOSource.defect_channels` keeps them apart, with their defect types, for :mod:`adzoo.metrics.spro`:
``callbacks.metrics.spro_max_fpr=0.05`` adds LOCO's own localisation metric, AU-sPRO (``pixel_spro``), per category.

LOCO's protocol scores logical and structural anomalies separately, each against every good test image, then
averages the two. The metric callback scores per category, so the test split holds ``test/good`` plus the types
``anomaly_types`` names: ``logical``, ``structural`` or ``both`` (pooled, which is not the paper's number);
``conf/data/mvtec_loco.yaml`` puts the choice in the data name, and the named sweeps run both types.
"""

# Layout source: MVTec's mvtec_loco_ad_evaluation (evaluate_experiment.py read_maps: ground_truth/<type>/<stem>/*.png
# per test/<type>/<stem>.png; src/image.py: one positive value per mask file, looked up in defects_config.json)
# and anomalib's MVTecLOCODataset (its CATEGORIES, validation split, and '005.png' -> '005/000.png').

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adzoo.data.layouts import BenchmarkFolderSource, Splits, folder_images, normal_records
from adzoo.data.mvtec import (
    _READ_ERRORS,
    DataError,
    RecordDataset,
    SampleRecord,
    _list_images,
    _read_binary_mask,
    _Skipped,
    read_mask,
)
from adzoo.data.types import AnomalySample
from adzoo.errors import ConfigError
from adzoo.metrics.spro import DEFECT_KEYS, DefectType, parse_defects_config

log = logging.getLogger(__name__)

#: the five scenarios of the release
CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
ROOT_ENV = "MVTEC_LOCO_ROOT"
#: ``anomaly_types`` -> the test (and ground-truth) folders it adds to test/good
ANOMALY_TYPES = {
    "logical": ("logical_anomalies",),
    "structural": ("structural_anomalies",),
    "both": ("logical_anomalies", "structural_anomalies"),
}
DEFECTS_CONFIG = "defects_config.json"


def read_mask_folder(
    files: Sequence[str | os.PathLike], image_path: str | os.PathLike, image_size: int | None
) -> torch.Tensor:
    """One image's pixel mask, float32 (1, H, W) in {0, 1}: the union of its ground-truth files, each read by
    :func:`~adzoo.data.mvtec.read_mask` (so each is checked against the image and binarised by the shared rule).
    Each file is resized before the union, which is the same: nearest resizing picks pixels, and picking commutes
    with OR."""
    if not files:
        raise DataError(f"no mask files for {image_path} (expected one or more PNG masks in its ground-truth folder)")
    return torch.stack([read_mask(f, image_path, image_size) for f in files]).amax(dim=0)


def defect_value(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(raw values, defect value) of one LOCO mask file: one channel, 0 outside, one positive value inside.

    Two values in one file would break the union (the shared rule keeps only values above half the maximum),
    and the official evaluation refuses them too, so this is a DataError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            values = np.asarray(img)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read mask {path}: {exc} (expected a readable PNG mask)") from exc
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
        raise DataError(
            f"mask {path} has shape {values.shape} and type {values.dtype}; expected a one-channel integer mask "
            "(MVTec LOCO AD stores 8-bit grey masks)"
        )
    positive = [int(v) for v in np.unique(values) if v != 0]
    if len(positive) != 1 or positive[0] < 0:
        raise DataError(
            f"mask {path} holds the values {positive} besides 0; expected exactly one positive value "
            "(MVTec LOCO AD stores one defect per file, its type's pixel_value)"
        )
    return values, positive[0]


class MaskFolderDataset(RecordDataset):
    """Test records whose ``mask_path`` is a ground-truth folder: an item's mask is the union of the folder's files
    (``mask_files``: folder -> its masks, as indexed), read by :func:`read_mask_folder`."""

    def __init__(
        self, records: Sequence[SampleRecord], image_size: int, mask_files: Mapping[str, Sequence[str]]
    ) -> None:
        records = list(records)
        self.mask_files = [tuple(mask_files[r.mask_path]) if r.mask_path else () for r in records]
        # The shared reader sees no folder (it reads one mask file); the union replaces its all-zero mask.
        super().__init__([replace(r, mask_path=None) for r in records], image_size)

    def __getitem__(self, index: int) -> AnomalySample:
        sample = super().__getitem__(index)
        if self.mask_files[index]:
            sample["mask"] = read_mask_folder(self.mask_files[index], sample["path"], self.image_size)
        return sample


class MVTecLOCOSource(BenchmarkFolderSource):
    """MVTec LOCO AD: ``validation/good`` is the validation split, the test split is ``test/good`` plus the anomaly
    types chosen by ``anomaly_types``, each anomalous image's mask the union of its ground-truth folder."""

    benchmark = "MVTec LOCO AD"
    layout = (
        "<root>/<category>/{train/good, validation/good, test/{good,logical_anomalies,structural_anomalies}, "
        "ground_truth/<type>/<stem>/000.png, defects_config.json}"
    )

    def __init__(
        self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all", anomaly_types: str = "both"
    ) -> None:
        if anomaly_types not in ANOMALY_TYPES:
            raise ConfigError(
                f"data.source.anomaly_types={anomaly_types!r}: expected one of {', '.join(ANOMALY_TYPES)} "
                "(the anomaly folders of the test split, beside test/good)"
            )
        self.anomaly_types = anomaly_types
        self._mask_files: dict[str, tuple[str, ...]] = {}  # ground-truth folder -> its mask files, sorted
        self._test_records: dict[str, SampleRecord] = {}  # test image path -> its record, for defect_channels
        #: per category, {pixel value: DefectType} from its defects_config.json
        self.defects: dict[str, dict[int, DefectType]] = {}
        super().__init__(root, categories)

    def _index(self, category: str, skipped: _Skipped) -> Splits:
        base = self.root / category
        train = folder_images(base / "train" / "good", "the normal training images", skipped)
        val = folder_images(base / "validation" / "good", "the normal validation images MVTec LOCO AD ships", skipped)
        good = folder_images(base / "test" / "good", "the normal test images", skipped)
        self.defects[category] = self._read_defects(base / DEFECTS_CONFIG)
        test = normal_records(good, category, pixel_labels=True)
        for folder in ANOMALY_TYPES[self.anomaly_types]:
            images = folder_images(base / "test" / folder, f"the {folder.replace('_', ' ')} of the test set", skipped)
            test += self._anomalous(images, base / "ground_truth" / folder, category, folder, skipped)
        self._test_records.update((r.path, r) for r in test)
        return normal_records(train, category), normal_records(val, category), test

    def _anomalous(
        self, images: Sequence[Path], gt_dir: Path, category: str, defect: str, skipped: _Skipped
    ) -> list[SampleRecord]:
        """Anomalous records, ``mask_path`` their ground-truth folder; a missing or empty folder names its path."""
        if not gt_dir.is_dir():
            raise DataError(
                f"missing folder {gt_dir} (expected a ground-truth folder <stem>/ of masks for each image of "
                f"{images[0].parent})"
            )
        records = []
        for image in images:
            folder = gt_dir / image.stem
            if not folder.is_dir():
                raise DataError(f"no mask for {image}: expected the folder {folder} holding its masks 000.png, ...")
            masks = [p for p in _list_images(folder, skipped) if p.suffix.lower() == ".png"]
            if not masks:
                raise DataError(
                    f"empty ground-truth folder {folder}: expected one or more masks 000.png, 001.png, ... "
                    f"(one per defect) for {image}"
                )
            self._mask_files[str(folder)] = tuple(str(p) for p in masks)
            records.append(SampleRecord(str(image), category, 1, str(folder), True, defect))
        stems = {image.stem for image in images}
        orphans = sorted(p.name for p in gt_dir.iterdir() if p.is_dir() and p.name not in stems)
        if orphans:
            log.warning("%s: ground-truth folders without a test image (not read): %s", gt_dir, ", ".join(orphans[:5]))
        return records

    @staticmethod
    def _read_defects(path: Path) -> dict[int, DefectType]:
        """The category's defect types; the file is required: it says which value a mask file holds and how much
        of a defect saturates sPRO (the official evaluation cannot run without it either)."""
        if not path.is_file():
            raise DataError(
                f"missing file {path} (expected MVTec LOCO AD's JSON list of defect types, one per mask value: "
                f"{{{', '.join(DEFECT_KEYS)}}})"
            )
        try:
            entries = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise DataError(f"cannot read {path}: {exc} (expected MVTec LOCO AD's JSON list of defect types)") from exc
        try:
            return parse_defects_config(entries, str(path))
        except ValueError as exc:  # the message names the file and the entry
            raise DataError(str(exc)) from exc

    def _problems(self, category: str, include_test: bool = True) -> list[str]:
        """The shared checks (every image by :func:`check_image`, every mask file by the mask contract and its
        image's size) plus LOCO's own: one defect value per mask file, and one that defects_config.json lists."""
        problems, sizes = self._image_problems(category, include_test)
        defects = self.defects[category]
        for record in self._test[category] if include_test else []:
            for mask in self._mask_files.get(record.mask_path or "", ()):
                try:
                    _read_binary_mask(mask, record.path, sizes.get(record.path))
                    _, value = defect_value(mask)
                except DataError as exc:
                    problems.append(str(exc))
                    continue
                if value not in defects:
                    problems.append(
                        f"mask {mask} has the defect value {value}, which {self.root / category / DEFECTS_CONFIG} "
                        f"does not list (its pixel values: {', '.join(map(str, sorted(defects)))})"
                    )
        return problems

    def files(self, include_test: bool = True) -> list[str]:
        """Every file read, for the fingerprint: a ground-truth folder stands for its mask files."""
        return [f for path in super().files(include_test) for f in self._mask_files.get(path, (path,))]

    def test_dataset(self, categories: Sequence[str], image_size: int) -> MaskFolderDataset:
        records = [r for c in categories for r in self._test[c]]
        return MaskFolderDataset(records, image_size, self._mask_files)

    def defect_channels(self, path: str | os.PathLike) -> list[tuple[np.ndarray, DefectType]]:
        """The defects of one test image (by its path, as batches carry it) at full resolution: one (boolean mask,
        defect type) per mask file, in file order; empty for a good image. What :mod:`adzoo.metrics.spro` needs."""
        record = self._test_records.get(str(path))
        if record is None:
            raise DataError(f"{path} is not a test image of {self.root} (anomaly_types={self.anomaly_types})")
        defects = self.defects[record.category]
        channels: list[tuple[np.ndarray, DefectType]] = []
        for mask in self._mask_files.get(record.mask_path or "", ()):
            values, value = defect_value(mask)
            if value not in defects:
                raise DataError(f"mask {mask}: defect value {value} is not listed in its {DEFECTS_CONFIG}")
            channels.append((values == value, defects[value]))
        return channels

    def summary(self, categories: Sequence[str] | None = None) -> str:
        """The shared summary, plus which anomaly types make up the test split and the defect types found."""
        lines = [super().summary(categories)]
        lines.append(
            f"  test split: test/good + {' + '.join(ANOMALY_TYPES[self.anomaly_types])} "
            f"(data.source.anomaly_types={self.anomaly_types}); masks: union of each ground-truth folder"
        )
        for category in self._categories if categories is None else categories:
            files = sum(len(self._mask_files.get(r.mask_path or "", ())) for r in self._test[category])
            lines.append(f"  {category}: {files} mask files; {len(self.defects[category])} defect types")
        return "\n".join(lines)
