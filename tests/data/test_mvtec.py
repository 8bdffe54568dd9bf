"""MVTec-layout loading: correct items, conversions, and errors that name the path and what was expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adzoo.data.mvtec import DataError, MVTecLayoutSource, read_image


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def make_tree(root: Path, category: str = "thing", size: int = 20, masks: bool = True) -> Path:
    rng = np.random.default_rng(0)
    base = root / category
    for i in range(3):
        _save(base / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    _save(base / "test" / "good" / "000.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    _save(base / "test" / "scratch" / "000.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    if masks:
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[2:6, 3:9] = 255
        _save(base / "ground_truth" / "scratch" / "000_mask.png", mask)
    return root


def test_items_follow_the_sample_contract(tmp_path: Path) -> None:
    source = MVTecLayoutSource(make_tree(tmp_path))
    assert source.categories() == ["thing"]
    train = source.train_dataset(["thing"], 16)
    test = source.test_dataset(["thing"], 16)
    assert len(train) == 3 and len(test) == 2
    item = train[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["label"] == 0 and item["mask"].sum() == 0
    defect = next(test[i] for i in range(len(test)) if test[i]["label"] == 1)
    assert defect["has_mask"] is True
    assert set(defect["mask"].unique().tolist()) == {0.0, 1.0}
    assert source.has_masks("thing")


def test_defects_without_ground_truth_are_image_label_only(tmp_path: Path) -> None:
    source = MVTecLayoutSource(make_tree(tmp_path, masks=False))
    assert not source.has_masks("thing")
    labels = sorted(source.test_dataset(["thing"], 8)[i]["label"] for i in range(2))
    assert labels == [0, 1]


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_grayscale_rgba_16bit_palette_are_converted(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    if mode == "L":
        Image.fromarray(rng.integers(0, 255, (9, 7), dtype=np.uint8)).save(path)
    elif mode == "RGBA":
        Image.fromarray(rng.integers(0, 255, (9, 7, 4), dtype=np.uint8), mode="RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)).convert("P").save(path)
    image = read_image(path, None)
    assert image.shape == (3, 9, 7)
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_missing_root_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        MVTecLayoutSource(tmp_path / "nope")


def test_unknown_category_lists_available(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="available: thing"):
        MVTecLayoutSource(make_tree(tmp_path), categories=["other"])


def test_missing_split_names_the_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    for p in (root / "thing" / "test").rglob("*.png"):
        p.unlink()
    for d in sorted((root / "thing" / "test").rglob("*"), reverse=True):
        d.rmdir()
    (root / "thing" / "test").rmdir()
    with pytest.raises(DataError, match=r"thing/test"):
        MVTecLayoutSource(root)


def test_empty_category(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    for p in (root / "thing" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="empty category"):
        MVTecLayoutSource(root)


def test_mask_of_the_wrong_size(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    _save(root / "thing" / "ground_truth" / "scratch" / "000_mask.png", np.zeros((5, 5), dtype=np.uint8))
    test = MVTecLayoutSource(root).test_dataset(["thing"], 16)
    with pytest.raises(DataError, match=r"000_mask.png is 5x5 but its image .* is 20x20"):
        [test[i] for i in range(len(test))]


def test_missing_mask_names_expected_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    (root / "thing" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"000_mask\.png"):
        MVTecLayoutSource(root)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    bad = root / "thing" / "train" / "good" / "001.png"
    bad.write_bytes(b"not a png at all")
    train = MVTecLayoutSource(root).train_dataset(["thing"], 16)
    with pytest.raises(DataError, match=r"001.png"):
        train[1]


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    good = root / "thing" / "train" / "good" / "002.png"
    good.write_bytes(good.read_bytes()[:60])
    train = MVTecLayoutSource(root).train_dataset(["thing"], 16)
    with pytest.raises(DataError, match=r"002.png"):
        train[2]
