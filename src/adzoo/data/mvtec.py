"""MVTec-AD-layout folders: MVTec AD itself, the generated default set, and any user folder in that layout.

Layout: ``<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``.
A defect folder without ground truth is image-label-only: pixel metrics for that category are skipped.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from adzoo.data.types import AnomalySample, select_categories

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# OS metadata that sits next to data (compared lower-case); dot-names are skipped too. Never data, so never read.
SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
# Image modes read_image converts (every mode PIL opens files in); anything else is refused, naming the file.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
IMAGE_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"}
    | _SIXTEEN_BIT_MODES
)
WIDE_RANGE = 65535.0  # 'I' and 'I;16*' images are divided by this: PIL opens 16-bit PNG/TIFF/PGM files as them
FLOAT_TOLERANCE = 1e-4  # 'F' values this far outside [0, 1] are rounding, clipped; further out is refused
LABEL_MAP_MAX = 15  # integer masks with max <= this are label maps (VisA's raw masks hold defect-class ids 1..9)
MAX_LISTED_PROBLEMS = 20
# What PIL raises on a bad or truncated file, besides our own DataError.
_READ_ERRORS = (
    UnidentifiedImageError,
    OSError,
    EOFError,
    SyntaxError,
    ValueError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class DataError(ValueError):
    """Bad input data: the message names the offending path and what was expected."""


@dataclass(frozen=True)
class SampleRecord:
    """One image on disk and what we know about it before reading it."""

    path: str
    category: str
    label: int
    mask_path: str | None
    has_mask: bool
    defect: str = "good"


def is_hidden_or_system(name: str) -> bool:
    """True for OS metadata that is never data: dot-names (macOS '._x.png' AppleDouble files carry an image suffix
    but hold resource forks, '.DS_Store'), 'Thumbs.db', 'desktop.ini' and '__MACOSX' folders."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


