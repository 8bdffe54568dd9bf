"""The mask contract of ``read_mask``: one value per pixel, defect above half the maximum, label maps, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data.mvtec import DataError, read_mask

H, W = 6, 8
REGION = np.zeros((H, W), dtype=bool)
REGION[1:4, 2:6] = True


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(path)
    return path


def _mask(tmp_path: Path, img: Image.Image, name: str = "m_mask.png", **save: object) -> Path:
    path = tmp_path / name
    img.save(path, **save)
    return path


def _scaled(value: float, dtype: str) -> np.ndarray:
    return (REGION * value).astype(dtype)


def _read(path: Path, image: Path) -> np.ndarray:
    mask = read_mask(path, image, None)
    assert mask.shape == (1, H, W)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    return mask[0].numpy().astype(bool)


@pytest.mark.parametrize(
    "values",
    [
        _scaled(255, "uint8"),
        _scaled(1, "uint8"),  # VisA-style 0/1
        _scaled(100, "uint8"),  # read as empty before the contract
        _scaled(65535, "uint16"),
        _scaled(1000, "uint16"),  # a 16-bit mask that is not full-range
    ],
    ids=["0-255", "0-1", "0-100", "16bit-full", "16bit-1000"],
)
def test_one_channel_encodings(tmp_path: Path, image: Path, values: np.ndarray) -> None:
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(values)), image), REGION)


def test_bilevel_mask(tmp_path: Path, image: Path) -> None:
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(REGION)), image), REGION)


def test_antialiased_edges_split_at_half_the_maximum(tmp_path: Path, image: Path) -> None:
    values = _scaled(255, "uint8")
    values[0, 2:6] = 127  # just below half of 255: background
    values[4, 2:6] = 128  # just above: defect
    expected = REGION.copy()
    expected[4, 2:6] = True
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(values)), image), expected)


def test_label_map_marks_every_class(tmp_path: Path, image: Path) -> None:
    values = _scaled(3, "uint8")
    values[1, 2:6] = 1  # class 1 is below half of the max class id 3, but is a defect all the same
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(values)), image), REGION)


@pytest.mark.parametrize("colour", [(255, 0, 0), (0, 0, 255), (255, 255, 255), (128, 128, 128)])
def test_rgb_masks_take_the_max_over_colour_channels(tmp_path: Path, image: Path, colour: tuple[int, ...]) -> None:
    values = np.zeros((H, W, 3), dtype=np.uint8)
    values[REGION] = colour
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(values)), image), REGION)


def test_alpha_is_ignored(tmp_path: Path, image: Path) -> None:
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[REGION] = (255, 0, 0, 0)  # transparent but red: still a defect
    rgba[~REGION, 3] = 255
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(rgba, mode="RGBA")), image), REGION)
    la = np.zeros((H, W, 2), dtype=np.uint8)
    la[REGION, 0] = 255
    la[~REGION, 1] = 255  # opaque background, transparent defect
    np.testing.assert_array_equal(_read(_mask(tmp_path, Image.fromarray(la, mode="LA"), "la_mask.png"), image), REGION)


def test_palette_mask(tmp_path: Path, image: Path) -> None:
    img = Image.fromarray(REGION.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0])  # VOC-style dark red foreground
    np.testing.assert_array_equal(_read(_mask(tmp_path, img), image), REGION)


def test_float_masks(tmp_path: Path, image: Path) -> None:
    hard = _mask(tmp_path, Image.fromarray(_scaled(1.0, "float32")), "hard_mask.tif")
    np.testing.assert_array_equal(_read(hard, image), REGION)
    soft = REGION * 0.9 + 0.2 * ~REGION  # soft background 0.2 < 0.45 < 0.9
    path = _mask(tmp_path, Image.fromarray(soft.astype(np.float32)), "soft_mask.tif")
    np.testing.assert_array_equal(_read(path, image), REGION)


def test_32bit_integer_mask(tmp_path: Path, image: Path) -> None:
    path = _mask(tmp_path, Image.fromarray(_scaled(70000, "int32")), "wide_mask.tif")
    np.testing.assert_array_equal(_read(path, image), REGION)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_all_zero_mask_is_refused_naming_it(tmp_path: Path, image: Path, dtype: str) -> None:
    path = _mask(tmp_path, Image.fromarray(np.zeros((H, W), dtype=dtype)), "empty_mask.png")
    with pytest.raises(DataError, match=r"empty_mask\.png has no defect pixel"):
        read_mask(path, image, None)


def test_black_rgb_mask_is_refused(tmp_path: Path, image: Path) -> None:
    path = _mask(tmp_path, Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)), "black_mask.png")
    with pytest.raises(DataError, match=r"black_mask\.png has no defect pixel"):
        read_mask(path, image, None)


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_negative_or_nan_float_mask_is_refused(tmp_path: Path, image: Path, bad: float) -> None:
    values = _scaled(1.0, "float32")
    values[0, 0] = bad
    path = _mask(tmp_path, Image.fromarray(values), "bad_mask.tif")
    with pytest.raises(DataError, match=r"bad_mask\.tif"):
        read_mask(path, image, None)


def test_wrong_size_keeps_its_error_even_when_empty(tmp_path: Path, image: Path) -> None:
    path = _mask(tmp_path, Image.fromarray(np.zeros((H + 1, W), dtype=np.uint8)), "big_mask.png")
    with pytest.raises(DataError, match=rf"big_mask\.png is {W}x{H + 1} but its image .*img\.png is {W}x{H}"):
        read_mask(path, image, None)


def test_resized_with_nearest(tmp_path: Path, image: Path) -> None:
    mask = read_mask(_mask(tmp_path, Image.fromarray(_scaled(100, "uint8"))), image, 12)
    assert mask.shape == (1, 12, 12)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
