"""MVTec 3D-AD, RGB only, in its distributed layout: rgb/ images, gt/ masks of the same stem, the shipped
validation split, and xyz/*.tiff point clouds present but never read; the real datamodule, a one-epoch patch-kNN run
(separate setting), and bad trees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data import AnomalyDataModule, DataError
from adzoo.data.mvtec_3d import MVTec3DSource

SIZE = 40
MASK_BOX = (slice(10, 30), slice(5, 25))
# per category: images of train/good, validation/good, and test/<defect>
FOLDERS = {("train", "good"): 4, ("validation", "good"): 2, ("test", "good"): 2, ("test", "hole"): 1,
           ("test", "combined"): 2}  # fmt: skip


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _tree(root: Path, categories: tuple[str, ...] = ("bagel", "tire")) -> Path:
    """The release tree: every sample as rgb/NNN.png and xyz/NNN.tiff, test samples also gt/NNN.png (all zero
    under good/), plus the files beside the splits (readme, license, calibration, class ids). The .tiff files are
    not valid TIFFs, and the good masks are empty: reading either would fail validation."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    (root / "readme.txt").write_text("MVTec 3D-AD\n")
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    for category in categories:
        base = root / category
        (base / "calibration").mkdir(parents=True)
        (base / "calibration" / "camera_parameters.json").write_text("{}")
        (base / "class_ids.json").write_text("{}")
        for (split, defect), count in FOLDERS.items():
            for i in range(count):
                pixels = rng.integers(40, 100, (SIZE, SIZE, 3), dtype=np.uint8)
                mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
                if defect != "good":
                    pixels[MASK_BOX] = 255
                    mask[MASK_BOX] = 255
                folder = base / split / defect
                _save(folder / "rgb" / f"{i:03d}.png", pixels)
                (folder / "xyz").mkdir(exist_ok=True)
                (folder / "xyz" / f"{i:03d}.tiff").write_bytes(b"not a point cloud")
                if split == "test":
                    _save(folder / "gt" / f"{i:03d}.png", mask)
    return root


def test_rgb_only_index_leaves_the_point_clouds_and_good_masks_out(tmp_path: Path) -> None:
    source = MVTec3DSource(_tree(tmp_path / "m3d"))
    assert source.categories() == ["bagel", "tire"]  # readme.txt, license.txt are not categories
    for category in source.categories():
        assert len(source._train[category]) == 4 and len(source._val[category]) == 2
        test = source._test[category]
        assert sorted((r.defect, r.label) for r in test) == [("combined", 1)] * 2 + [("good", 0)] * 2 + [("hole", 1)]
        for record in test:
            assert Path(record.path).parent.name == "rgb"
            if record.label:
                assert (
                    Path(record.mask_path).parent.name == "gt" and Path(record.mask_path).name == Path(record.path).name
                )
            else:
                assert record.mask_path is None and record.has_mask  # a good image of a masked category
    read = source.files()
    assert not [p for p in read if p.endswith(".tiff") or "/xyz/" in p]
    assert not [p for p in read if "/good/gt/" in p]
    assert len(read) == 2 * (4 + 2 + 5 + 3)  # rgb images of train, validation, test, and the 3 defect masks
    source.validate()  # the invalid .tiff files and the empty good masks are never opened
    assert "validation 2 (shipped)" in source.summary()


def test_datamodule_uses_the_shipped_validation_split_and_reads_masks(tmp_path: Path) -> None:
    source = MVTec3DSource(_tree(tmp_path / "m3d"))
    dm = AnomalyDataModule(source, name="mvtec_3d", image_size=20, batch_size=2, preload=False)
    assert dm.describe()["train_images"] == 8 and dm.describe()["val_images"] == 4
    assert dm.val_source == {"bagel": "shipped", "tire": "shipped"}
    assert all("/validation/good/rgb/" in dm.val_set[i]["path"] for i in range(len(dm.val_set)))
    test = dm.test_set
    hole = next(test[i] for i in range(len(test)) if "/hole/" in test[i]["path"])
    assert int(hole["mask"].sum()) == 100  # the 20x20 box at half size: 10x10
    assert hole["mask"][0, 7, 5] == 1 and hole["mask"][0, 0, 0] == 0


def test_one_epoch_patchknn_run_in_the_separate_setting(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = _tree(tmp_path / "m3d")
    cfg = compose_cfg(
        "data=mvtec_3d", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=0", "data.setting=separate", "backbone=test_efficientnet", "method=patchknn",
    )  # fmt: skip
    payload = run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["data"]["train_images"] == 8 and written["data"]["test_images"] == 10
    assert written["data"]["val_images"] == 4
    assert set(payload["metrics"]["per_category"]) == {"bagel", "tire"}
    for category, metrics in payload["metrics"]["per_category"].items():
        assert 0.0 <= metrics["pixel_auroc"] <= 1.0
        assert (tmp_path / "run" / "categories" / category / "checkpoints" / "last.ckpt").is_file()
    assert ".tiff" not in (tmp_path / "run" / "predictions.csv").read_text()


def test_bad_trees_name_the_path(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a", ("bagel",))
    mask = root / "bagel" / "test" / "combined" / "gt" / "001.png"
    mask.unlink()
    with pytest.raises(DataError, match=rf"no mask for .*combined/rgb/001\.png: expected {re.escape(str(mask))}"):
        MVTec3DSource(root)
    root = _tree(tmp_path / "b", ("bagel",))
    rgb = root / "bagel" / "validation" / "good" / "rgb"
    for image in rgb.iterdir():
        image.unlink()
    rgb.rmdir()
    with pytest.raises(DataError, match=f"missing folder {re.escape(str(rgb))}"):
        MVTec3DSource(root)
    root = _tree(tmp_path / "c", ("bagel",))
    (root / "bagel" / "test" / "hole" / "gt" / "000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read mask .*hole/gt/000\.png"):
        MVTec3DSource(root).validate()
    with pytest.raises(DataError, match=f"data root {re.escape(str(tmp_path / 'missing'))} does not exist"):
        MVTec3DSource(tmp_path / "missing")
