"""VisA through its split CSV: converted once into MVTec layout (symlinks), then read by the MVTec loader."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from adzoo.data.mvtec import DataError, MVTecLayoutSource


def convert_visa(root: str | os.PathLike, out: str | os.PathLike, split_csv: str = "split_csv/1cls.csv") -> Path:
    """Lay VisA out as MVTec (``good``/``bad`` defect folders) with symlinks; idempotent."""
    root, out = Path(root).expanduser(), Path(out).expanduser()
    csv_path = root / split_csv
    if not csv_path.is_file():
        raise DataError(f"VisA split file {csv_path} not found (expected VisA's split_csv/1cls.csv under data.root)")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = {"object", "split", "label", "image", "mask"}
    if not rows or not expected <= set(rows[0]):
        raise DataError(f"{csv_path} must have the columns {sorted(expected)}")
    for row in rows:
        anomalous = row["label"].strip().lower() != "normal"
        split = row["split"].strip().lower()
        split = split if split in ("train", "val", "validation") else "test"
        defect = "bad" if anomalous else "good"
        image = root / row["image"]
        if split in ("val", "validation"):
            if not anomalous:  # a shipped validation split: its normal images (anomalies are made, with masks)
                _link(image, out / row["object"] / "validation" / "good" / image.name)
            continue
        target = out / row["object"] / split / defect / image.name
        _link(image, target)
        if anomalous and split == "test":
            if not row["mask"]:
                raise DataError(f"{csv_path}: anomalous test image {image} has no mask entry")
            _link(root / row["mask"], out / row["object"] / "ground_truth" / defect / f"{image.stem}_mask.png")
    return out


def _link(source: Path, target: Path) -> None:
    if not source.is_file():
        raise DataError(f"VisA file {source} listed in the split CSV does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source.resolve())


def visa_source(
    root: str | os.PathLike,
    out: str | os.PathLike,
    categories: Sequence[str] | str = "all",
    split_csv: str = "split_csv/1cls.csv",
) -> MVTecLayoutSource:
    return MVTecLayoutSource(convert_visa(root, out, split_csv), categories=categories)
