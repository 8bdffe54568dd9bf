"""BTAD as distributed: mixed .bmp/.png per product, masks found by stem, the archive folder, and named errors.

The tree is btad.zip's own layout at a tiny size: ``<root>/<01|02|03>/{train/ok, test/ok, test/ko, ground_truth/ko}``
with images ``0000.bmp`` ... and masks of the same stem, .bmp/.png in 01, .png/.png in 02, .bmp/.bmp in 03
(anomalib's BTech datamodule); 03 is not square (800x600 in BTAD, 40x30 here).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data import AnomalyDataModule
from adzoo.data.btad import BTADSource
from adzoo.data.mvtec import DataError

# category -> (image extension, mask extension, (width, height))
PRODUCTS = {"01": ("bmp", "png", (32, 32)), "02": ("png", "png", (24, 24)), "03": ("bmp", "bmp", (40, 30))}
N_TRAIN, N_OK, N_KO = 3, 1, 2


def _mask_area(i: int) -> int:
    return 4 * (6 + i)  # each ko image's mask is a different size, so a mask given to the wrong image shows


def btad_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for category, (image_ext, mask_ext, (width, height)) in PRODUCTS.items():
        for folder, count in (("train/ok", N_TRAIN), ("test/ok", N_OK), ("test/ko", N_KO)):
            for i in range(count):
                path = root / category / folder / f"{i:04d}.{image_ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        for i in range(N_KO):
            mask = np.zeros((height, width), dtype=np.uint8)
            mask[2:6, 3 : 3 + 6 + i] = 255
            path = root / category / "ground_truth" / "ko" / f"{i:04d}.{mask_ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(path)
    return root


def test_every_product_is_indexed_with_masks_by_stem(tmp_path: Path) -> None:
    source = BTADSource(btad_tree(tmp_path))
    source.validate()
    assert source.categories() == list(PRODUCTS)
    for category, (image_ext, mask_ext, _) in PRODUCTS.items():
        assert len(source._train[category]) == N_TRAIN and source.has_masks(category)
        test = source._test[category]
        assert [r.label for r in test] == [0] * N_OK + [1] * N_KO
        for record in test[N_OK:]:
            assert record.path.endswith(f".{image_ext}") and record.mask_path.endswith(f".{mask_ext}")
            assert Path(record.mask_path).stem == Path(record.path).stem
        native = source.test_dataset([category], None)  # at the stored size, so mask areas are exact
        assert [int(native[i]["mask"].sum()) for i in range(len(native))] == [0] + [_mask_area(i) for i in range(N_KO)]
    assert "03: train 3, test 3 (ko 2, masks 2/2; ok 1)" in source.summary()


def test_the_archive_folder_and_one_category(tmp_path: Path) -> None:
    btad_tree(tmp_path / "BTech_Dataset_transformed")
    source = BTADSource(tmp_path, categories="02")
    assert source.categories() == ["02"] and source.root == tmp_path / "BTech_Dataset_transformed"
    with pytest.raises(DataError, match=r"unknown categories \['04'\]; available: 01, 02, 03"):
        BTADSource(tmp_path, categories=["04"])


def _drop_mask(root: Path) -> str:
    (root / "02" / "ground_truth" / "ko" / "0001.png").unlink()
    return rf"no mask for {root}/02/test/ko/0001.png: expected {root}/02/ground_truth/ko/0001.png"


def _drop_ground_truth(root: Path) -> str:
    shutil.rmtree(root / "01" / "ground_truth")
    return rf"missing folder {root}/01/ground_truth/ko \(expected BTAD layout"


def _empty_train(root: Path) -> str:
    for path in (root / "03" / "train" / "ok").iterdir():
        path.unlink()
    return rf"empty category: no training images in {root}/03/train/ok"


def _two_masks_of_one_stem(root: Path) -> str:
    shutil.copy(root / "01" / "ground_truth" / "ko" / "0000.png", root / "01" / "ground_truth" / "ko" / "0000.bmp")
    return rf"two files of one name in {root}/01/ground_truth/ko: 0000.bmp and 0000.png"


@pytest.mark.parametrize("breaks", [_drop_mask, _drop_ground_truth, _empty_train, _two_masks_of_one_stem])
def test_bad_trees_are_named_when_indexing(tmp_path: Path, breaks) -> None:
    root = btad_tree(tmp_path)
    with pytest.raises(DataError, match=breaks(root)):
        BTADSource(root)


def test_unreadable_image_and_empty_mask_are_listed_by_validate(tmp_path: Path) -> None:
    root = btad_tree(tmp_path)
    (root / "03" / "test" / "ko" / "0000.bmp").write_bytes(b"not a bitmap")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(root / "01" / "ground_truth" / "ko" / "0001.png")
    with pytest.raises(DataError, match=r"found 2 problem\(s\)") as caught:
        BTADSource(root).validate()
    assert f"cannot read image {root}/03/test/ko/0000.bmp" in str(caught.value)
    assert f"mask {root}/01/ground_truth/ko/0001.png has no defect pixel" in str(caught.value)
    with pytest.raises(DataError, match=r"data\.root is not set"):
        BTADSource(None)


def test_datamodule_and_a_one_epoch_patchknn_run(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = btad_tree(tmp_path / "BTAD")
    dm = AnomalyDataModule(BTADSource(root), image_size=32, val_fraction=0.0)
    dm.validate()
    assert len(dm.train_set) == 3 * N_TRAIN and len(dm.test_set) == 3 * (N_OK + N_KO)
    masks = [dm.test_set[i]["mask"] for i in range(len(dm.test_set)) if dm.test_set[i]["label"] == 1]
    assert len(masks) == 3 * N_KO and all(m.shape == (1, 32, 32) and m.sum() > 0 for m in masks)

    payload = run(compose_cfg(
        "data=btad", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn", "trainer.max_epochs=1",
    ))  # fmt: skip
    data = payload["data"]
    assert data["train_images"] + data["val_images"] == 3 * N_TRAIN and data["test_images"] == 3 * (N_OK + N_KO)
    assert sorted(payload["metrics"]["per_category"]) == list(PRODUCTS)
    assert all("pixel_auroc" in m for m in payload["metrics"]["per_category"].values())


@pytest.mark.parametrize("setting", ["unified", "separate"])
def test_named_sweeps(compose_cfg, setting: str) -> None:
    cfg = compose_cfg(f"sweep=btad_{setting}")
    assert cfg.data.name == "btad" and cfg.data.setting == setting and cfg.sweep_name == f"btad_{setting}"
    assert cfg.data.source._target_ == "adzoo.data.btad.BTADSource"
    assert cfg.hydra.sweeper.params.method == "patchknn,patchcore,cap,transformaly,uniad,adtr"


def test_the_separate_sweep_trains_one_model_per_product(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = btad_tree(tmp_path / "BTAD")
    payload = run(compose_cfg(
        "sweep=btad_separate", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
        "data.eval_batch_size=4", "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn",
        "trainer.max_epochs=1",
    ))  # fmt: skip
    assert payload["setting"] == "separate" and sorted(payload["metrics"]["per_category"]) == list(PRODUCTS)
    assert [g["test_images"] for g in payload["timing"]["per_group"]] == [N_OK + N_KO] * 3