@dataclass
class _Skipped:
    """Hidden/system entries passed over while indexing one category, so they are reported once, not silently."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def report(self, category: str, base: Path) -> None:
        if not self.files and not self.folders:
            return
        image_like = [p for p in self.files if p.suffix.lower() in IMAGE_EXTENSIONS]
        names = [os.path.relpath(p, base) for p in (image_like or self.files) + self.folders][:3]
        log.log(
            logging.WARNING if image_like else logging.INFO,
            "category %s: skipped %d hidden/system file(s) (%d with an image suffix) and %d hidden/system folder(s), "
            "e.g. %s; they are OS metadata, not data",
            category,
            len(self.files),
            len(image_like),
            len(self.folders),
            ", ".join(names),
        )


def _list_images(folder: Path, skipped: _Skipped | None = None) -> list[Path]:
    images = []
    for p in sorted(folder.iterdir()):
        if is_hidden_or_system(p.name):
            if skipped is not None:
                (skipped.files if p.is_file() else skipped.folders).append(p)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
    return images


def _mask_for(gt_dir: Path, image: Path) -> Path | None:
    for candidate in (gt_dir / f"{image.stem}_mask.png", gt_dir / f"{image.stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def _check_mode(mode: str, path: str | Path, what: str = "image") -> None:
    if mode not in IMAGE_MODES:
        raise DataError(
            f"{what} {path} has PIL mode {mode!r}, which adzoo does not convert "
            f"(expected one of {', '.join(sorted(IMAGE_MODES))}); save it as 8-bit RGB or grayscale"
        )


def _wide_to_unit(img: Image.Image, path: str | Path) -> np.ndarray:
    """One-channel 'I', 'I;16*' and 'F' images as float32 (H, W) in [0, 1], by a fixed rule (never by the image's
    own maximum, which would make two images of one set incomparable)."""
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all():
            raise DataError(f"float image {path} contains NaN or infinite values (expected values in [0, 1])")
        lo, hi = float(values.min()), float(values.max())
        if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
            raise DataError(
                f"float image {path} has values in [{lo:g}, {hi:g}] (expected [0, 1]: a float image has no "
                "implied range, so adzoo does not guess one); rescale it to [0, 1] or save it as 8/16-bit"
            )
        return np.clip(values, 0.0, 1.0)
    values = np.asarray(img)
    if img.mode == "I":
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > WIDE_RANGE:
            raise DataError(
                f"32-bit integer image {path} has values in [{lo}, {hi}] (expected [0, 65535], the 16-bit range "
                "it is divided by); save it as 8- or 16-bit"
            )
    return values.astype(np.float32) / WIDE_RANGE


def _to_rgb(img: Image.Image, path: str | Path) -> np.ndarray:
    """Any supported mode as float32 (H, W, 3) in [0, 1]: colour spaces through PIL's converters, alpha and PNG
    transparency keys composited on black (transparent pixels carry no colour), wide modes by a fixed range."""
    mode = img.mode
    _check_mode(mode, path)
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return np.repeat(_wide_to_unit(img, path)[..., None], 3, axis=2)
    if mode in ("La", "RGBa"):  # premultiplied alpha: the colour channels already are the composite on black
        colour = np.asarray(img, dtype=np.float32)[..., :-1] / 255.0
        return np.repeat(colour, 3, axis=2) if mode == "La" else colour
    if mode in ("LA", "RGBA", "PA") or (mode in ("1", "L", "P", "RGB") and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]
    if mode in ("1", "L"):
        return np.repeat(np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0, 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: str | Path, image_size: int | None) -> torch.Tensor:
    """Read any image as float32 RGB (3, H, W) in [0, 1], or fail with a DataError naming the file.

    Rules (one per mode, so every image of a set reads on the same scale):
    '1'/'L' are grey, replicated to 3 channels; 'RGB'/'RGBX'/'P' as stored; 'CMYK', 'YCbCr', 'LAB', 'HSV' through
    PIL's converters; alpha ('LA', 'RGBA', 'PA', PNG transparency keys) composited on black, premultiplied
    ('La', 'RGBa') taken as is; 'I;16*' and 'I' divided by 65535 ('I' outside [0, 65535] is refused); 'F' must
    already be in [0, 1] (refused otherwise). Other modes are refused.
    """
    try:
        with Image.open(path) as img:
            img.load()
            array = _to_rgb(img, path)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {exc} (expected a readable image file)") from exc
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if image_size is not None:
        tensor = resize_image(tensor, image_size)
    return tensor


def check_image(path: str | Path) -> tuple[int, int]:
    """Cheaply check that :func:`read_image` will read ``path``; return its (width, height).

    The header gives mode and size; PNG is verified by its chunk checksums without inflating, JPEG decoded at 1/8
    scale, so truncated files are caught. 'I' and 'F' images are decoded: their value range decides if they read.
    """
    try:
        with Image.open(path) as img:
            size, mode = img.size, img.mode
            _check_mode(mode, path)
            if 0 in size:
                raise DataError(f"image {path} is empty ({size[0]}x{size[1]}); expected at least one pixel")
            if mode in ("I", "F"):
                img.load()
                _wide_to_unit(img, path)
            elif img.format == "PNG":
                img.verify()
            elif img.format == "JPEG":
                img.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
            else:
                img.load()
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {exc} (expected a readable image file)") from exc
    return size


def resize_image(image: torch.Tensor, image_size: int) -> torch.Tensor:
    if image.shape[-2:] == (image_size, image_size):
        return image
    return F.interpolate(image[None], size=(image_size, image_size), mode="bilinear", antialias=True)[0]


def _mask_values(img: Image.Image, path: str | Path) -> np.ndarray:
    """One value per pixel: one-channel modes as stored, colour modes the max over colour channels, alpha ignored."""
    mode = img.mode
    _check_mode(mode, path, "mask")
    if mode in ("La", "RGBa"):
        raise DataError(f"mask {path} has premultiplied alpha (mode {mode!r}); expected a mask without alpha")
    if mode in ("1", "L", "I", "F") or mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img)
    elif mode == "LA":
        values = np.asarray(img)[..., 0]
    elif mode in ("RGB", "RGBX", "RGBA"):
        values = np.asarray(img)[..., :3].max(axis=2)
    else:  # P, PA, CMYK, YCbCr, LAB, HSV: to RGB (dropping alpha), then the same max
        values = np.asarray(img.convert("RGB")).max(axis=2)
    return values.astype(np.float64)


def _binarise_mask(values: np.ndarray, path: str | Path) -> np.ndarray:
    if not np.isfinite(values).all():
        raise DataError(f"mask {path} contains NaN or infinite values (expected finite values >= 0)")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo < 0:
        raise DataError(f"mask {path} has negative values (min {lo:g}); expected values >= 0")
    if hi <= 0:
        raise DataError(
            f"mask {path} has no defect pixel (every value is 0), but it is the mask of a defect image; "
            "expected at least one defect pixel (an empty mask would silently drop the image from pixel metrics)"
        )
    if hi <= LABEL_MAP_MAX and np.array_equal(values, np.round(values)):
        return values > 0  # a label map (0/1, or class ids): every labelled pixel is a defect
    return values > hi / 2


def _read_binary_mask(path: str | Path, image_path: str | Path, size: tuple[int, int] | None) -> np.ndarray:
    """Decode, check against the image's (width, height) when known, then binarise by the contract."""
    try:
        with Image.open(path) as img:
            img.load()
            values = _mask_values(img, path)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read mask {path}: {exc} (expected a readable PNG mask)") from exc
    if size is not None and values.shape != (size[1], size[0]):
        raise DataError(
            f"mask {path} is {values.shape[1]}x{values.shape[0]} but its image {image_path} is {size[0]}x{size[1]}; "
            "expected the same size"
        )
    return _binarise_mask(values, path)


