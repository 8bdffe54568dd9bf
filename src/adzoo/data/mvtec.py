"""MVTec-AD-layout folders: MVTec AD itself, the generated default set, and any user folder in that layout.

Layout: ``<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``.
A defect folder without ground truth is image-label-only: pixel metrics for that category are skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from adzoo.data.types import AnomalySample, select_categories

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _mask_for(gt_dir: Path, image: Path) -> Path | None:
    for candidate in (gt_dir / f"{image.stem}_mask.png", gt_dir / f"{image.stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def read_image(path: str | Path, image_size: int | None) -> torch.Tensor:
    """Read any image as float32 RGB (3, H, W) in [0, 1]; grayscale, RGBA, palette and 16-bit are converted."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float32)
                arr = arr / max(float(arr.max()), 1.0) if img.mode == "I" else arr / 65535.0
                tensor = torch.from_numpy(arr)[None].expand(3, -1, -1).clone()
            else:
                if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info):
                    # Composite on black so transparent pixels do not carry arbitrary colour.
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (0, 0, 0, 255))
                    img = Image.alpha_composite(background, img)
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
                tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc} (expected a readable image file)") from exc
    if image_size is not None:
        tensor = resize_image(tensor, image_size)
    return tensor


def resize_image(image: torch.Tensor, image_size: int) -> torch.Tensor:
    if image.shape[-2:] == (image_size, image_size):
        return image
    return F.interpolate(image[None], size=(image_size, image_size), mode="bilinear", antialias=True)[0]


def read_mask(path: str | Path, image_path: str | Path, image_size: int | None) -> torch.Tensor:
    """Read a mask as float32 (1, H, W) in {0, 1}; it must have its image's size."""
    try:
        with Image.open(path) as img:
            values = np.asarray(img.convert("L"), dtype=np.uint8)
            # MVTec masks are 0/255; some sets (VisA) store 0/1.
            mask = values > (127 if values.max() > 1 else 0)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read mask {path}: {exc} (expected a readable PNG mask)") from exc
    try:
        with Image.open(image_path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {image_path}: {exc} (expected a readable image file)") from exc
    if mask.shape != (height, width):
        raise DataError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is {width}x{height}; "
            "expected the same size"
        )
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


class MVTecLayoutSource:
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
        available = sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "train").exists())
        if not available:
            raise DataError(
                f"no category found under {self.root} (expected <root>/<category>/train/good in MVTec layout)"
            )
        self._categories = select_categories(categories, available, f"data root {self.root}", DataError)
        self._train: dict[str, list[SampleRecord]] = {}
        self._test: dict[str, list[SampleRecord]] = {}
        for category in self._categories:
            self._train[category], self._test[category] = self._index(category)

    def _index(self, category: str) -> tuple[list[SampleRecord], list[SampleRecord]]:
        base = self.root / category
        train_dir, test_dir = base / "train" / "good", base / "test"
        for required in (train_dir, test_dir):
            if not required.is_dir():
                raise DataError(f"missing folder {required} (expected MVTec layout for category '{category}')")
        train = [SampleRecord(str(p), category, 0, None, False) for p in _list_images(train_dir)]
        if not train:
            raise DataError(f"empty category: no training images in {train_dir}")
        defect_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir())
        pixel_labels = all((base / "ground_truth" / d.name).is_dir() for d in defect_dirs if d.name != "good") and any(
            d.name != "good" for d in defect_dirs
        )
        test: list[SampleRecord] = []
        for defect_dir in defect_dirs:
            is_good = defect_dir.name == "good"
            gt_dir = base / "ground_truth" / defect_dir.name
            for image in _list_images(defect_dir):
                mask_path = None
                if not is_good and pixel_labels:
                    found = _mask_for(gt_dir, image)
                    if found is None:
                        raise DataError(f"no mask for {image}: expected {gt_dir / (image.stem + '_mask.png')}")
                    mask_path = str(found)
                test.append(
                    SampleRecord(str(image), category, int(not is_good), mask_path, pixel_labels, defect_dir.name)
                )
        if not test:
            raise DataError(f"empty category: no test images under {test_dir}")
        if not pixel_labels:
            log.warning("category %s has no ground-truth masks: pixel metrics will be skipped", category)
        return train, test

    def categories(self) -> list[str]:
        return list(self._categories)

    def has_masks(self, category: str) -> bool:
        return any(r.has_mask for r in self._test[category])

    def train_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        return RecordDataset([r for c in categories for r in self._train[c]], image_size)

    def test_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        return RecordDataset([r for c in categories for r in self._test[c]], image_size)

    def files(self) -> list[str]:
        """Every file this source reads (for the data fingerprint in results)."""
        out = []
        for c in self._categories:
            for r in self._train[c] + self._test[c]:
                out.append(r.path)
                if r.mask_path:
                    out.append(r.mask_path)
        return out


def generated_source(
    root: str | os.PathLike,
    categories: Sequence[str] | str = "all",
    seed: int = 0,
    image_size: int = 128,
    n_train: int = 60,
    n_test_good: int = 12,
    n_test_per_defect: int = 6,
) -> MVTecLayoutSource:
    """Generate (once, cached) the embedded default set, then read it with the ordinary MVTec loader."""
    from adzoo.data.synthetic import generate_synthetic_dataset

    wanted = None if categories == "all" else ([categories] if isinstance(categories, str) else categories)
    folder = Path(root).expanduser() / f"seed{seed}_size{image_size}_n{n_train}-{n_test_good}-{n_test_per_defect}"
    generate_synthetic_dataset(
        folder,
        seed=seed,
        image_size=image_size,
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_per_defect=n_test_per_defect,
    )
    return MVTecLayoutSource(folder, categories=wanted or "all")
