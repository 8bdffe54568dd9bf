"""The embedded synthetic data set: exact layout, exact masks, reproducibility and the on-disk cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data import synthetic
from adzoo.data.synthetic import (
    MANIFEST_NAME,
    SUBTLE_DEFECTS,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_DEFECTS,
    SYNTHETIC_OBJECTS,
    SYNTHETIC_SETS,
    SYNTHETIC_TEXTURES,
    generate_synthetic_dataset,
    render_sample,
    sample_entropy,
)

TINY = {"image_size": 32, "n_train": 4, "n_test_good": 2, "n_test_per_defect": 1}


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) per file: a rewrite changes at least one of them."""
    return {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in _files(root).items()}


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synthetic", seed=0, **TINY)


# ------------------------------------------------------------------------------------------ catalogue


def test_default_catalogue() -> None:
    assert len(SYNTHETIC_CATEGORIES) >= 6
    assert len(SYNTHETIC_TEXTURES) >= 3
    assert len(SYNTHETIC_OBJECTS) >= 3
    assert set(SYNTHETIC_TEXTURES) | set(SYNTHETIC_OBJECTS) == set(SYNTHETIC_CATEGORIES)
    assert set(SYNTHETIC_DEFECTS) == set(SYNTHETIC_CATEGORIES)
    for cat, defects in SYNTHETIC_DEFECTS.items():
        assert len(defects) >= 3, cat
        assert len(set(defects)) == len(defects)
        assert "good" not in defects
        assert SUBTLE_DEFECTS[cat] in defects


# ------------------------------------------------------------------------------------------ layout


def test_layout_is_exact(tiny_root: Path) -> None:
    size = TINY["image_size"]
    assert sorted(p.name for p in tiny_root.iterdir()) == sorted([*SYNTHETIC_CATEGORIES, MANIFEST_NAME])
    for cat, defects in SYNTHETIC_DEFECTS.items():
        base = tiny_root / cat
        assert sorted(p.name for p in base.iterdir()) == ["ground_truth", "test", "train"]
        assert [p.name for p in (base / "train").iterdir()] == ["good"]
        train = sorted(p.name for p in (base / "train" / "good").iterdir())
        assert train == [f"{i:03d}.png" for i in range(TINY["n_train"])]
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *defects])
        good = sorted(p.name for p in (base / "test" / "good").iterdir())
        assert good == [f"{i:03d}.png" for i in range(TINY["n_test_good"])]
        assert sorted(p.name for p in (base / "ground_truth").iterdir()) == sorted(defects)  # no masks for good
        for img_path in [*(base / "train" / "good").iterdir(), *(base / "test" / "good").iterdir()]:
            with Image.open(img_path) as im:
                assert (im.mode, im.size) == ("RGB", (size, size))
        for d in defects:
            imgs = sorted((base / "test" / d).iterdir())
            masks = sorted((base / "ground_truth" / d).iterdir())
            assert [p.name for p in imgs] == [f"{i:03d}.png" for i in range(TINY["n_test_per_defect"])]
            assert [p.name for p in masks] == [f"{p.stem}_mask.png" for p in imgs]
            for img_path, mask_path in zip(imgs, masks, strict=True):
                with Image.open(img_path) as im, Image.open(mask_path) as mk:
                    assert (im.mode, im.size) == ("RGB", (size, size))
                    assert (mk.mode, mk.size) == ("L", (size, size))
                mask = _load(mask_path)
                assert set(np.unique(mask).tolist()) == {0, 255}, f"{cat}/{d}: mask must be binary, non-empty"


def test_manifest_describes_tree(tiny_root: Path) -> None:
    data = json.loads((tiny_root / MANIFEST_NAME).read_text())
    assert data["version"] == synthetic.GENERATOR_VERSION
    assert data["params"] == {"seed": 0, **TINY, "categories": list(SYNTHETIC_CATEGORIES), "preset": "default"}
    assert data["files"] == len(_files(tiny_root)) - 1  # everything but the manifest itself
    assert data["files"] == sum(
        TINY["n_train"] + TINY["n_test_good"] + 2 * TINY["n_test_per_defect"] * len(d)
        for d in SYNTHETIC_DEFECTS.values()
    )


def test_grayscale_texture_has_equal_channels(tiny_root: Path) -> None:
    img = _load(tiny_root / "stone" / "train" / "good" / "000.png")
    assert img.ndim == 3
    assert img.shape[-1] == 3
    assert (img[..., 0] == img[..., 1]).all()
    assert (img[..., 1] == img[..., 2]).all()
    colour = _load(tiny_root / "fabric" / "train" / "good" / "000.png")
    assert not (colour[..., 0] == colour[..., 2]).all()


# ------------------------------------------------------------------------------------------ reproducibility


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, tiny_root: Path) -> None:
    cats = ["fabric", "pill"]
    a = generate_synthetic_dataset(tmp_path / "a", seed=0, categories=cats, **TINY)
    b = generate_synthetic_dataset(tmp_path / "b", seed=1, categories=cats, **TINY)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    for rel, path in fa.items():
        if rel == MANIFEST_NAME:
            continue
        # Generating a subset reproduces the full set's files: adding categories changes nothing else.
        assert path.read_bytes() == (tiny_root / rel).read_bytes(), rel
        if rel.endswith(".png") and "ground_truth" not in rel:
            assert path.read_bytes() != fb[rel].read_bytes(), rel


