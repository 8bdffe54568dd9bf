"""MVTec AD 2 in its distributed layout: public test set with masks, shipped validation split, private sets listed
for prediction and never mixed into test; the real datamodule, a one-epoch patch-kNN run, and bad trees."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from adzoo.data import AnomalyDataModule, DataError
from adzoo.data.mvtec import read_image
from adzoo.data.mvtec_ad2 import PRIVATE_SETS, MVTecAD2Source, main, write_submission
from adzoo.predict import load_model

WIDTH, HEIGHT = 48, 40  # non-square, like the real images (several megapixels; the loader only resizes)
MASK_BOX = (slice(8, 24), slice(12, 36))  # rows, columns of the defect in every bad image
COUNTS = {"train/good": 4, "validation/good": 2, "test_public/good": 2, "test_public/bad": 2}
PRIVATE_COUNTS = {"test_private": 3, "test_private_mixed": 2}


def _png(path: Path, rng: np.random.Generator, defect: bool = False) -> None:
    pixels = rng.integers(60, 120, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if defect:
        pixels[MASK_BOX] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _tree(root: Path, categories: tuple[str, ...] = ("can", "vial")) -> Path:
    """<root>/<category>/{train/good, validation/good, test_public/{good,bad}, test_public/ground_truth/bad,
    test_private, test_private_mixed}, PNG names with MVTec's three-digit prefix (official glob [0-9][0-9][0-9]*)."""
    rng = np.random.default_rng(0)
    for category in categories:
        base = root / category
        for folder, count in COUNTS.items():
            for i in range(count):
                name = f"{i:03d}_overexposed.png" if i == 1 else f"{i:03d}_regular.png"
                _png(base / folder / name, rng, defect=folder.endswith("bad"))
                if folder.endswith("bad"):
                    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
                    mask[MASK_BOX] = 255
                    (base / "test_public" / "ground_truth" / "bad").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask).save(base / "test_public" / "ground_truth" / "bad" / f"{name[:-4]}_mask.png")
        for folder, count in PRIVATE_COUNTS.items():
            for i in range(count):
                _png(base / folder / f"{i:03d}_regular.png", rng, defect=i == 0)
    return root


def test_index_counts_and_private_sets_stay_out_of_every_split(tmp_path: Path) -> None:
    source = MVTecAD2Source(_tree(tmp_path / "ad2"))
    assert source.categories() == ["can", "vial"]
    for category in ("can", "vial"):
        test = source._test[category]
        assert len(source._train[category]) == 4 and len(source._val[category]) == 2
        assert sorted(r.label for r in test) == [0, 0, 1, 1]
        bad = [r for r in test if r.label == 1]
        assert {Path(r.mask_path).name for r in bad} == {"000_regular_mask.png", "001_overexposed_mask.png"}
        assert all(Path(r.mask_path).parent.parts[-2:] == ("ground_truth", "bad") for r in bad)
        for split, count in PRIVATE_COUNTS.items():
            images = source.private_images(category, split)
            assert len(images) == count and all(p.parent.name == split for p in images)
    read = source.files()
    assert not [p for p in read if any(s in Path(p).parts for s in PRIVATE_SETS)]  # never fingerprinted or tested
    assert len(read) == 2 * (4 + 2 + 2 + 2 + 2)  # images of train, validation, test_public and the 2 masks
    source.validate()
    summary = source.summary()
    assert "validation 2 (shipped)" in summary and "test_private 3, test_private_mixed 2 (predict-only" in summary
    with pytest.raises(DataError, match="test_private_mixed"):
        source.private_images("can", "test_public")


def test_datamodule_uses_the_shipped_validation_split_and_reads_masks(tmp_path: Path) -> None:
    source = MVTecAD2Source(_tree(tmp_path / "ad2"))
    dm = AnomalyDataModule(source, name="mvtec_ad2", image_size=24, batch_size=2, categories=["vial"], preload=False)
    assert dm.describe()["train_images"] == 4 and dm.describe()["val_images"] == 2
    assert dm.val_source == {"vial": "shipped"}  # not held out of train
    assert all("/validation/good/" in dm.val_set[i]["path"] for i in range(len(dm.val_set)))
    test = dm.test_set
    bad = [test[i] for i in range(len(test)) if test[i]["label"] == 1]
    assert len(bad) == 2 and all(s["image"].shape == (3, 24, 24) for s in bad)
    mask = bad[0]["mask"][0]
    # 16 of 40 rows and 24 of 48 columns, nearest-resized to 24x24: about 9.6 x 12 pixels
    assert 80 <= int(mask.sum()) <= 150 and mask[10, 12] == 1 and mask[0, 0] == 0


