"""Every PIL mode reads as float32 RGB (3, H, W) in [0, 1] by its stated rule, or fails naming the file.

Expected values are written out by hand (or from the colour science), never by asking PIL to convert the same
image, so a conversion that goes wrong the way PIL's ``convert('RGB')`` does for float images is caught.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data.mvtec import DataError, _to_rgb, check_image, read_image


def _read(img: Image.Image, path: Path, **save: object) -> np.ndarray:
    """Save, read back with the loader, and return (H, W, 3) so expectations read like pixels."""
    img.save(path, **save)
    with Image.open(path) as reopened:
        assert reopened.mode == img.mode, f"{path.suffix} did not keep mode {img.mode}"
    tensor = read_image(path, None)
    assert tensor.dtype.is_floating_point and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy()


def _grey(*values: float) -> np.ndarray:
    return np.repeat(np.array([values], dtype=np.float32)[..., None], 3, axis=2)


def test_bilevel(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[False, True]]))
    np.testing.assert_array_equal(_read(img, tmp_path / "b.png"), _grey(0.0, 1.0))


def test_grey(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8))
    np.testing.assert_allclose(_read(img, tmp_path / "l.png"), _grey(0.0, 0.2, 1.0), atol=1e-6)


def test_grey_alpha_is_composited_on_black(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[[200, 255], [200, 128], [200, 0]]], dtype=np.uint8), mode="LA")
    expected = _grey(200 / 255, 200 / 255 * 128 / 255, 0.0)
    np.testing.assert_allclose(_read(img, tmp_path / "la.png"), expected, atol=1e-6)


def test_rgb_and_rgba(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(_read(Image.fromarray(rgb), tmp_path / "rgb.png"), rgb / 255, atol=1e-6)
    rgba = np.array([[[255, 0, 0, 255], [0, 128, 255, 51], [9, 9, 9, 0]]], dtype=np.uint8)
    expected = rgba[..., :3] / 255 * rgba[..., 3:] / 255
    np.testing.assert_allclose(_read(Image.fromarray(rgba, mode="RGBA"), tmp_path / "rgba.png"), expected, atol=1e-6)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30])
    plain = np.array([[[1, 0, 0], [0, 1, 0], [10 / 255, 20 / 255, 30 / 255]]])
    np.testing.assert_allclose(_read(img, tmp_path / "p.png"), plain, atol=1e-6)
    keyed = plain.copy()
    keyed[0, 1] = 0.0  # index 1 is transparent: black, not green
    np.testing.assert_allclose(_read(img, tmp_path / "pt.png", transparency=1), keyed, atol=1e-6)


def test_palette_alpha(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[[0, 255], [1, 102]]], dtype=np.uint8), mode="PA")
    img.putpalette([255, 0, 0, 0, 255, 0])
    np.testing.assert_allclose(_read(img, tmp_path / "pa.tif"), [[[1, 0, 0], [0, 0.4, 0]]], atol=1e-6)


def test_transparency_key_on_grey_and_rgb(tmp_path: Path) -> None:
    grey = Image.fromarray(np.array([[10, 200]], dtype=np.uint8))
    np.testing.assert_allclose(_read(grey, tmp_path / "lt.png", transparency=10), _grey(0.0, 200 / 255), atol=1e-6)
    rgb = Image.fromarray(np.array([[[10, 20, 30], [200, 1, 1]]], dtype=np.uint8))
    out = _read(rgb, tmp_path / "rgbt.png", transparency=(10, 20, 30))
    np.testing.assert_allclose(out, [[[0, 0, 0], [200 / 255, 1 / 255, 1 / 255]]], atol=1e-6)


def test_cmyk(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [0, 255, 255, 0], [255, 0, 255, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    out = _read(Image.fromarray(cmyk, mode="CMYK"), tmp_path / "c.tif")
    np.testing.assert_allclose(out, [[[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]]], atol=1e-6)


def test_ycbcr(tmp_path: Path) -> None:
    ycc = np.array([[[255, 128, 128], [0, 128, 128], [76, 85, 255]]], dtype=np.uint8)  # white, black, ~red (JFIF)
    out = _read(Image.fromarray(ycc, mode="YCbCr"), tmp_path / "y.tif")
    np.testing.assert_allclose(out, [[[1, 1, 1], [0, 0, 0], [1, 0, 0]]], atol=3 / 255)


def test_lab(tmp_path: Path) -> None:
    # PIL's LAB: L*·255/100, a*, b* as signed bytes. White, black, L*≈50 grey (sRGB ≈ 119) and sRGB red (D50).
    lab = np.array([[[255, 0, 0], [0, 0, 0], [128, 0, 0], [138, 81, 70]]], dtype=np.uint8)
    out = _read(Image.fromarray(lab, mode="LAB"), tmp_path / "lab.tif")
    expected = [[[1, 1, 1], [0, 0, 0], [119 / 255] * 3, [1, 0, 0]]]
    np.testing.assert_allclose(out, expected, atol=0.03)


def test_hsv_in_memory() -> None:
    # No file format stores HSV, so the conversion is checked on an opened image directly.
    hsv = np.array([[[0, 255, 255], [85, 255, 255], [170, 255, 255], [0, 0, 128]]], dtype=np.uint8)
    out = _to_rgb(Image.fromarray(hsv, mode="HSV"), "hsv")
    np.testing.assert_allclose(out, [[[1, 0, 0], [0, 1, 0], [0, 0, 1], [128 / 255] * 3]], atol=1e-6)


def test_premultiplied_alpha_in_memory() -> None:
    img = Image.fromarray(np.array([[[200, 100, 50, 128]]], dtype=np.uint8), mode="RGBA").convert("RGBa")
    stored = np.asarray(img)[..., :3] / 255  # premultiplied colour already is the composite on black
    np.testing.assert_allclose(_to_rgb(img, "rgba"), stored, atol=1e-6)
    np.testing.assert_allclose(
        stored, [[[200 / 255 * 128 / 255, 100 / 255 * 128 / 255, 50 / 255 * 128 / 255]]], atol=0.01
    )


@pytest.mark.parametrize(("mode", "dtype", "suffix"), [("I;16", "<u2", "png"), ("I;16B", ">u2", "tif")])
def test_sixteen_bit_uses_the_fixed_range(tmp_path: Path, mode: str, dtype: str, suffix: str) -> None:
    values = np.array([0, 1000, 32768, 65535], dtype=dtype)
    img = Image.frombytes(mode, (4, 1), values.tobytes())
    out = _read(img, tmp_path / f"w.{suffix}")
    np.testing.assert_allclose(out, _grey(0.0, 1000 / 65535, 32768 / 65535, 1.0), atol=1e-6)


def test_sixteen_bit_dark_image_stays_dark(tmp_path: Path) -> None:
    # Not scaled by its own maximum: a dark 16-bit image must not come out as bright as a bright one.
    img = Image.fromarray(np.array([[0, 1000]], dtype=np.uint16))
    np.testing.assert_allclose(_read(img, tmp_path / "dark.png"), _grey(0.0, 1000 / 65535), atol=1e-6)


def test_32bit_integer(tmp_path: Path) -> None:
    # Divided by 65535, not by this image's own maximum (32768), so it reads like a 16-bit image would.
    img = Image.fromarray(np.array([[0, 13107, 32768]], dtype=np.int32))
    assert img.mode == "I"
    np.testing.assert_allclose(_read(img, tmp_path / "i.tif"), _grey(0.0, 0.2, 32768 / 65535), atol=1e-6)


@pytest.mark.parametrize("bad", [70000, -1])
def test_32bit_integer_outside_16bit_range_is_refused(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "i_bad.tif"
    Image.fromarray(np.array([[0, bad]], dtype=np.int32)).save(path)
    with pytest.raises(DataError, match=r"i_bad\.tif has values in"):
        read_image(path, None)
    with pytest.raises(DataError, match=r"i_bad\.tif"):
        check_image(path)


def test_float_in_unit_range_is_kept(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32))
    assert img.mode == "F"
    np.testing.assert_allclose(_read(img, tmp_path / "f.tif"), _grey(0.0, 0.25, 1.0), atol=1e-7)


@pytest.mark.parametrize("bad", [2.0, -0.5, float("nan"), float("inf")])
def test_float_outside_unit_range_is_refused(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "f_bad.tif"
    Image.fromarray(np.array([[0.0, bad]], dtype=np.float32)).save(path)
    with pytest.raises(DataError, match=r"f_bad\.tif"):
        read_image(path, None)
    with pytest.raises(DataError, match=r"f_bad\.tif"):
        check_image(path)


def test_check_image_reports_size_and_catches_truncation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    for suffix in ("png", "jpg", "tif", "bmp"):
        path = tmp_path / f"ok.{suffix}"
        Image.fromarray(pixels).save(path)
        assert check_image(path) == (30, 40)
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(DataError, match=rf"cut\.{suffix}"):
            check_image(cut)
        with pytest.raises(DataError, match=rf"cut\.{suffix}"):
            read_image(cut, None)