def test_normal_images_all_differ(tiny_root: Path) -> None:
    for cat in SYNTHETIC_CATEGORIES:
        paths = sorted((tiny_root / cat).glob("*/good/*.png"))
        blobs = [p.read_bytes() for p in paths]
        assert len(set(blobs)) == len(blobs), cat


# ------------------------------------------------------------------------------------------ cache


def test_cache_hit_does_not_rewrite(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "s", categories=["wood"], **TINY)
    before = _stamps(root)
    assert generate_synthetic_dataset(tmp_path / "s", categories=["wood"], **TINY) == root
    assert _stamps(root) == before


def test_deleted_manifest_triggers_regeneration(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "s", categories=["wood"], **TINY)
    before = _stamps(root)
    content = {k: p.read_bytes() for k, p in _files(root).items() if k != MANIFEST_NAME}
    (root / MANIFEST_NAME).unlink()
    generate_synthetic_dataset(root, categories=["wood"], **TINY)
    after = _stamps(root)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in content)  # every file was written again...
    assert {k: p.read_bytes() for k, p in _files(root).items() if k != MANIFEST_NAME} == content  # ...identically


def test_changed_params_or_overwrite_regenerate(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "s", categories=["wood", "screw"], **TINY)
    generate_synthetic_dataset(root, categories=["wood"], **{**TINY, "n_train": 2})
    assert sorted(p.name for p in root.iterdir()) == sorted(["wood", MANIFEST_NAME])
    assert len(list((root / "wood" / "train" / "good").iterdir())) == 2
    before = _stamps(root)
    generate_synthetic_dataset(root, categories=["wood"], overwrite=True, **{**TINY, "n_train": 2})
    after = _stamps(root)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in after)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp siblings left behind"