def test_one_epoch_patchknn_run_then_predict_a_private_set(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run
    from adzoo.predict import predict_folder

    root = _tree(tmp_path / "ad2")
    cfg = compose_cfg(
        "data=mvtec_ad2", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn",
    )  # fmt: skip
    payload = run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["data"]["train_images"] == 8 and written["data"]["val_images"] == 4
    assert written["data"]["test_images"] == 8  # test_public only: no private image is tested
    assert written["data"]["val_source"] == {"can": "shipped", "vial": "shipped"}
    assert set(payload["metrics"]["per_category"]) == {"can", "vial"}
    for metrics in payload["metrics"]["per_category"].values():
        assert 0.0 <= metrics["pixel_auroc"] <= 1.0  # masks were found and used
    rows = (tmp_path / "run" / "predictions.csv").read_text()
    assert "test_private" not in rows

    commands = MVTecAD2Source(root).predict_commands(tmp_path / "run", tmp_path / "submission")
    assert len(commands) == 4  # 2 categories x 2 private sets, a unified run: no category=
    assert all(c.startswith("adzoo-predict ckpt=") and "category=" not in c for c in commands)
    options = dict(word.split("=", 1) for word in shlex.split(commands[0])[1:])
    assert options["input"] == str(root / "can" / "test_private")
    scored = predict_folder(Path(options["ckpt"]), Path(options["input"]), Path(options["output"]))
    assert len(scored.rows) == PRIVATE_COUNTS["test_private"]
    assert (tmp_path / "submission" / "can" / "test_private" / "scores.csv").is_file()

    # The submission folder: float16 maps at each image's own size, and masks at the run's pixel threshold.
    out = tmp_path / "upload"
    assert main(["--submission", str(tmp_path / "run"), str(root), str(out)]) == 0
    maps = sorted((out / "anomaly_images").rglob("*.tiff"))
    masks = sorted((out / "anomaly_images_thresholded").rglob("*.png"))
    assert len(maps) == len(masks) == 2 * sum(PRIVATE_COUNTS.values())
    first = out / "anomaly_images" / "can" / "test_private" / "000_regular.tiff"
    values = tifffile.imread(first)
    assert values.dtype == np.float16 and values.shape == (HEIGHT, WIDTH)
    model, config = load_model(tmp_path / "run")
    image = read_image(root / "can" / "test_private" / "000_regular.png", config["data"]["image_size"])
    with torch.no_grad():
        small = model(image[None]).anomaly_map.float()
    expected = torch.nn.functional.interpolate(small[:, :1], (HEIGHT, WIDTH), mode="bilinear")[0, 0].numpy()
    np.testing.assert_allclose(
        values.astype(np.float32), expected, rtol=2e-3, atol=1e-3 * float(np.abs(expected).max())
    )
    threshold = model.decision["pixel_threshold"]
    mask = np.asarray(Image.open(out / "anomaly_images_thresholded" / "can" / "test_private" / "000_regular.png"))
    assert set(np.unique(mask)) <= {0, 255}
    assert (
        np.array_equal(mask == 255, expected >= threshold) or np.mean((mask == 255) != (expected >= threshold)) < 0.01
    )
    # resumable: only the missing file is written again
    first.unlink()
    source = MVTecAD2Source(root)
    written = write_submission(source, tmp_path / "run", out)
    assert written == {"can/test_private": 1, "can/test_private_mixed": 0, "vial/test_private": 0,
                       "vial/test_private_mixed": 0}  # fmt: skip
    assert np.array_equal(tifffile.imread(first), values)


def test_predict_commands_of_a_separate_run_name_the_category(tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path / "ad2")
    run_dir = tmp_path / "run"
    (run_dir / "categories" / "vial" / "checkpoints").mkdir(parents=True)
    (run_dir / "categories" / "vial" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run_dir / "results.json").write_text(json.dumps({"data": {"categories": ["vial"]}}))
    assert main([str(run_dir), str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.endswith("category=vial") for line in lines)
    assert {shlex.split(line)[2] for line in lines} == {f"input={root / 'vial' / s}" for s in PRIVATE_SETS}
    assert main([str(tmp_path / "no_run"), str(root)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_bad_trees_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.root is not set"):
        MVTecAD2Source(None)
    root = _tree(tmp_path / "ad2", ("can",))
    mask = root / "can" / "test_public" / "ground_truth" / "bad" / "001_overexposed_mask.png"
    mask.unlink()
    with pytest.raises(DataError, match=rf"no mask for .*001_overexposed\.png: expected {re.escape(str(mask))}"):
        MVTecAD2Source(root)
    root = _tree(tmp_path / "ad2b", ("can",))
    for image in (root / "can" / "validation" / "good").iterdir():
        image.unlink()
    with pytest.raises(
        DataError, match=f"empty category: no images in {re.escape(str(root / 'can' / 'validation' / 'good'))}"
    ):
        MVTecAD2Source(root)
    root = _tree(tmp_path / "ad2c", ("can",))
    (root / "can" / "test_public" / "bad" / "000_regular.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"cannot read image .*test_public/bad/000_regular\.png"):
        MVTecAD2Source(root).validate()
    with pytest.raises(DataError, match="no category found"):
        MVTecAD2Source(root / "can" / "train")