def read_mask(path: str | Path, image_path: str | Path, image_size: int | None) -> torch.Tensor:
    """Read the mask of a defect image as float32 (1, H, W) in {0, 1}, or fail with a DataError naming the file.

    Contract: one value per pixel. One-channel masks ('1', 'L', 'I;16*', 'I', 'F') are taken as stored;
    multi-channel masks are reduced to the maximum over their colour channels, alpha ignored ('P', 'CMYK' etc.
    are converted to RGB first), so grey, white, red or any coloured region on black all mark the same pixels.
    A pixel is a defect when its value is above half the mask's maximum (0/1, 0/100, 0/255, 0/65535, 0.0/1.0 and
    antialiased edges all work), except that integer masks whose maximum is at most 15 are label maps (VisA's raw
    masks store a defect-class id per pixel): there every nonzero pixel is a defect. Refused: a mask with no defect
    pixel (its image is in a defect folder), negative or non-finite values, and a mask of another size than its
    image.
    """
    try:
        with Image.open(image_path) as img:
            size = img.size
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read image {image_path}: {exc} (expected a readable image file)") from exc
    mask = _read_binary_mask(path, image_path, size)
    tensor = torch.from_numpy(mask).float()[None]
    if image_size is not None and tensor.shape[-2:] != (image_size, image_size):
        tensor = F.interpolate(tensor[None], size=(image_size, image_size), mode="nearest")[0]
    return tensor


class RecordDataset(Dataset):
    """Reads records lazily; one image per item, as an :class:`AnomalySample`."""

    def __init__(self, records: Sequence[SampleRecord], image_size: int) -> None:
        self.records = list(records)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> AnomalySample:
        record = self.records[index]
        image = read_image(record.path, self.image_size)
        if record.mask_path is not None:
            mask = read_mask(record.mask_path, record.path, self.image_size)
        else:
            mask = torch.zeros(1, *image.shape[-2:])
        return AnomalySample(
            image=image,
            mask=mask,
            label=record.label,
            category=record.category,
            path=record.path,
            has_mask=record.has_mask,
        )