def test_interrupted_generation_leaves_no_complete_looking_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_save = synthetic._save_png

    def flaky_save(path: Path, arr: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        real_save(path, arr)

    # A first generation that dies half way leaves nothing at root.
    monkeypatch.setattr(synthetic, "_save_png", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(tmp_path / "s", categories=["pill"], **TINY)
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []

    # A regeneration that dies half way leaves the previous complete tree untouched.
    monkeypatch.setattr(synthetic, "_save_png", real_save)
    root = generate_synthetic_dataset(tmp_path / "s", categories=["pill"], **TINY)
    before = _stamps(root)
    calls["n"] = 0
    monkeypatch.setattr(synthetic, "_save_png", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(root, categories=["pill"], seed=5, **TINY)
    assert _stamps(root) == before
    assert json.loads((root / MANIFEST_NAME).read_text())["params"]["seed"] == 0


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError):
        generate_synthetic_dataset(root, categories=["pill"], **TINY)
    assert (root / "thesis.tex").read_text() == "precious"


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown categories"):
        generate_synthetic_dataset(tmp_path / "s", categories=["bagel"], **TINY)
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_dataset(tmp_path / "s", **{**TINY, "image_size": 8})
    with pytest.raises(ValueError, match="unknown defect"):
        render_sample("pill", "hole", image_size=32, entropy=(0,))
    with pytest.raises(ValueError, match="unknown synthetic category"):
        render_sample("bagel", None, image_size=32, entropy=(0,))


# ------------------------------------------------------------------------------------------ masks


ALL_DEFECTS = {c: d for defects in SYNTHETIC_SETS.values() for c, d in defects.items()}
PHOTO_TEXTURES = sorted(set(SYNTHETIC_SETS["mvtec_like"]) - set(SYNTHETIC_CATEGORIES))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("category", [*SYNTHETIC_CATEGORIES, *PHOTO_TEXTURES])
def test_mask_is_exactly_the_changed_pixels(category: str, size: int) -> None:
    for defect in ALL_DEFECTS[category]:
        for i in range(4):
            key = sample_entropy(11, category, "test", defect, i)
            img, mask = render_sample(category, defect, image_size=size, entropy=key)
            clean, no_mask = render_sample(category, None, image_size=size, entropy=key)
            assert img.shape == (size, size, 3)
            assert img.dtype == np.uint8
            assert mask.shape == (size, size)
            assert mask.dtype == np.uint8
            assert not no_mask.any()
            assert set(np.unique(mask).tolist()) == {0, 255}
            changed = (img != clean).any(-1)
            np.testing.assert_array_equal(mask == 255, changed, err_msg=f"{category}/{defect}/{i}")


@pytest.mark.parametrize("category", sorted(set(SYNTHETIC_SETS["mvtec_like"]) & set(SYNTHETIC_OBJECTS)))
def test_mvtec_like_objects_keep_exact_masks_and_their_own_defects(category: str) -> None:
    """The mvtec_like set draws the shared objects with its own (version-1) defects: masks stay exact, and a
    default-only defect type is refused there."""
    for defect in SYNTHETIC_SETS["mvtec_like"][category]:
        key = sample_entropy(11, category, "test", defect, 0)
        img, mask = render_sample(category, defect, image_size=64, entropy=key, preset="mvtec_like")
        clean, _ = render_sample(category, None, image_size=64, entropy=key, preset="mvtec_like")
        np.testing.assert_array_equal(mask == 255, (img != clean).any(-1), err_msg=f"{category}/{defect}")
    only_default = sorted(set(SYNTHETIC_DEFECTS[category]) - set(SYNTHETIC_SETS["mvtec_like"][category]))
    with pytest.raises(ValueError, match="unknown defect"):
        render_sample(category, only_default[0], image_size=32, entropy=(0,), preset="mvtec_like")
    with pytest.raises(ValueError, match="unknown preset"):
        render_sample(category, None, image_size=32, entropy=(0,), preset="bagel")


def test_files_on_disk_are_render_sample_output(tiny_root: Path) -> None:
    for cat in SYNTHETIC_CATEGORIES:
        defect = SYNTHETIC_DEFECTS[cat][0]
        img, mask = render_sample(
            cat, defect, image_size=TINY["image_size"], entropy=sample_entropy(0, cat, "test", defect, 0)
        )
        np.testing.assert_array_equal(_load(tiny_root / cat / "test" / defect / "000.png"), img)
        np.testing.assert_array_equal(_load(tiny_root / cat / "ground_truth" / defect / "000_mask.png"), mask)
        good, _ = render_sample(
            cat, None, image_size=TINY["image_size"], entropy=sample_entropy(0, cat, "train", None, 0)
        )
        np.testing.assert_array_equal(_load(tiny_root / cat / "train" / "good" / "000.png"), good)


@pytest.mark.parametrize("category", SYNTHETIC_OBJECTS)
def test_object_defects_sit_on_the_object(category: str) -> None:
    for defect in SYNTHETIC_DEFECTS[category]:
        for i in range(4):
            key = sample_entropy(0, category, "test", defect, i)
            _, mask = render_sample(category, defect, image_size=64, entropy=key)
            on_object = synthetic._object_support(category, image_size=64, entropy=key) > 0
            # Geometric defects (a bent tip, a shifted hole) may also cover former background.
            assert (on_object & (mask > 0)).sum() >= 0.5 * (mask > 0).sum(), f"{category}/{defect}/{i}"


# ------------------------------------------------------------------------------------------ realism


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_subtle_defect_hides_in_normal_variation(category: str) -> None:
    """A global-brightness detector must not see the subtle defect: its shift is below normal spread."""
    size = 64
    means = [
        render_sample(category, None, image_size=size, entropy=sample_entropy(0, category, "train", None, i))[0].mean()
        for i in range(12)
    ]
    spread = float(np.std(means))
    defect = SUBTLE_DEFECTS[category]
    for i in range(6):
        key = sample_entropy(0, category, "test", defect, i)
        img, mask = render_sample(category, defect, image_size=size, entropy=key)
        clean, _ = render_sample(category, None, image_size=size, entropy=key)
        assert mask.any()
        shift = abs(float(img.astype(np.float64).mean() - clean.astype(np.float64).mean()))
        assert shift < 0.25 * spread, f"{category}/{defect}/{i}: shift {shift:.3f} vs spread {spread:.3f}"
        inside = np.abs(img.astype(np.int16) - clean.astype(np.int16)).max(-1)[mask > 0]
        assert np.median(inside) <= 16, "subtle means a few per cent of intensity"


# ------------------------------------------------------------------------------------------ presets


def test_mvtec_like_preset_writes_its_own_categories_and_defects(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "ml", seed=1, preset="mvtec_like", **TINY)
    wanted = SYNTHETIC_SETS["mvtec_like"]
    assert sorted(p.name for p in root.iterdir()) == sorted([*wanted, MANIFEST_NAME])
    for cat, defects in wanted.items():
        assert sorted(p.name for p in (root / cat / "test").iterdir()) == sorted(["good", *defects])
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["params"]["preset"] == "mvtec_like"
    assert manifest["defects"] == {c: list(d) for c, d in wanted.items()}
    # Photo textures are real photographs: a normal image has the grain of one, not a flat field.
    img = _load(root / "gravel" / "train" / "good" / "000.png").astype(np.float64)
    assert img.std() > 10.0


def test_photo_textures_vary_between_normal_images() -> None:
    a, _ = render_sample("brick", None, image_size=64, entropy=sample_entropy(0, "brick", "train", None, 0))
    b, _ = render_sample("brick", None, image_size=64, entropy=sample_entropy(0, "brick", "train", None, 1))
    assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() > 5.0


def test_unknown_preset_and_foreign_category_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.source\.preset"):
        generate_synthetic_dataset(tmp_path / "x", preset="mvtec", **TINY)
    with pytest.raises(ValueError, match=r"'gravel'.*'default'"):
        generate_synthetic_dataset(tmp_path / "y", categories=["gravel"], **TINY)
