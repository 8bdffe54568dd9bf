"""KolektorSDD2 as distributed: labels from the ``<n>_GT.png`` beside each image, defective training images left out.

The tree is KolektorSDD2.zip's own layout at a tiny size: ``<root>/train`` and ``<root>/test``, each ``<n>.png``
(RGB, about 230x630 px there, 20x56 here) with a grey ``<n>_GT.png`` of the same size beside it; an empty GT means a
normal image (vicoslab/mixed-segdec-net-comind2021, data/input_ksdd2.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data import AnomalyDataModule
from adzoo.data.ksdd2 import KSDD2Source
from adzoo.data.mvtec import DataError

WIDTH, HEIGHT = 20, 56
# split -> (normal images, defective images)
SPLITS = {"train": (5, 2), "test": (3, 2)}


def _defect_area(n: int) -> int:
    return 3 * (4 + n % 5)  # differs between neighbouring images, so a GT read for the wrong image shows


def ksdd2_tree(root: Path) -> Path:
    """Image numbers interleave normal and defective ones, as in the real set (10000, 10001, ...)."""
    rng = np.random.default_rng(0)
    number = 10000
    for split, (normal, defective) in SPLITS.items():
        folder = root / split
        folder.mkdir(parents=True)
        for k in range(normal + defective):
            Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(folder / f"{number}.png")
            gt = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            if k % 2 == 1 and k // 2 < defective:
                gt[10:13, 2 : 2 + 4 + number % 5] = 255
            Image.fromarray(gt).save(folder / f"{number}_GT.png")
            number += 1
    return root


def test_labels_come_from_the_ground_truth(tmp_path: Path) -> None:
    root = ksdd2_tree(tmp_path)
    source = KSDD2Source(root)
    source.validate()
    assert source.categories() == ["ksdd2"] and source.has_masks("ksdd2")
    train, test = source._train["ksdd2"], source._test["ksdd2"]
    assert len(train) == SPLITS["train"][0] and source.left_out == SPLITS["train"][1]
    assert all(r.label == 0 and r.mask_path is None for r in train)
    assert [r.label for r in test] == [0, 1, 0, 1, 0] and all(r.has_mask for r in test)
    for record in test:  # normal images carry no mask (an empty mask is refused for a defect image)
        expected = None if record.label == 0 else record.path.replace(".png", "_GT.png")
        assert record.mask_path == expected
    native = source.test_dataset(["ksdd2"], None)
    for i, record in enumerate(test):
        area = _defect_area(int(Path(record.path).stem)) if record.label else 0
        assert native[i]["mask"].shape == (1, HEIGHT, WIDTH) and int(native[i]["mask"].sum()) == area
    assert "ksdd2: train 5, test 5 (defect 2, masks 2/2; good 3)" in source.summary()
    assert "2 defective training images left out" in source.summary()


def test_every_ground_truth_read_is_fingerprinted(tmp_path: Path) -> None:
    source = KSDD2Source(ksdd2_tree(tmp_path))
    train_files = set(source.files(include_test=False))
    defective = {str(tmp_path / "train" / f"{n}.png") for n in (10001, 10003)}  # left out: never read as images
    assert train_files == {str(p) for p in (tmp_path / "train").iterdir()} - defective
    assert set(source.files()) - train_files == {str(p) for p in (tmp_path / "test").iterdir()}


def test_missing_ground_truth_is_named(tmp_path: Path) -> None:
    root = ksdd2_tree(tmp_path)
    (root / "test" / "10009_GT.png").unlink()
    with pytest.raises(DataError, match=rf"no mask for {root}/test/10009.png: expected {root}/test/10009_GT.png"):
        KSDD2Source(root)


def test_all_defective_training_images_and_missing_folders_are_named(tmp_path: Path) -> None:
    root = ksdd2_tree(tmp_path)
    for gt in (root / "train").glob("*_GT.png"):
        Image.fromarray(np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)).save(gt)
    with pytest.raises(DataError, match=rf"empty category: no defect-free training images in {root}/train"):
        KSDD2Source(root)
    for gt in (root / "train").glob("*_GT.png"):
        gt.unlink()
    with pytest.raises(DataError, match=rf"no mask for {root}/train/10000.png"):
        KSDD2Source(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"missing folder {tmp_path / 'empty'}/train \(expected KolektorSDD2"):
        KSDD2Source(tmp_path / "empty")


def test_unreadable_ground_truth_is_named(tmp_path: Path) -> None:
    root = ksdd2_tree(tmp_path)
    (root / "test" / "10007_GT.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=rf"cannot read mask {root}/test/10007_GT.png"):
        KSDD2Source(root)


def test_datamodule_and_a_one_epoch_patchknn_run(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = ksdd2_tree(tmp_path / "KolektorSDD2")
    dm = AnomalyDataModule(KSDD2Source(root), image_size=32, val_fraction=0.2)
    dm.validate()
    assert len(dm.train_set) + len(dm.val_set) == SPLITS["train"][0] and len(dm.test_set) == sum(SPLITS["test"])
    masks = [dm.test_set[i]["mask"] for i in range(len(dm.test_set)) if dm.test_set[i]["label"] == 1]
    assert len(masks) == SPLITS["test"][1] and all(m.shape == (1, 32, 32) and m.sum() > 0 for m in masks)

    cfg = compose_cfg(
        "sweep=ksdd2", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn", "trainer.max_epochs=1",
    )  # fmt: skip
    assert cfg.sweep_name == "ksdd2" and cfg.hydra.sweeper.params.method.startswith("patchknn,patchcore")
    payload = run(cfg)
    data = payload["data"]
    assert data["name"] == "ksdd2" and data["train_images"] + data["val_images"] == SPLITS["train"][0]
    assert data["test_images"] == sum(SPLITS["test"]) and list(payload["metrics"]["per_category"]) == ["ksdd2"]
    assert "pixel_auroc" in payload["metrics"]["per_category"]["ksdd2"]