class IndexedSource:
    """A data source indexed into :class:`SampleRecord` lists per category: train, a shipped validation split
    (optional) and test. Every benchmark layout (MVTec, BTAD, MVTec AD 2, LOCO, ...) only differs in how it
    builds these lists; checking, fingerprinting and the datasets are the same, and live here once.

    Subclasses set ``root``, ``_categories`` and the three dicts, usually in ``__init__``.
    """

    root: Path
    _categories: list[str]
    _train: dict[str, list[SampleRecord]]
    _test: dict[str, list[SampleRecord]]
    _val: dict[str, list[SampleRecord]]
    _validated: set[tuple[str, bool]]

    def _start_index(self, root: Path, categories: list[str]) -> None:
        """Empty indices for ``categories`` under ``root``; subclasses then fill them."""
        self.root = root
        self._categories = categories
        self._train, self._test, self._val = {}, {}, {}
        self._validated = set()  # (category, test images included)

    def categories(self) -> list[str]:
        return list(self._categories)

    def summary(self, categories: Sequence[str] | None = None) -> str:
        """What was found, per category: images per split and per defect type, and masks found or missing
        (``adzoo-data`` prints it before anything is trained on the data)."""
        chosen = list(self._categories if categories is None else categories)
        lines = [f"{type(self).__name__} at {self.root}: {len(chosen)} categories"]
        for category in chosen:
            test = self._test.get(category, [])
            defects: dict[str, list[SampleRecord]] = {}
            for record in test:
                defects.setdefault(record.defect, []).append(record)
            parts = []
            for defect, records in sorted(defects.items()):
                anomalous = [r for r in records if r.label == 1]
                masked = sum(r.mask_path is not None for r in anomalous)
                masks = f", masks {masked}/{len(anomalous)}" if anomalous else ""
                parts.append(f"{defect} {len(records)}{masks}")
            val = len(self._val.get(category, []))
            shipped = f", validation {val} (shipped)" if val else ""
            lines.append(f"  {category}: train {len(self._train.get(category, []))}{shipped}, test {len(test)} "
                         f"({'; '.join(parts) or 'none'})")  # fmt: skip
        return "\n".join(lines)

    def validate(self, categories: Sequence[str] | str | None = None, include_test: bool = True) -> None:
        """Check every image and mask of ``categories`` (default: all indexed) in one pass; raise one DataError
        listing every problem found, so a user fixes their data once instead of once per crash mid-training.

        Images are checked by :func:`check_image` (header, checksums; no full decode where avoidable), masks are
        decoded (they are small) and checked against :func:`read_mask`'s contract and their image's size.
        Categories that passed are remembered, so the separate setting does not check them again.
        ``include_test=False`` (a search trial) checks the training and validation images only.
        """
        if categories is None:
            categories = self.categories()
        wanted = list(dict.fromkeys([categories] if isinstance(categories, str) else categories))
        unknown = [c for c in wanted if c not in self._train]
        if unknown:
            raise DataError(f"data root {self.root}: cannot validate unindexed categories {unknown}")
        problems: list[str] = []
        failed: list[str] = []
        todo = [c for c in wanted if (c, include_test) not in self._validated and (c, True) not in self._validated]
        start = time.perf_counter()
        for category in todo:
            found = self._problems(category, include_test)
            if found:
                problems.extend(found)
                failed.append(category)
            else:
                self._validated.add((category, include_test))
        if todo:
            files = sum(len(self._records(c, include_test)) for c in todo)
            log.info(
                "checked %d images (and their masks) of %d categories in %.2f s",
                files,
                len(todo),
                time.perf_counter() - start,
            )
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS])
            rest = len(problems) - MAX_LISTED_PROBLEMS
            more = f"\n  ... and {rest} more" if rest > 0 else ""
            raise DataError(
                f"data check of {self.root} found {len(problems)} problem(s) in categories {', '.join(failed)} "
                f"(fix them all, then run again):\n{listed}{more}"
            )

    def _records(self, category: str, include_test: bool = True) -> list[SampleRecord]:
        """The category's records: training, shipped validation and (unless left out) test."""
        test = self._test[category] if include_test else []
        return self._train[category] + self._val.get(category, []) + test

    def _image_problems(self, category: str, include_test: bool) -> tuple[list[str], dict[str, tuple[int, int]]]:
        """Every image of the category checked by :func:`check_image`: the problems, and each readable image's
        size (which its masks must match)."""
        problems: list[str] = []
        sizes: dict[str, tuple[int, int]] = {}
        for record in self._records(category, include_test):
            try:
                sizes[record.path] = check_image(record.path)
            except DataError as exc:
                problems.append(str(exc))
        return problems, sizes

    def _problems(self, category: str, include_test: bool = True) -> list[str]:
        problems, sizes = self._image_problems(category, include_test)
        for record in self._test[category] if include_test else []:
            if record.mask_path is None:
                continue
            try:
                # An unreadable image is listed already; its mask's own contract is still checked.
                _read_binary_mask(record.mask_path, record.path, sizes.get(record.path))
            except DataError as exc:
                problems.append(str(exc))
        return problems

    def has_masks(self, category: str) -> bool:
        return any(r.has_mask for r in self._test[category])

    def train_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        return RecordDataset([r for c in categories for r in self._train[c]], image_size)

    def test_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        return RecordDataset([r for c in categories for r in self._test[c]], image_size)

    def val_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset | None:
        """The shipped validation images (``<category>/validation/good``, MVTec AD 2's layout); None without."""
        records = [r for c in categories for r in self._val.get(c, [])]
        return RecordDataset(records, image_size) if records else None

    def files(self, include_test: bool = True) -> list[str]:
        """Every file this source reads (for the data fingerprint in results); a search trial's leave out test."""
        out = []
        for c in self._categories:
            for r in self._records(c, include_test):
                out.append(r.path)
                if r.mask_path:
                    out.append(r.mask_path)
        return out


