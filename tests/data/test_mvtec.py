"""MVTec-layout loading: correct items, conversions, and errors that name the path and what was expected."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adzoo.data import AnomalyDataModule, mvtec
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


def _hide_things(root: Path, with_image_suffix: bool = True) -> None:
    base = root / "thing"
    if with_image_suffix:
        (base / "train" / "good" / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
        (base / "test" / "scratch" / "._000.png").write_bytes(b"\x00\x05\x16\x07")
    for folder in (base / "train" / "good", base / "test", base / "test" / "scratch"):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (base / "train" / "good" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (base / "test" / "good" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    rng = np.random.default_rng(3)
    for hidden in (base / "test" / ".thumbnails", base / "test" / "__MACOSX", root / ".trash" / "train" / "good"):
        _save(hidden / "000.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))


def test_hidden_and_system_files_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_tree(tmp_path)
    _hide_things(root)
    with caplog.at_level(logging.INFO, logger="adzoo.data.mvtec"):
        source = MVTecLayoutSource(root)
    assert source.categories() == ["thing"]  # the hidden '.trash' folder is no category
    test = source.test_dataset(["thing"], 8)
    assert len(source.train_dataset(["thing"], 8)) == 3 and len(test) == 2
    assert {r.defect for r in test.records} == {"good", "scratch"}  # hidden folders are no defect types
    assert source.has_masks("thing")  # a '.thumbnails' defect type without ground truth would turn masks off
    assert all("/." not in p and "__MACOSX" not in p for p in source.files())
    source.validate()
    lines = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert "category thing" in message and "7 hidden/system file(s) (2 with an image suffix)" in message
    assert "2 hidden/system folder(s)" in message


def test_skipped_system_files_without_image_suffix_are_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_tree(tmp_path)
    _hide_things(root, with_image_suffix=False)
    with caplog.at_level(logging.INFO, logger="adzoo.data.mvtec"):
        MVTecLayoutSource(root)
    lines = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO


def test_validate_lists_problems_of_two_categories_in_one_error(tmp_path: Path) -> None:
    root = make_tree(make_tree(tmp_path, "alpha"), "beta")
    broken_image = root / "alpha" / "train" / "good" / "001.png"
    broken_image.write_bytes(b"not a png")
    empty_mask = root / "beta" / "ground_truth" / "scratch" / "000_mask.png"
    _save(empty_mask, np.zeros((20, 20), dtype=np.uint8))
    datamodule = AnomalyDataModule(MVTecLayoutSource(root), image_size=16)
    with pytest.raises(DataError) as caught:
        datamodule.validate()
    message = str(caught.value)
    assert "2 problem(s) in categories alpha, beta" in message
    assert str(broken_image) in message and f"{empty_mask} has no defect pixel" in message
    assert datamodule._train is None  # nothing was read for training


def test_validate_caps_the_listing_and_counts_the_rest(tmp_path: Path) -> None:
    root = make_tree(tmp_path, size=8)
    good = root / "thing" / "train" / "good"
    for i in range(25):
        (good / f"bad{i:02d}.png").write_bytes(b"")
    with pytest.raises(DataError) as caught:
        MVTecLayoutSource(root).validate(["thing"])
    message = str(caught.value)
    assert "found 25 problem(s)" in message and "... and 5 more" in message
    assert message.count("cannot read image") == 20


def test_validate_passes_a_good_tree_and_checks_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = MVTecLayoutSource(make_tree(tmp_path))
    source.validate()
    calls: list[str] = []
    monkeypatch.setattr(mvtec, "check_image", lambda path: calls.append(path) or (20, 20))
    source.validate("thing")
    assert calls == []  # already checked: the separate setting does not pay twice
