"""Real-IAD from its json split files: view selection, labels and masks, the resize cache, and named errors.

The tree is Real-IAD's own layout (official README, datasets/explicit_dataset.py of Tencent/AnomalyDetection_Real-IAD)
at a tiny size: ``realiad_1024/<cat>/OK/S<nnnn>/<cat>_<nnnn>_OK_C<v>_<ts>.jpg``, ``NG/<defect>/S<nnnn>/..._NG_<defect>_
C<v>_<ts>.jpg`` with ``..._mask.png`` beside them, and ``realiad_jsons/<setting>/<cat>.json`` (meta, train, test).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adzoo.data import AnomalyDataModule
from adzoo.data.mvtec import DataError, read_image, read_mask
from adzoo.data.real_iad import RealIADSource, cached_bytes

CATEGORIES = ("audiojack", "pcb")
VIEWS = (1, 2, 3, 4, 5)
N_TRAIN, SIZE = 3, 40  # OK samples for training (x 5 views each); originals 40 px, read at 32
MASKED_VIEWS = (1, 2)  # the NG sample's defect is visible (has a mask) in these views only


def _save_image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path, format="JPEG")


def _entry(category: str, anomaly: str, image: str, mask: str | None) -> dict:
    return {"category": category, "anomaly_class": anomaly, "image_path": image, "mask_path": mask}


def real_iad_tree(root: Path, nested: bool = True) -> Path:
    """Two objects; per object 3 OK training samples, 1 OK and 1 NG (defect AK) test sample, 5 views each;
    also a realiad_jsons_sv setting that lists view C1 only."""
    rng = np.random.default_rng(0)
    jsons = root / "realiad_jsons" if nested else root
    for category in CATEGORIES:
        folder = root / "realiad_1024" / category
        entries: dict[str, list[dict]] = {"train": [], "test": []}
        for n in range(1, N_TRAIN + 3):
            anomalous = n == N_TRAIN + 2
            state = "NG_AK" if anomalous else "OK"
            sample = f"NG/AK/S{n:04d}" if anomalous else f"OK/S{n:04d}"
            for view in VIEWS:
                name = f"{category}_{n:04d}_{state}_C{view}_2023092214{view:02d}59.jpg"
                _save_image(folder / sample / name, rng)
                mask = None
                if anomalous and view in MASKED_VIEWS:
                    mask = f"{sample}/{Path(name).stem}_mask.png"
                    values = np.zeros((SIZE, SIZE), dtype=np.uint8)
                    values[8:20, 10:22] = 255
                    Image.fromarray(values).save(folder / mask)
                split = "train" if n <= N_TRAIN else "test"
                entries[split].append(_entry(category, "AK" if anomalous else "OK", f"{sample}/{name}", mask))
        meta = {"prefix": f"{category}/", "normal_class": "OK"}
        for setting, keep in (("realiad_jsons", VIEWS), ("realiad_jsons_sv", (1,))):
            chosen = {s: [e for e in entries[s] if int(e["image_path"].split("_C")[-1][0]) in keep] for s in entries}
            (jsons / setting).mkdir(parents=True, exist_ok=True)
            (jsons / setting / f"{category}.json").write_text(json.dumps({"meta": meta, **chosen}))
    return root


@pytest.mark.parametrize("nested", [True, False], ids=["realiad_jsons/<setting>", "<setting>"])
def test_all_views_are_separate_samples(tmp_path: Path, nested: bool) -> None:
    source = RealIADSource(real_iad_tree(tmp_path, nested=nested))
    assert source.categories() == list(CATEGORIES)
    for category in CATEGORIES:
        test = source._test[category]
        assert len(source._train[category]) == N_TRAIN * 5 and len(test) == 10
        assert sum(r.label for r in test) == len(MASKED_VIEWS)  # NG views without a mask are scored as normal
        assert all(r.mask_path is not None for r in test if r.label == 1) and source.has_masks(category)
    assert "AK (no mask: normal) 3" in source.summary()


def test_one_view_and_the_single_view_setting(tmp_path: Path) -> None:
    root = real_iad_tree(tmp_path)
    c1 = RealIADSource(root, view="C1", categories="pcb")
    assert c1.categories() == ["pcb"]
    assert len(c1._train["pcb"]) == N_TRAIN and [r.label for r in c1._test["pcb"]] == [0, 1]
    assert all("_C1_" in r.path for r in c1._train["pcb"] + c1._test["pcb"])
    c3 = RealIADSource(root, view="c3")  # the NG sample's defect is not visible from C3: no anomaly, no pixel metrics
    assert [r.label for r in c3._test["pcb"]] == [0, 0] and not c3.has_masks("pcb")
    sv = RealIADSource(root, json_setting="realiad_jsons_sv")
    assert len(sv._train["audiojack"]) == N_TRAIN and len(sv._test["audiojack"]) == 2


def test_training_anomalies_of_a_noisy_setting_are_trained_on_as_normal(tmp_path: Path) -> None:
    root = real_iad_tree(tmp_path)
    path = root / "realiad_jsons" / "realiad_jsons" / "pcb.json"
    info = json.loads(path.read_text())
    info["train"][0]["anomaly_class"] = "AK"  # what the realiad_jsons_fuiad_* settings do on purpose
    path.write_text(json.dumps(info))
    source = RealIADSource(root, categories="pcb")
    assert all(r.label == 0 and r.mask_path is None for r in source._train["pcb"])


def test_resize_cache_is_written_once_and_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, cache = real_iad_tree(tmp_path / "data"), tmp_path / "cache"
    source = RealIADSource(root, view="C1", cache_dir=cache)
    test = source.test_dataset(["audiojack"], 32)
    first = [test[i] for i in range(len(test))]
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == 2 + 1 and all(e.parent.parent.name == "32px" for e in entries)  # 2 images, 1 mask
    assert sorted({e.stat().st_size for e in entries}) == [cached_bytes(32, "mask"), cached_bytes(32, "image")]
    record = next(r for r in source._test["audiojack"] if r.label == 1)
    anomalous = next(item for item in first if item["label"] == 1)
    assert torch.equal(anomalous["mask"], read_mask(record.mask_path, record.path, 32))  # nearest, as read_mask
    assert (anomalous["image"] - read_image(record.path, 32)).abs().max() <= 0.5 / 255 + 1e-6  # uint8 of read_image
    assert anomalous["path"] == record.path and anomalous["mask"].sum() > 0
    written = {e: e.stat().st_mtime_ns for e in entries}

    # Every original replaced by bytes no decoder reads, size and mtime kept: a second load must not open them.
    for original in (root / "realiad_1024" / "audiojack").rglob("*_C1_*"):
        stat = original.stat()
        original.write_bytes(b"\0" * stat.st_size)
        os.utime(original, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.set_level(logging.INFO, logger="adzoo.data.real_iad")
    again = RealIADSource(root, view="C1", cache_dir=cache).test_dataset(["audiojack"], 32)
    second = [again[i] for i in range(len(again))]
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) for a, b in zip(first, second))
    assert {e: e.stat().st_mtime_ns for e in sorted(cache.rglob("*.npy"))} == written  # nothing rewritten or added
    assert "2 images at 32 px (2 cached, 0 to write) and 1 masks (1 cached)" in caplog.text
    assert f"{cached_bytes(32, 'image')} B per image x 2" in caplog.text


def test_an_edited_original_gets_a_new_cache_entry(tmp_path: Path) -> None:
    root, cache = real_iad_tree(tmp_path / "data"), tmp_path / "cache"
    train = RealIADSource(root, view="C2", categories="pcb", cache_dir=cache).train_dataset(["pcb"], 16)
    before = train[0]["image"]
    Image.new("RGB", (SIZE, SIZE), (255, 0, 0)).save(train.records[0].path, format="JPEG")
    after = RealIADSource(root, view="C2", categories="pcb", cache_dir=cache).train_dataset(["pcb"], 16)[0]["image"]
    assert not torch.equal(before, after) and after[0].mean() > 0.9
    assert len(list(cache.rglob("*.npy"))) == 2


def test_bad_json_is_named(tmp_path: Path) -> None:
    root = real_iad_tree(tmp_path)
    path = root / "realiad_jsons" / "realiad_jsons" / "pcb.json"
    path.write_text('{"meta": {"prefix": "pcb/", "normal_class": "OK"}, "train": [')
    with pytest.raises(DataError, match=rf"cannot read Real-IAD split file {path}"):
        RealIADSource(root)
    path.write_text(json.dumps({"meta": {"prefix": "pcb/", "normal_class": "OK"}, "train": [{"image_path": "x.jpg"}],
                                "test": []}))  # fmt: skip
    with pytest.raises(DataError, match=rf"{path}: train\[0\] must be an object with keys category"):
        RealIADSource(root)
    with pytest.raises(DataError, match=r"no Real-IAD split files.*found: realiad_jsons, realiad_jsons_sv"):
        RealIADSource(root, json_setting="realiad_jsons_fuiad_0.4")
    with pytest.raises(DataError, match="view='C9'"):
        RealIADSource(root, view="C9")


def test_missing_image_is_named(tmp_path: Path) -> None:
    source = RealIADSource(real_iad_tree(tmp_path), view="C1")
    missing = Path(source._test["pcb"][1].path)
    missing.unlink()
    with pytest.raises(DataError, match=str(missing)):
        source.validate()


def test_datamodule_and_a_one_epoch_patchknn_run(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = real_iad_tree(tmp_path / "Real-IAD")
    dm = AnomalyDataModule(RealIADSource(root, cache_dir=tmp_path / "cache"), image_size=32, val_fraction=0.2)
    dm.validate()
    assert len(dm.train_set) + len(dm.val_set) == 2 * N_TRAIN * 5 and len(dm.test_set) == 20
    masks = [dm.test_set[i]["mask"] for i in range(len(dm.test_set)) if dm.test_set[i]["label"] == 1]
    assert len(masks) == 4 and all(m.shape == (1, 32, 32) and m.sum() > 0 for m in masks)

    payload = run(compose_cfg(
        "data=real_iad", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=0", "data.source.view=C1", f"data.source.cache_dir={tmp_path / 'run-cache'}",
        "backbone=test_efficientnet", "method=patchknn", "trainer.max_epochs=1",
    ))  # fmt: skip
    data = payload["data"]
    assert data["train_images"] + data["val_images"] == 2 * N_TRAIN and data["test_images"] == 4
    assert sorted(payload["metrics"]["per_category"]) == list(CATEGORIES)
    assert "pixel_auroc" in payload["metrics"]["per_category"]["pcb"]
    assert len(list((tmp_path / "run-cache").rglob("*.npy"))) == 2 * (N_TRAIN + 2 + 1)  # C1: 5 images, 1 mask each
