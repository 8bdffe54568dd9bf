"""MPDD as distributed (MVTec layout, .png, ``<stem>_mask.png``), read by the thin MVTec subclass, and its errors.

The tree is MPDD's own at a tiny size (1024x1024 px there, 32x32 here): ``<root>/<category>/train/good/000.png``,
``test/good``, ``test/<defect>`` and ``ground_truth/<defect>/000_mask.png``, with two of MPDD's categories and their
real defect folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adzoo.data import AnomalyDataModule
from adzoo.data.mpdd import MPDDSource
from adzoo.data.mvtec import DataError, MVTecLayoutSource

DEFECTS = {"bracket_brown": ("bend_and_parts_mismatch", "parts_mismatch"), "tubes": ("anomalous",)}
N_TRAIN, N_GOOD, N_PER_DEFECT, SIZE = 3, 1, 2, 32


def mpdd_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)

    for category, defects in DEFECTS.items():
        for i in range(N_TRAIN):
            image(root / category / "train" / "good" / f"{i:03d}.png")
        for i in range(N_GOOD):
            image(root / category / "test" / "good" / f"{i:03d}.png")
        for d, defect in enumerate(defects):
            for i in range(N_PER_DEFECT):
                image(root / category / "test" / defect / f"{i:03d}.png")
                mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
                mask[4:8, 4 : 4 + 2 + i + 2 * d] = 255  # a different area per image: a mixed-up mask shows
                path = root / category / "ground_truth" / defect / f"{i:03d}_mask.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(path)
    return root


def test_mvtec_layout_with_every_mask(tmp_path: Path) -> None:
    source = MPDDSource(mpdd_tree(tmp_path))
    assert isinstance(source, MVTecLayoutSource)
    source.validate()
    assert source.categories() == list(DEFECTS)
    for category, defects in DEFECTS.items():
        test = source._test[category]
        assert len(source._train[category]) == N_TRAIN and source.has_masks(category)
        assert len(test) == N_GOOD + N_PER_DEFECT * len(defects)
        anomalous = [r for r in test if r.label == 1]
        assert all(r.mask_path == str(tmp_path / category / "ground_truth" / r.defect / f"{Path(r.path).stem}_mask.png")
                   for r in anomalous)  # fmt: skip
        read = source.test_dataset([category], SIZE)
        areas = sorted(int(read[i]["mask"].sum()) for i in range(len(read)) if read[i]["label"] == 1)
        assert areas == sorted(4 * (2 + i + 2 * d) for d in range(len(defects)) for i in range(N_PER_DEFECT))
    assert "parts_mismatch 2, masks 2/2" in source.summary()


def test_a_defect_folder_without_ground_truth_is_refused(tmp_path: Path) -> None:
    root = mpdd_tree(tmp_path)
    shutil.rmtree(root / "tubes" / "ground_truth" / "anomalous")
    with pytest.raises(DataError, match=rf"missing folder {root}/tubes/ground_truth/anomalous \(MPDD ships"):
        MPDDSource(root)
    assert not MVTecLayoutSource(root).has_masks("tubes")  # what the plain MVTec loader would have done


def test_missing_mask_and_bad_root_are_named(tmp_path: Path) -> None:
    root = mpdd_tree(tmp_path)
    (root / "bracket_brown" / "ground_truth" / "parts_mismatch" / "001_mask.png").unlink()
    expected = root / "bracket_brown" / "ground_truth" / "parts_mismatch" / "001_mask.png"
    with pytest.raises(DataError, match=rf"no mask for .*parts_mismatch/001.png: expected {expected}"):
        MPDDSource(root)
    with pytest.raises(DataError, match=rf"data root {tmp_path / 'nowhere'} does not exist"):
        MPDDSource(tmp_path / "nowhere")


def test_datamodule_and_a_one_epoch_patchknn_run(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = mpdd_tree(tmp_path / "MPDD")
    n_test = sum(N_GOOD + N_PER_DEFECT * len(d) for d in DEFECTS.values())
    dm = AnomalyDataModule(MPDDSource(root), image_size=16, val_fraction=0.0)
    dm.validate()
    assert len(dm.train_set) == 2 * N_TRAIN and len(dm.test_set) == n_test
    assert {dm.test_set[i]["mask"].shape for i in range(n_test)} == {(1, 16, 16)}

    for setting in ("unified", "separate"):
        payload = run(compose_cfg(
            f"sweep=mpdd_{setting}", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
            "data.eval_batch_size=4", "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn",
            "trainer.max_epochs=1", run_dir=tmp_path / setting,
        ))  # fmt: skip
        assert payload["setting"] == setting and payload["data"]["name"] == "mpdd"
        assert payload["data"]["train_images"] + payload["data"]["val_images"] == 2 * N_TRAIN
        assert sorted(payload["metrics"]["per_category"]) == list(DEFECTS)
        assert all("pixel_auroc" in m for m in payload["metrics"]["per_category"].values())
        assert len(payload["timing"]["per_group"]) == (1 if setting == "unified" else len(DEFECTS))
    assert sum(g["test_images"] for g in payload["timing"]["per_group"]) == n_test
