"""Real-IAD (Wang et al., CVPR 2024) read as distributed: image folders plus the official per-category json splits.

Layout: ``<root>/realiad_1024/<category>/{OK/S<nnnn>, NG/<defect>/S<nnnn>}/<category>_<nnnn>_<OK|NG_<defect>>_C<v>_
<timestamp>.jpg`` (masks ``..._mask.png`` beside the NG images; also ``realiad_256/512/raw``) and
``<root>/realiad_jsons/<setting>/<category>.json`` or ``<root>/<setting>/<category>.json``, with settings
``realiad_jsons`` (multi-view), ``realiad_jsons_sv`` (single view) and ``realiad_jsons_fuiad_{0.0,0.1,0.2,0.4}``.
Each json is ``{"meta": {"prefix": "<category>/", "normal_class": "OK"}, "train": [...], "test": [...]}``, every
entry ``{category, anomaly_class, image_path, mask_path}`` relative to ``<image dir>/<prefix>``.
Source: the official README and datasets/explicit_dataset.py of github.com/Tencent/AnomalyDetection_Real-IAD.

Real-IAD's images are 1024 px (``realiad_raw``: 2K and more), so decoding and resizing them every epoch would cost
more than most models' steps: each image is resized once to ``data.image_size`` and kept under ``cache_dir``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adzoo.data.mvtec import DataError, IndexedSource, RecordDataset, SampleRecord, read_image, read_mask
from adzoo.data.types import AnomalySample, select_categories

log = logging.getLogger(__name__)

#: the 30 objects (experiments/RealIAD-*/config.yaml of the official repository)
CATEGORIES = (
    "audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood", "mint", "mounts", "pcb",
    "phone_battery", "plastic_nut", "plastic_plug", "porcelain_doll", "regulator", "rolled_strip_base",
    "sim_card_set", "switch", "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1", "u_block",
    "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper",
)  # fmt: skip
JSON_SETTINGS = (
    "realiad_jsons", "realiad_jsons_sv", "realiad_jsons_fuiad_0.0", "realiad_jsons_fuiad_0.1",
    "realiad_jsons_fuiad_0.2", "realiad_jsons_fuiad_0.4",
)  # fmt: skip
IMAGE_DIRS = ("realiad_256", "realiad_512", "realiad_1024", "realiad_raw")
VIEWS = ("C1", "C2", "C3", "C4", "C5")
ENTRY_KEYS = ("category", "anomaly_class", "image_path", "mask_path")
# The camera is in the file name: the sample key (category, sample number, OK or NG_<defect>) then _C<view>_, the
# pattern of the official evaluation (adeval --sample_key_pat in the official README).
_VIEW_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z]_C(?P<view>[0-9])_")

# What a cached file holds; a change here (or in read_image/read_mask's rules) needs a new version.
CACHE_VERSION = 1
_CACHE_RULES = {
    "image": "read_image: bilinear antialias to size x size, stored as uint8 round(255 x)",
    "mask": "read_mask: binarised at full size, nearest to size x size, stored as uint8 0/1",
}


@functools.cache
def cached_bytes(size: int, kind: str) -> int:
    """Exact bytes of one cached file (a .npy of uint8: 3 x size x size for an image, size x size for a mask)."""
    shape = (3, size, size) if kind == "image" else (size, size)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype=np.uint8))
    return buffer.tell()


class ResizeCache:
    """Images and masks resized once to one size, on disk: ``<dir>/<size>px/<kk>/<key>.npy``.

    The key is a hash of the source file's absolute path, size and mtime, the target size and the resize rule, so
    an edited or replaced source file gets a new entry and a stale one is never served. Files are written to a
    temporary name and renamed, so a killed run or two loader workers never leave a half-written entry.
    """

    def __init__(self, folder: str | os.PathLike, size: int) -> None:
        self.folder = Path(folder).expanduser() / f"{size}px"
        self.size = int(size)

    def path(self, source: str, kind: str) -> Path:
        try:
            stat = Path(source).stat()
        except OSError as exc:
            raise DataError(f"cannot read {kind} {source}: {exc} (expected a readable {kind} file)") from exc
        fields = [CACHE_VERSION, kind, str(Path(source).absolute()), stat.st_size, stat.st_mtime_ns, self.size]
        key = hashlib.sha256(json.dumps([*fields, _CACHE_RULES[kind]]).encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, entry: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        """The cached array, or None when it is absent or unreadable (then it is written again)."""
        try:
            array = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            log.warning("resize cache entry %s is unreadable (%s); it is written again", entry, exc)
            return None
        if array.dtype != np.uint8 or array.shape != shape:
            log.warning("resize cache entry %s holds %s %s, expected uint8 %s; written again", entry,
                        array.dtype, array.shape, shape)  # fmt: skip
            return None
        return array

    def store(self, entry: Path, array: np.ndarray) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary: Path | None = None
        try:
            with tempfile.NamedTemporaryFile(dir=entry.parent, prefix=f".{entry.stem}.", delete=False) as f:
                temporary = Path(f.name)
                np.save(f, array, allow_pickle=False)
            temporary.replace(entry)
        except BaseException:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
            raise

    def image(self, record: SampleRecord) -> torch.Tensor:
        entry = self.path(record.path, "image")
        array = self.load(entry, (3, self.size, self.size))
        if array is None:
            array = (read_image(record.path, self.size) * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
            self.store(entry, array)
        return torch.from_numpy(array).float() / 255.0

    def mask(self, record: SampleRecord) -> torch.Tensor:
        assert record.mask_path is not None
        entry = self.path(record.mask_path, "mask")
        array = self.load(entry, (self.size, self.size))
        if array is None:
            array = read_mask(record.mask_path, record.path, self.size)[0].to(torch.uint8).numpy()
            self.store(entry, array)
        return torch.from_numpy(array).float()[None]

    def report(self, records: Sequence[SampleRecord], what: str) -> None:
        """One log line: how many of ``records`` are cached already and what the cache costs on disk."""
        images = sum(self.path(r.path, "image").is_file() for r in records)
        masked = [r for r in records if r.mask_path is not None]
        masks = sum(self.path(r.mask_path, "mask").is_file() for r in masked)  # type: ignore[arg-type]
        per_image, per_mask = cached_bytes(self.size, "image"), cached_bytes(self.size, "mask")
        total = len(records) * per_image + len(masked) * per_mask
        log.info(
            "resize cache %s (%s): %d images at %d px (%d cached, %d to write) and %d masks (%d cached); "
            "%d B per image x %d + %d B per mask x %d = %.3f GB on disk",
            self.folder, what, len(records), self.size, images, len(records) - images, len(masked), masks,
            per_image, len(records), per_mask, len(masked), total / 1e9,
        )  # fmt: skip


class CachedRecordDataset(RecordDataset):
    """A :class:`RecordDataset` that reads its images and masks through a :class:`ResizeCache` (the first read of
    each writes the entry), reporting the original paths, so predictions name the data set's own files."""

    def __init__(self, records: Sequence[SampleRecord], image_size: int, cache: ResizeCache, what: str) -> None:
        super().__init__(records, image_size)
        self.cache = cache
        cache.report(self.records, what)

    def __getitem__(self, index: int) -> AnomalySample:
        record = self.records[index]
        image = self.cache.image(record)
        mask = self.cache.mask(record) if record.mask_path is not None else torch.zeros(1, *image.shape[-2:])
        return AnomalySample(
            image=image, mask=mask, label=record.label, category=record.category, path=record.path,
            has_mask=record.has_mask,
        )  # fmt: skip