class MVTecLayoutSource(IndexedSource):
    """Indexes an MVTec-layout root; the datamodule asks it for train/test datasets per category."""

    def __init__(self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all") -> None:
        if root in (None, ""):
            raise DataError(
                "data.root is not set (expected the folder holding the categories, e.g. data.root=/data/mvtec)"
            )
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"data root {self.root} does not exist (expected a folder of categories in MVTec layout: "
                "<root>/<category>/train/good, test/<defect>, ground_truth/<defect>); set data.root"
            )
        available = sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not is_hidden_or_system(p.name) and (p / "train").exists()
        )
        if not available:
            raise DataError(
                f"no category found under {self.root} (expected <root>/<category>/train/good in MVTec layout)"
            )
        self._start_index(self.root, select_categories(categories, available, f"data root {self.root}", DataError))
        for category in self._categories:
            self._train[category], self._test[category] = self._index(category)
            val_dir = self.root / category / "validation" / "good"
            if val_dir.is_dir():
                self._val[category] = [SampleRecord(str(p), category, 0, None, False) for p in _list_images(val_dir)]

    def _index(self, category: str) -> tuple[list[SampleRecord], list[SampleRecord]]:
        base = self.root / category
        train_dir, test_dir = base / "train" / "good", base / "test"
        for required in (train_dir, test_dir):
            if not required.is_dir():
                raise DataError(f"missing folder {required} (expected MVTec layout for category '{category}')")
        skipped = _Skipped()
        train = [SampleRecord(str(p), category, 0, None, False) for p in _list_images(train_dir, skipped)]
        if not train:
            raise DataError(f"empty category: no training images in {train_dir}")
        defect_dirs = []
        for p in sorted(test_dir.iterdir()):
            if is_hidden_or_system(p.name):
                (skipped.folders if p.is_dir() else skipped.files).append(p)
            elif p.is_dir():
                defect_dirs.append(p)
        pixel_labels = all((base / "ground_truth" / d.name).is_dir() for d in defect_dirs if d.name != "good") and any(
            d.name != "good" for d in defect_dirs
        )
        test: list[SampleRecord] = []
        for defect_dir in defect_dirs:
            is_good = defect_dir.name == "good"
            gt_dir = base / "ground_truth" / defect_dir.name
            for image in _list_images(defect_dir, skipped):
                mask_path = None
                if not is_good and pixel_labels:
                    found = _mask_for(gt_dir, image)
                    if found is None:
                        raise DataError(f"no mask for {image}: expected {gt_dir / (image.stem + '_mask.png')}")
                    mask_path = str(found)
                test.append(
                    SampleRecord(str(image), category, int(not is_good), mask_path, pixel_labels, defect_dir.name)
                )
        skipped.report(category, base)
        if not test:
            raise DataError(f"empty category: no test images under {test_dir}")
        if not pixel_labels:
            log.warning("category %s has no ground-truth masks: pixel metrics will be skipped", category)
        return train, test


def generated_source(
    root: str | os.PathLike,
    categories: Sequence[str] | str = "all",
    seed: int = 0,
    image_size: int = 128,
    n_train: int = 60,
    n_test_good: int = 12,
    n_test_per_defect: int = 6,
    preset: str = "default",
) -> MVTecLayoutSource:
    """Generate (once, cached) a generated set (the embedded default, or ``preset=mvtec_like``), then read it
    with the ordinary MVTec loader."""
    from adzoo.data.synthetic import generate_synthetic_dataset

    wanted = None if categories == "all" else ([categories] if isinstance(categories, str) else categories)
    tag = "" if preset == "default" else f"{preset}_"
    folder = Path(root).expanduser() / f"{tag}seed{seed}_size{image_size}_n{n_train}-{n_test_good}-{n_test_per_defect}"
    generate_synthetic_dataset(
        folder,
        seed=seed,
        image_size=image_size,
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_per_defect=n_test_per_defect,
        preset=preset,
    )
    return MVTecLayoutSource(folder, categories=wanted or "all")
