"""Random MVTec-layout trees, good and broken: each loads correctly or fails naming the path and the expectation.

No bare traceback from deep inside PIL or torch: every failure is a DataError whose message contains the
offending path (or the root), so a user can fix their data. Trees vary image mode, mask encoding and the hidden
or system files that copies from macOS and Windows leave behind. A tree that loads must load the right values
(checked against an independent expectation per mode and mask encoding), and ``validate()`` must refuse exactly
the trees that loading refuses, naming the same path, before anything is read for training.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from adzoo.data.mvtec import DataError, MVTecLayoutSource, resize_image

# Modes and the file suffix they are stored under; the *_bad ones break the stated rule and must be refused.
MODES = {
    "RGB": "png", "L": "png", "1": "png", "LA": "png", "RGBA": "png", "P": "png", "P_trns": "png",
    "I;16": "png", "CMYK": "tif", "YCbCr": "tif", "I": "tif", "F": "tif", "I_bad": "tif", "F_bad": "tif",
}  # fmt: skip
BAD_MODES = ("I_bad", "F_bad")
MASKS = (
    "L255", "L1", "L100", "antialiased", "label_map", "grey_rgb", "colours_rgb", "rgba", "palette", "i16", "i16_small",
    "all_zero",
)  # fmt: skip
FAULTS = (
    "none", "missing_train", "missing_test", "empty_train", "missing_mask", "mask_wrong_size",
    "non_image_file", "unreadable_image", "truncated_image", "empty_file", "unreadable_mask", "no_ground_truth",
)  # fmt: skip
HIDDEN = ("apple_double", "ds_store", "thumbs_db", "desktop_ini", "hidden_folder", "macosx_folder", "hidden_root")
NAMES = ("000", "img 1", "ünï-çødé", "a.b.c", "UPPER")


def _write_image(path: Path, mode: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Write an image in ``mode``; return what it must read as, float (H, W, 3) in [0, 1], worked out by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    if mode == "RGB":
        img, expected = Image.fromarray(rgb), rgb / 255
    elif mode == "L":
        img, expected = Image.fromarray(grey), np.repeat(grey[..., None], 3, axis=2) / 255
    elif mode == "1":
        bits = grey > 127
        img, expected = Image.fromarray(bits), np.repeat(bits[..., None], 3, axis=2).astype(float)
    elif mode == "LA":
        img = Image.fromarray(np.concatenate([grey[..., None], alpha], axis=2), mode="LA")
        expected = np.repeat(grey[..., None], 3, axis=2) / 255 * alpha / 255
    elif mode == "RGBA":
        img, expected = Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA"), rgb / 255 * alpha / 255
    elif mode in ("P", "P_trns"):
        palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
        index = rng.integers(0, 16, (h, w), dtype=np.uint8)
        img = Image.fromarray(index, mode="P")
        img.putpalette(palette.flatten().tolist())
        expected = palette[index] / 255
        if mode == "P_trns":
            expected[index == 3] = 0.0  # the transparent index composites on black
            img.save(path, transparency=3)
            return expected
    elif mode == "I;16":
        wide = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        img, expected = Image.fromarray(wide), np.repeat(wide[..., None], 3, axis=2) / 65535
    elif mode == "CMYK":
        cmy = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(np.concatenate([cmy, np.zeros((h, w, 1), np.uint8)], axis=2), mode="CMYK")
        expected = (255 - cmy.astype(float)) / 255
    elif mode == "YCbCr":
        img = Image.fromarray(rgb, mode="YCbCr")
        y, cb, cr = (rgb[..., i].astype(float) for i in range(3))
        jfif = [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)]
        expected = np.clip(np.stack(jfif, axis=2), 0, 255) / 255
    elif mode in ("I", "I_bad"):
        wide = rng.integers(0, 65536, (h, w)).astype(np.int32)
        if mode == "I_bad":
            wide[0, 0] = 70_000 if rng.random() < 0.5 else -1
        img, expected = Image.fromarray(wide), np.repeat(wide[..., None], 3, axis=2) / 65535
    else:  # F, F_bad
        unit = rng.random((h, w)).astype(np.float32)
        if mode == "F_bad":
            unit *= 255.0  # 0..255 floats: no implied range, refused rather than guessed
            unit[0, 0] = 200.0
        img, expected = Image.fromarray(unit), np.repeat(unit[..., None], 3, axis=2).astype(float)
    img.save(path)
    return expected


def _write_mask(path: Path, kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Write a mask encoded as ``kind``; return the defect region it must read as, bool (H, W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    top, left = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
    region = np.zeros(size, dtype=bool)
    region[top : top + int(rng.integers(1, h - top + 1)), left : left + int(rng.integers(1, w - left + 1))] = True
    if kind in ("L255", "L1", "L100"):
        values = (region * int(kind[1:])).astype(np.uint8)
        img = Image.fromarray(values)
    elif kind == "antialiased":  # soft edges: below half the maximum is background, above is defect
        values = np.where(region, rng.choice([140, 200, 255], size), rng.choice([0, 30, 120], size)).astype(np.uint8)
        values[top, left] = 255  # the maximum, so half of it (127.5) splits edge values 120 | 140
        img = Image.fromarray(values)
    elif kind == "label_map":  # VisA's raw masks: a class id per pixel
        img = Image.fromarray((region * rng.integers(1, 10, size)).astype(np.uint8))
    elif kind in ("grey_rgb", "colours_rgb", "rgba"):
        # Any saturated colour is a defect: pure blue is as much a defect as white (luma would say 29 vs 255).
        palette = np.array([(255, 255, 255)] if kind == "grey_rgb" else [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
        values = np.zeros((h, w, 3), dtype=np.uint8)
        values[region] = palette[rng.integers(0, len(palette), int(region.sum()))]
        if kind == "rgba":  # alpha is ignored, so a random alpha must not change the region
            values = np.concatenate([values, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=2)
        img = Image.fromarray(values, mode="RGBA" if kind == "rgba" else "RGB")
    elif kind == "palette":
        img = Image.fromarray(region.astype(np.uint8), mode="P")
        img.putpalette([0, 0, 0, 0, 0, 200])
    elif kind in ("i16", "i16_small"):
        img = Image.fromarray((region * (65535 if kind == "i16" else 1000)).astype(np.uint16))
    else:  # all_zero: refused, it would silently drop the image from the pixel metrics
        img = Image.fromarray(np.zeros(size, dtype=np.uint8))
    img.save(path)
    return region


@dataclass
class Tree:
    """What was written: the paths an error may name (empty if valid) and the values a load must return."""

    root: Path
    tolerance: float = 1e-5
    problems: list[Path] = field(default_factory=list)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _build(
    root: Path, fault: str, mode: str, mask_kind: str, hidden: set[str], name: str, size: tuple[int, int], seed: int
) -> Tree:
    """Write a one-category tree with one fault, one image mode, one mask encoding and some hidden files."""
    rng = np.random.default_rng(seed)
    tree = Tree(root, tolerance=1.5 / 255 if mode == "YCbCr" else 1e-5)  # JFIF formula vs PIL's integer maths
    base = root / "part"
    suffix = MODES[mode]
    train = [base / "train" / "good" / f"{name}{i}.{suffix}" for i in range(2)]
    good = base / "test" / "good" / f"{name}.{suffix}"
    defect = base / "test" / "dent" / f"{name}.{suffix}"
    for path in [*train, good, defect]:
        tree.images[str(path)] = _write_image(path, mode, size, rng)
    mask = base / "ground_truth" / "dent" / f"{name}_mask.png"
    tree.masks[str(defect)] = _write_mask(mask, mask_kind, size, rng)
    fault_path = _apply_fault(fault, root, base, train[0], defect, mask, size)
    if fault_path is not None:
        tree.problems.append(fault_path)
    if fault == "no_ground_truth":
        tree.masks.clear()
    elif mask_kind == "all_zero" and fault not in ("missing_mask", "mask_wrong_size", "unreadable_mask"):
        tree.problems.append(mask)
    if mode in BAD_MODES:
        tree.problems.extend(Path(p) for p in tree.images if Path(p).exists())
    _add_hidden(root, base, hidden, size, rng)
    return tree


def _apply_fault(
    fault: str, root: Path, base: Path, first_train: Path, defect: Path, mask: Path, size: tuple[int, int]
) -> Path | None:
    """Break the tree one way; return the path the error must name (None if the tree stays valid)."""
    if fault == "missing_train":
        shutil.rmtree(base / "train")
        return root  # no category left: the root is named
    if fault == "missing_test":
        shutil.rmtree(base / "test")
        return base / "test"
    if fault == "empty_train":
        for p in (base / "train" / "good").iterdir():
            p.unlink()
        return base / "train" / "good"
    if fault == "missing_mask":
        mask.unlink()
        return mask
    if fault == "mask_wrong_size":
        Image.fromarray(np.zeros((size[0] + 3, size[1]), dtype=np.uint8)).save(mask)
        return mask
    if fault == "non_image_file":
        (base / "train" / "good" / "notes.txt").write_text("not an image")
        return None  # ignored: not an image extension
    if fault == "unreadable_image":
        defect.write_bytes(b"\x89PNG but not really")
        return defect
    if fault == "truncated_image":
        data = defect.read_bytes()
        defect.write_bytes(data[: max(20, len(data) // 3)])
        return defect
    if fault == "empty_file":
        first_train.write_bytes(b"")
        return first_train
    if fault == "unreadable_mask":
        mask.write_bytes(b"garbage")
        return mask
    if fault == "no_ground_truth":
        shutil.rmtree(base / "ground_truth")
    return None  # none, or no_ground_truth: image-label-only is valid, pixel metrics skipped


def _add_hidden(root: Path, base: Path, hidden: set[str], size: tuple[int, int], rng: np.random.Generator) -> None:
    """OS litter that must be skipped: never read, never a defect type, never a category."""
    folders = [f for f in (base / "train" / "good", base / "test", base / "test" / "dent") if f.is_dir()]
    for folder in folders:
        if "apple_double" in hidden:  # has an image suffix, holds a resource fork
            (folder / "._000.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        if "ds_store" in hidden:
            (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        if "thumbs_db" in hidden:
            (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        if "desktop_ini" in hidden:
            (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    extra = []
    if "hidden_folder" in hidden and (base / "test").is_dir():
        extra.append(base / "test" / ".cache" / "x.png")
    if "macosx_folder" in hidden and (base / "test").is_dir():
        extra.append(base / "test" / "__MACOSX" / "x.png")
    if "hidden_root" in hidden:
        extra.append(root / ".Trash" / "train" / "good" / "x.png")
    for path in extra:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def _load_all(source: MVTecLayoutSource, tree: Tree, image_size: int) -> None:
    category = source.categories()[0]
    for dataset in (source.train_dataset([category], image_size), source.test_dataset([category], image_size)):
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["image"].shape == (3, image_size, image_size)
            assert item["image"].dtype == torch.float32
            expected = torch.from_numpy(tree.images[item["path"]].transpose(2, 0, 1).astype(np.float32))
            torch.testing.assert_close(item["image"], resize_image(expected, image_size), atol=tree.tolerance, rtol=0)
            assert item["mask"].shape == (1, image_size, image_size)
            region = tree.masks.get(item["path"])
            if region is None:
                assert item["mask"].sum() == 0
            else:
                want = F.interpolate(torch.from_numpy(region).float()[None, None], size=(image_size,) * 2)[0]
                torch.testing.assert_close(item["mask"], want)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # PIL's note on truncated TIFFs; they still fail
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    # Half the trees are valid, so that the values of every mode and mask encoding get checked, not only refusals.
    fault=st.one_of(st.sampled_from(("none", "non_image_file")), st.sampled_from(FAULTS)),
    mode=st.sampled_from(sorted(MODES)),
    mask_kind=st.sampled_from(MASKS),
    hidden=st.sets(st.sampled_from(HIDDEN)),
    name=st.sampled_from(NAMES),
    size=st.tuples(st.integers(4, 24), st.integers(4, 24)),
    image_size=st.integers(4, 16),
    seed=st.integers(0, 10_000),
)
def test_random_trees_load_or_fail_with_a_named_path(
    fault, mode, mask_kind, hidden, name, size, image_size, seed
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = _build(Path(tmp), fault, mode, mask_kind, hidden, name, size, seed)
        errors: dict[str, DataError] = {}
        try:
            source = MVTecLayoutSource(tree.root)
        except DataError as exc:
            errors["index"] = exc
        else:
            assert source.categories() == ["part"]  # '.Trash' is no category
            test_records = source.test_dataset(["part"], image_size).records
            assert {r.defect for r in test_records} == {"good", "dent"}  # hidden folders are no defect types
            assert source.has_masks("part") == (fault != "no_ground_truth")
            try:
                source.validate()
            except DataError as exc:
                errors["validate"] = exc
            try:
                _load_all(source, tree, image_size)
            except DataError as exc:
                errors["load"] = exc
            # validate() refuses what loading would refuse, and only that: it is the check run before training.
            assert ("validate" in errors) == ("load" in errors), f"validate and load disagree: {errors}"
        if not tree.problems:
            assert not errors, f"valid tree refused: {errors}"
        else:
            assert errors, f"broken tree (fault={fault}, mode={mode}, mask={mask_kind}) loaded without error"
            for where, error in errors.items():
                assert any(str(p) in str(error) for p in tree.problems), f"{where} error names none of {tree.problems}"
