"""MVTec LOCO AD in its distributed layout: per-image ground-truth folders (one mask per defect, holding its type's
pixel value), defects_config.json, the shipped validation split, the anomaly types of the test split; the real
datamodule, a one-epoch patch-kNN run, and bad trees named by path."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from adzoo.data import AnomalyDataModule, DataError
from adzoo.data.mvtec_loco import MVTecLOCOSource, read_mask_folder
from adzoo.errors import ConfigError

# Non-square, sizes differ by category (the real images are e.g. 1600x1280 and 800x1600): (width, height).
SIZES = {"breakfast_box": (40, 32), "juice_bottle": (24, 40)}
COUNTS = {"train/good": 4, "validation/good": 2, "test/good": 2, "test/logical_anomalies": 2,
          "test/structural_anomalies": 2}  # fmt: skip
BOX_A = (slice(2, 10), slice(3, 15))  # rows, columns
BOX_B = (slice(14, 22), slice(4, 12))
DEFECTS = [
    {"defect_name": "missing_item", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "extra_item", "pixel_value": 254, "saturation_threshold": 60, "relative_saturation": False},
    {"defect_name": "scratch", "pixel_value": 253, "saturation_threshold": 0.5, "relative_saturation": True},
]
#: ground truth: (type, stem) -> [(box, pixel value)], one mask file each (000.png, 001.png, ...)
GROUND_TRUTH = {
    ("logical_anomalies", "000"): [(BOX_A, 255), (BOX_B, 254)],  # two defects in one image
    ("logical_anomalies", "001"): [(BOX_A, 255)],
    ("structural_anomalies", "000"): [(BOX_B, 253)],
    ("structural_anomalies", "001"): [(BOX_A, 253)],
}


def _mask(size: tuple[int, int], box: tuple[slice, slice], value: int) -> np.ndarray:
    values = np.zeros((size[1], size[0]), dtype=np.uint8)
    values[box] = value
    return values


def loco_tree(root: Path, categories: tuple[str, ...] = tuple(SIZES)) -> Path:
    """<root>/<category>/{train/good, validation/good, test/{good,logical_anomalies,structural_anomalies},
    ground_truth/<type>/<stem>/000.png (001.png ...), defects_config.json}, PNGs named 000.png, 001.png, ..."""
    rng = np.random.default_rng(0)
    for category in categories:
        width, height = SIZES[category]
        base = root / category
        for folder, count in COUNTS.items():
            (base / folder).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
                for box, _ in GROUND_TRUTH.get((folder.split("/")[-1], f"{i:03d}"), []):
                    pixels[box] = 240
                Image.fromarray(pixels).save(base / folder / f"{i:03d}.png")
        for (kind, stem), defects in GROUND_TRUTH.items():
            folder = base / "ground_truth" / kind / stem
            folder.mkdir(parents=True)
            for j, (box, value) in enumerate(defects):
                Image.fromarray(_mask((width, height), box, value)).save(folder / f"{j:03d}.png")
        (base / "defects_config.json").write_text(json.dumps(DEFECTS, indent=2))
    return root


def test_index_counts_validation_split_files_and_summary(tmp_path: Path) -> None:
    source = MVTecLOCOSource(loco_tree(tmp_path / "loco"))
    assert source.categories() == ["breakfast_box", "juice_bottle"]
    for category in source.categories():
        assert len(source._train[category]) == 4
        val = source._val[category]
        assert len(val) == 2 and all(Path(r.path).parent.parts[-2:] == ("validation", "good") for r in val)
        test = source._test[category]
        assert sorted(r.defect for r in test) == ["good"] * 2 + ["logical_anomalies"] * 2 + ["structural_anomalies"] * 2
        bad = [r for r in test if r.label == 1]
        assert all(Path(r.mask_path).parts[-3:-1] == ("ground_truth", r.defect) for r in bad)
        assert all(Path(r.mask_path).name == Path(r.path).stem for r in bad)  # test/<type>/000.png -> <type>/000/
        assert all(r.has_mask for r in test)  # good test images count in the pixel metrics too
    files = source.files()
    assert not [f for f in files if Path(f).is_dir()]  # a ground-truth folder stands for its mask files
    assert len(files) == 2 * (4 + 2 + 6 + 5)  # images of train, validation, test, and 5 mask files per category
    source.validate()
    summary = source.summary()
    assert "breakfast_box: train 4, validation 2 (shipped), test 6" in summary
    assert "logical_anomalies 2, masks 2/2" in summary
    assert "test split: test/good + logical_anomalies + structural_anomalies" in summary
    assert "juice_bottle: 5 mask files; 3 defect types" in summary


def test_datamodule_mask_is_the_union_of_the_ground_truth_folder(tmp_path: Path) -> None:
    root = loco_tree(tmp_path / "loco")
    source = MVTecLOCOSource(root)
    dm = AnomalyDataModule(source, name="mvtec_loco", image_size=16, batch_size=2, categories=["breakfast_box"],
                           preload=False)  # fmt: skip
    assert all("/validation/good/" in dm.val_set[i]["path"] for i in range(len(dm.val_set)))
    assert dm.val_source == {"breakfast_box": "shipped"}  # not held out of train
    test = dm.test_set
    by_path = {test[i]["path"]: test[i] for i in range(len(test))}
    image = str(root / "breakfast_box" / "test" / "logical_anomalies" / "000.png")
    size = SIZES["breakfast_box"]
    union = (_mask(size, BOX_A, 1) | _mask(size, BOX_B, 1)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(union)[None, None], size=(16, 16), mode="nearest")[0]
    assert torch.equal(by_path[image]["mask"], expected)  # both defects, nearest-resized like every mask
    assert by_path[image]["mask"].shape == (1, 16, 16) and by_path[image]["image"].shape == (3, 16, 16)
    folder = root / "breakfast_box" / "ground_truth" / "logical_anomalies" / "000"
    full = read_mask_folder(sorted(folder.iterdir()), image, None)
    assert torch.equal(full[0], torch.from_numpy(union))  # read back at full size: exactly the union
    good = str(root / "breakfast_box" / "test" / "good" / "000.png")
    assert by_path[good]["label"] == 0 and not by_path[good]["mask"].any() and by_path[good]["has_mask"]

    channels = source.defect_channels(image)
    assert [(d.name, d.relative) for _, d in channels] == [("missing_item", True), ("extra_item", False)]
    assert np.array_equal(channels[0][0], _mask(size, BOX_A, 1) > 0)
    assert np.array_equal(channels[1][0], _mask(size, BOX_B, 1) > 0)
    assert source.defect_channels(good) == []
    with pytest.raises(DataError, match="is not a test image"):
        source.defect_channels(root / "breakfast_box" / "train" / "good" / "000.png")


@pytest.mark.parametrize(
    ("kind", "folders"),
    [
        ("logical", {"good", "logical_anomalies"}),
        ("structural", {"good", "structural_anomalies"}),
        ("both", {"good", "logical_anomalies", "structural_anomalies"}),
    ],
)
def test_anomaly_types_choose_the_test_split_and_name_the_data(compose_cfg, tmp_path: Path, kind, folders) -> None:
    root = loco_tree(tmp_path / "loco")
    cfg = compose_cfg("data=mvtec_loco", f"data.root={root}", f"data.source.anomaly_types={kind}")
    dm = instantiate(cfg.data)
    assert dm.name == f"mvtec_loco_{kind}"
    assert {r.defect for c in dm.categories for r in dm.source._test[c]} == folders
    assert len(dm.test_set) == 2 * (2 + 2 * (len(folders) - 1))
    assert f"test/good + {' + '.join(sorted(folders - {'good'}))}" in dm.source.summary()


def test_unknown_anomaly_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="anomaly_types='pooled': expected one of logical, structural, both"):
        MVTecLOCOSource(loco_tree(tmp_path / "loco"), anomaly_types="pooled")


def test_one_epoch_patchknn_run(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    root = loco_tree(tmp_path / "loco")
    cfg = compose_cfg(
        "data=mvtec_loco", f"data.root={root}", "data.source.anomaly_types=logical", "data.image_size=32",
        "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "backbone=test_efficientnet",
        "method=patchknn",
    )  # fmt: skip
    payload = run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    data = written["data"]
    assert data["name"] == "mvtec_loco_logical"
    assert data["train_images"] == 8 and data["val_images"] == 4 and data["test_images"] == 8
    assert data["val_source"] == {"breakfast_box": "shipped", "juice_bottle": "shipped"}
    assert data["fingerprint"]["files"] == 2 * (4 + 2 + 4 + 3)  # the logical ground truth: 3 mask files each
    assert set(payload["metrics"]["per_category"]) == {"breakfast_box", "juice_bottle"}
    for metrics in payload["metrics"]["per_category"].values():
        assert 0.0 <= metrics["pixel_auroc"] <= 1.0  # masks were found and used
        assert "pixel_spro" not in metrics  # off by default


def _expect(root: Path, pattern: str, validate: bool = False) -> None:
    """Indexing raises ``pattern``, or with ``validate`` indexing passes and the one-pass check raises it."""
    if not validate:
        with pytest.raises(DataError, match=pattern):
            MVTecLOCOSource(root)
        return
    source = MVTecLOCOSource(root)
    with pytest.raises(DataError, match=pattern):
        source.validate()


def test_bad_trees_name_the_path(tmp_path: Path) -> None:
    def tree(name: str) -> tuple[Path, Path]:
        root = loco_tree(tmp_path / name, ("breakfast_box",))
        return root, root / "breakfast_box"

    root, base = tree("missing_folder")
    shutil.rmtree(base / "ground_truth" / "logical_anomalies" / "001")
    _expect(root, rf"no mask for .*logical_anomalies/001\.png: expected the folder "
                  rf"{re.escape(str(base / 'ground_truth' / 'logical_anomalies' / '001'))}")  # fmt: skip

    root, base = tree("missing_type")
    shutil.rmtree(base / "ground_truth" / "structural_anomalies")
    _expect(root, f"missing folder {re.escape(str(base / 'ground_truth' / 'structural_anomalies'))}")

    root, base = tree("empty_folder")
    for mask in (base / "ground_truth" / "structural_anomalies" / "000").iterdir():
        mask.unlink()
    _expect(root, f"empty ground-truth folder {re.escape(str(base / 'ground_truth' / 'structural_anomalies' / '000'))}")

    root, base = tree("two_values")
    mask = base / "ground_truth" / "logical_anomalies" / "001" / "000.png"
    values = _mask(SIZES["breakfast_box"], BOX_A, 255)
    values[BOX_A[0], 3] = 100
    Image.fromarray(values).save(mask)
    _expect(root, rf"mask {re.escape(str(mask))} holds the values \[100, 255\] besides 0", validate=True)

    root, base = tree("unlisted_value")
    mask = base / "ground_truth" / "structural_anomalies" / "000" / "000.png"
    Image.fromarray(_mask(SIZES["breakfast_box"], BOX_B, 77)).save(mask)
    config = re.escape(str(base / "defects_config.json"))
    _expect(root, rf"mask {re.escape(str(mask))} has the defect value 77, which {config} does not list", validate=True)
    with pytest.raises(DataError, match="defect value 77 is not listed"):
        MVTecLOCOSource(root).defect_channels(base / "test" / "structural_anomalies" / "000.png")

    root, base = tree("wrong_size")
    mask = base / "ground_truth" / "logical_anomalies" / "000" / "001.png"
    Image.fromarray(np.full((10, 10), 254, dtype=np.uint8)).save(mask)
    _expect(root, rf"mask {re.escape(str(mask))} is 10x10 but its image .*logical_anomalies/000\.png is 40x32",
            validate=True)  # fmt: skip

    root, base = tree("bad_json")
    config_path = base / "defects_config.json"
    config_path.write_text("[{'defect_name': 'x'}")
    _expect(root, f"cannot read {re.escape(str(config_path))}: ")
    config_path.write_text(json.dumps([{**DEFECTS[0], "pixel_value": 0}]))
    _expect(root, f"{re.escape(str(config_path))}: entry 0: pixel_value 0, expected an integer in 1..255")
    config_path.write_text(json.dumps([{**DEFECTS[0], "saturation_threshold": 1}]))
    _expect(root, f"{re.escape(str(config_path))}: entry 0: relative saturation_threshold 1, expected a float")
    config_path.unlink()
    _expect(root, f"missing file {re.escape(str(config_path))} \\(expected MVTec LOCO AD's JSON list")

    with pytest.raises(DataError, match=r"data\.root is not set"):
        MVTecLOCOSource(None)