def cached_dataset(
    records: list[SampleRecord], image_size: int, cache_dir: str | os.PathLike | None, what: str
) -> RecordDataset:
    """Records read through the resize cache under ``cache_dir``, or lazily from the originals without one."""
    if cache_dir in (None, ""):
        return RecordDataset(records, image_size)
    return CachedRecordDataset(records, image_size, ResizeCache(cache_dir, image_size), what)  # type: ignore[arg-type]


def _split_name(split: str, categories: Sequence[str]) -> str:
    """``train pcb`` or ``test, 30 categories``: what a cache log line is about."""
    return f"{split} {categories[0]}" if len(categories) == 1 else f"{split}, {len(categories)} categories"


class RealIADSource(IndexedSource):
    """Indexes Real-IAD from its json split files: one camera view (``view=C1``..``C5``) or every view as a
    separate sample (``view=all``); images and masks are read through the resize cache."""

    def __init__(
        self,
        root: str | os.PathLike | None,
        json_setting: str = "realiad_jsons",
        images: str = "realiad_1024",
        view: str = "all",
        categories: Sequence[str] | str = "all",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if root in (None, ""):
            raise DataError("data.root is not set (expected the Real-IAD folder holding realiad_1024/ and "
                            "realiad_jsons/, e.g. data.root=/data/Real-IAD or REAL_IAD_ROOT)")  # fmt: skip
        base = Path(root).expanduser()  # type: ignore[arg-type]
        if not base.is_dir():
            raise DataError(f"Real-IAD root {base} does not exist (expected a folder holding {images}/ and "
                            f"realiad_jsons/); set data.root")  # fmt: skip
        self.view = self._check_view(view)
        self.json_setting = json_setting
        self.cache_dir = cache_dir
        self.image_dir = base / images
        if not self.image_dir.is_dir():
            found = sorted(p.name for p in base.glob("realiad_*") if p.is_dir() and p.name in IMAGE_DIRS)
            raise DataError(
                f"missing folder {self.image_dir} (expected the Real-IAD images, one of "
                f"{', '.join(IMAGE_DIRS)}; found: {', '.join(found) or 'none'}); set data.source.images"
            )
        self.json_dir = self._find_json_dir(base, json_setting)
        available = sorted(p.stem for p in self.json_dir.glob("*.json") if not p.name.startswith("."))
        self._start_index(base, select_categories(categories, available, f"Real-IAD {self.json_dir}", DataError))
        for category in self._categories:
            self._train[category], self._test[category] = self._index(category)

    @staticmethod
    def _check_view(view: str) -> str:
        chosen = str(view).strip()
        if chosen.lower() == "all":
            return "all"
        if chosen.upper() not in VIEWS:
            raise DataError(f"data.source.view={view!r}: expected all or one camera of {', '.join(VIEWS)}")
        return chosen.upper()

    @staticmethod
    def _find_json_dir(base: Path, setting: str) -> Path:
        """``<root>/<setting>`` (the official README) or ``<root>/realiad_jsons/<setting>`` (realiad_jsons.zip
        unpacked into its own folder): the first that holds json files."""
        candidates = [base / setting, base / "realiad_jsons" / setting]
        for candidate in candidates:
            if candidate.is_dir() and any(candidate.glob("*.json")):
                return candidate
        found = sorted({p.parent.name for p in base.glob("realiad_jsons*/*.json")} |
                       {p.parent.name for p in base.glob("realiad_jsons/realiad_jsons*/*.json")})  # fmt: skip
        raise DataError(f"no Real-IAD split files: expected <category>.json in {candidates[0]} or {candidates[1]} "
                        f"(settings: {', '.join(JSON_SETTINGS)}; found: {', '.join(found) or 'none'}); "
                        "set data.source.json_setting")  # fmt: skip

    def _load_json(self, path: Path) -> tuple[dict[str, Any], list[Any], list[Any]]:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read Real-IAD split file {path}: {exc} (expected json)") from exc
        if not isinstance(info, dict) or not all(key in info for key in ("meta", "train", "test")):
            raise DataError(f"Real-IAD split file {path}: expected an object with keys meta, train and test")
        meta, train, test = info["meta"], info["train"], info["test"]
        if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("prefix", "normal_class")):
            raise DataError(f"Real-IAD split file {path}: meta must hold the strings prefix and normal_class")
        for split, entries in (("train", train), ("test", test)):
            if not isinstance(entries, list):
                raise DataError(f"Real-IAD split file {path}: {split} must be a list of entries")
        return meta, train, test

    def _entry(self, path: Path, split: str, index: int, entry: Any, category: str) -> tuple[str, str | None, str]:
        """(image path, mask path or None, anomaly class) of one json entry, checked."""
        where = f"Real-IAD split file {path}: {split}[{index}]"
        if not isinstance(entry, dict) or not all(key in entry for key in ENTRY_KEYS):
            raise DataError(f"{where} must be an object with keys {', '.join(ENTRY_KEYS)}, got {entry!r}")
        if entry["category"] != category:
            raise DataError(f"{where} has category {entry['category']!r}, expected {category!r} (its file's name)")
        image, mask, anomaly = entry["image_path"], entry["mask_path"], entry["anomaly_class"]
        if not isinstance(image, str) or not image or not isinstance(anomaly, str):
            raise DataError(f"{where}: image_path and anomaly_class must be non-empty strings")
        if mask is not None and not isinstance(mask, str):
            raise DataError(f"{where}: mask_path must be a string or null, got {mask!r}")
        return image, mask or None, anomaly

    def _view_of(self, path: Path, split: str, index: int, image: str) -> str:
        match = _VIEW_PATTERN.match(Path(image).name)
        if match is None:
            raise DataError(
                f"Real-IAD split file {path}: {split}[{index}] image {image} carries no camera view in "
                "its name (expected <category>_<nnnn>_<OK|NG_<defect>>_C<1-5>_<timestamp>.jpg)"
            )
        return f"C{match['view']}"

    def _index(self, category: str) -> tuple[list[SampleRecord], list[SampleRecord]]:
        """Train entries are normal by the official rule (the FUIAD settings put unlabelled anomalies among them on
        purpose); a test entry is anomalous when its class is not meta.normal_class and it has a mask: the official
        loader scores an NG entry without a mask (a view of an NG sample, presumably one the defect is not seen
        from) as normal, and so do we, so the numbers compare."""
        path = self.json_dir / f"{category}.json"
        meta, train_entries, test_entries = self._load_json(path)
        folder = self.image_dir / meta["prefix"]
        normal = meta["normal_class"]
        records: dict[str, list[SampleRecord]] = {"train": [], "test": []}
        noisy = unseen = 0
        for split, entries in (("train", train_entries), ("test", test_entries)):
            for index, entry in enumerate(entries):
                image, mask, anomaly = self._entry(path, split, index, entry, category)
                if self.view != "all" and self._view_of(path, split, index, image) != self.view:
                    continue
                if split == "train":
                    noisy += anomaly != normal
                    records[split].append(SampleRecord(str(folder / image), category, 0, None, False, anomaly))
                    continue
                anomalous = anomaly != normal and mask is not None
                unseen += anomaly != normal and mask is None
                defect = anomaly if anomalous or anomaly == normal else f"{anomaly} (no mask: normal)"
                mask_path = str(folder / mask) if anomalous and mask is not None else None
                records[split].append(SampleRecord(str(folder / image), category, int(anomalous), mask_path, False,
                                                   defect))  # fmt: skip
        chosen = "" if self.view == "all" else f" of view {self.view}"
        for split in ("train", "test"):
            if not records[split]:
                raise DataError(f"empty category: no {split} entries{chosen} for {category} in {path}")
        pixel_labels = any(r.label == 1 for r in records["test"])
        test = [SampleRecord(r.path, r.category, r.label, r.mask_path, pixel_labels, r.defect) for r in records["test"]]
        if noisy:
            log.info("Real-IAD %s (%s): %d of %d training images are labelled anomalous (the setting's noise); "
                     "trained on as normal", category, self.json_setting, noisy, len(records["train"]))  # fmt: skip
        if unseen:
            log.info("Real-IAD %s: %d NG test images have no mask: scored as normal, as the official code does",
                     category, unseen)  # fmt: skip
        return records["train"], test

    def train_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        records = [r for c in categories for r in self._train[c]]
        return cached_dataset(records, image_size, self.cache_dir, _split_name("train", categories))

    def test_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        records = [r for c in categories for r in self._test[c]]
        return cached_dataset(records, image_size, self.cache_dir, _split_name("test", categories))
