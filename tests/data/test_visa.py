"""VisA's split CSV is converted to MVTec layout and read by the same loader; bad CSVs are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data.mvtec import DataError
from adzoo.data.visa import visa_source


def _visa(root: Path, classes: tuple[int, int] = (1, 1)) -> Path:
    rows = ["object,split,label,image,mask"]
    rng = np.random.default_rng(0)
    for i, (split, label) in enumerate(
        [("train", "normal"), ("train", "normal"), ("test", "normal"), ("test", "anomaly")]
    ):
        image = root / "candle" / "Data" / "Images" / ("Anomaly" if label == "anomaly" else "Normal") / f"{i:03d}.JPG"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(image, format="JPEG")
        mask = ""
        if label == "anomaly":
            mask_path = root / "candle" / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            values = np.zeros((12, 12), dtype=np.uint8)
            values[3:6, 3:6] = classes[0]  # VisA's raw masks store a defect-class id per pixel
            values[3, 3:6] = classes[1]
            Image.fromarray(values).save(mask_path)
            mask = str(mask_path.relative_to(root))
        rows.append(f"candle,{split},{label},{image.relative_to(root)},{mask}")
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa_converts_and_loads(tmp_path: Path) -> None:
    source = visa_source(_visa(tmp_path / "visa"), tmp_path / "out")
    assert source.categories() == ["candle"]
    test = source.test_dataset(["candle"], 12)
    anomalous = next(test[i] for i in range(len(test)) if test[i]["label"] == 1)
    assert anomalous["mask"].sum() == 9  # the 0/1 mask is read as a 3x3 region
    assert len(source.train_dataset(["candle"], 12)) == 2
    # converting again is a no-op
    assert visa_source(tmp_path / "visa", tmp_path / "out").categories() == ["candle"]


def test_missing_split_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split_csv/1cls.csv"):
        visa_source(tmp_path, tmp_path / "out")


def test_raw_visa_class_id_masks_mark_every_class(tmp_path: Path) -> None:
    # Class ids 1 and 3 in one mask: "above half the maximum" alone would drop the class-1 pixels.
    source = visa_source(_visa(tmp_path / "visa", classes=(1, 3)), tmp_path / "out")
    source.validate()
    test = source.test_dataset(["candle"], 12)
    anomalous = next(test[i] for i in range(len(test)) if test[i]["label"] == 1)
    assert anomalous["mask"].sum() == 9
