"""Manifest files (csv and json): loading through the datamodule and a real run, the pixel-metrics rule, and random
faults, each of which must fail with a DataError naming the manifest, the row and the column."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from adzoo.data import AnomalyDataModule
from adzoo.data.manifest import ANOMALOUS_LABELS, NORMAL_LABELS, ManifestSource
from adzoo.data.mvtec import DataError

SIZE = 12
COLUMNS = ("image", "split", "label", "mask", "category")


def _image(path: Path, seed: int, size: int = SIZE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return str(path)


def _mask(path: Path, size: int = SIZE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.zeros((size, size), dtype=np.uint8)
    values[2:5, 3:7] = 255
    Image.fromarray(values).save(path)
    return str(path)


def write_manifest(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> Path:
    """``rows`` as a csv (header = ``columns``) or a json list, by ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps([{k: v for k, v in row.items() if k in columns} for row in rows]))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def tree(folder: Path, categories: tuple[str, ...] = ("bolt", "nut"), n_train: int = 6) -> list[dict]:
    """Per category: ``n_train`` normal training images, 2 normal and 2 anomalous (masked) test images; paths
    relative to ``folder`` (where the manifest goes), in folders of their own making."""
    rows, seed = [], 0
    for category in categories:
        for split, label, count in (("train", "normal", n_train), ("test", "normal", 2), ("test", "anomaly", 2)):
            for _ in range(count):
                seed += 1
                name = f"pics/{category}/{seed:03d}.png"
                _image(folder / name, seed)
                mask = None
                if label == "anomaly":
                    mask = f"labels/{category}-{seed:03d}.png"
                    _mask(folder / mask)
                rows.append({"image": name, "split": split, "label": label, "mask": mask, "category": category})
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_manifest_loads_through_the_datamodule(tmp_path: Path, suffix: str) -> None:
    rows = tree(tmp_path / "data")
    normal = [row for row in rows if row["label"] == "normal"]
    for row, label in zip(normal, ["0", "GOOD", " ok ", "Normal"] * 4):  # spellings, with case and spaces
        row["label"] = label
    if suffix == ".json":
        rows[-1]["label"] = 1  # json may give the integers
    manifest = write_manifest(tmp_path / "data" / f"list{suffix}", rows)
    source = ManifestSource(manifest)
    assert source.root == tmp_path / "data" and source.categories() == ["bolt", "nut"]
    dm = AnomalyDataModule(source, image_size=8, val_fraction=0.2)
    dm.validate()
    assert len(dm.train_set) == 2 * 5 and len(dm.val_set) == 2 and len(dm.test_set) == 8
    assert source.has_masks("bolt") and source.has_masks("nut")
    anomalous = [dm.test_set[i] for i in range(8) if dm.test_set[i]["label"] == 1]
    assert len(anomalous) == 4 and all(a["mask"].shape == (1, 8, 8) and a["mask"].sum() > 0 for a in anomalous)
    first = next(row for row in rows if row["mask"])
    assert anomalous[0]["path"] == str(tmp_path / "data" / first["image"])  # relative to the manifest's folder


def test_without_a_category_column_every_row_is_one_category(tmp_path: Path) -> None:
    rows = tree(tmp_path, categories=("x",))
    rows[0]["image"] = str(tmp_path / rows[0]["image"])  # absolute paths work too
    source = ManifestSource(write_manifest(tmp_path / "m.json", rows, COLUMNS[:4]), default_category="parts")
    assert source.categories() == ["parts"] and len(source._train["parts"]) == 6


def test_pixel_metrics_need_a_mask_for_every_anomaly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = tree(tmp_path)
    nut_anomalies = [r for r in rows if r["category"] == "nut" and r["mask"]]
    nut_anomalies[0]["mask"] = None  # nut: one of its two anomalies is image-label only
    for row in rows:
        if row["category"] == "bolt":
            row["mask"] = None  # bolt: no masks at all
    source = ManifestSource(write_manifest(tmp_path / "list.csv", rows))
    assert not source.has_masks("bolt") and not source.has_masks("nut")
    assert all(r.mask_path is None for r in source._test["nut"])  # the one mask given is not used
    assert sorted(r.label for r in source._test["nut"]) == [0, 0, 1, 1]
    assert "category nut has masks for 1 of 2 anomalous test images (none in row 19 (line 20))" in caplog.text


def test_validation_rows_are_the_shipped_validation_split(tmp_path: Path) -> None:
    rows = tree(tmp_path, categories=("x",))
    rows[0]["split"], rows[1]["split"] = "validation", "VAL"
    dm = AnomalyDataModule(ManifestSource(write_manifest(tmp_path / "list.csv", rows)), image_size=8)
    assert len(dm.val_set) == 2 and len(dm.train_set) == 4 and dm.val_source == {"x": "shipped"}


def test_one_epoch_patchknn_run(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    rows = tree(tmp_path / "data")
    manifest = write_manifest(tmp_path / "data" / "list.csv", rows)
    payload = run(compose_cfg(
        "data=manifest", f"data.file={manifest}", "data.setting=unified", "data.image_size=32", "data.batch_size=4",
        "data.eval_batch_size=4", "data.num_workers=0", "backbone=test_efficientnet", "method=patchknn",
        "trainer.max_epochs=1",
    ))  # fmt: skip
    data = payload["data"]
    assert data["root"] == str(manifest) and data["train_images"] + data["val_images"] == 12
    assert data["test_images"] == 8 and sorted(payload["metrics"]["per_category"]) == ["bolt", "nut"]
    assert "pixel_auroc" in payload["metrics"]["per_category"]["nut"]


def test_data_file_not_set_or_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.file is not set"):
        ManifestSource(None)
    with pytest.raises(DataError, match=f"manifest {tmp_path / 'nope.csv'} does not exist"):
        ManifestSource(tmp_path / "nope.csv")


def test_columns_are_checked(tmp_path: Path) -> None:
    rows = tree(tmp_path, categories=("x",))
    with pytest.raises(DataError, match=r"missing column\(s\) label; unknown column\(s\) 'lable'"):
        ManifestSource(write_manifest(tmp_path / "a.csv", rows, ("image", "split", "lable")))
    (tmp_path / "b.csv").write_text("image,split,label\npics/x/001.png,train,0,surplus\n")
    with pytest.raises(DataError, match=r"row 1 \(line 2\), column '': more cells than the header names"):
        ManifestSource(tmp_path / "b.csv")


def test_anomalous_training_rows_and_empty_categories(tmp_path: Path) -> None:
    rows = tree(tmp_path, categories=("x",))
    rows[2]["label"] = "anomaly"
    with pytest.raises(DataError, match=r"row 3 \(line 4\), column 'label': an anomalous image in the train split"):
        ManifestSource(write_manifest(tmp_path / "a.csv", rows))
    only_train = [r for r in tree(tmp_path, categories=("x",)) if r["split"] == "train"]
    with pytest.raises(DataError, match="empty category 'x': no test rows"):
        ManifestSource(write_manifest(tmp_path / "b.csv", only_train))


# -- property test: random manifests with random faults ------------------------------------------------------------

ROW_FAULTS = ("missing_image", "missing_mask", "bad_label", "unknown_split", "mask_on_normal", "duplicate")
FAULTS = (*ROW_FAULTS, "mask_wrong_size")  # the last is found by validate(), which reads the files


@st.composite
def manifests(draw: st.DrawFn) -> dict:
    """A valid manifest's rows (normal train, normal and anomalous masked test per category), then faults on
    distinct rows: row number -> fault."""
    rows = []
    for c in range(draw(st.integers(1, 2))):
        counts = {("train", 0): draw(st.integers(1, 3)), ("test", 0): draw(st.integers(0, 2))}
        counts["test", 1] = draw(st.integers(1, 2))
        for (split, label), n in counts.items():
            for _ in range(n):
                spelling = draw(st.sampled_from(ANOMALOUS_LABELS if label else NORMAL_LABELS))
                split_text = draw(st.sampled_from([split, split.upper(), f" {split.title()} "]))
                rows.append({"split": split_text, "label": draw(st.sampled_from([spelling, spelling.upper()])),
                             "category": f"cat{c}", "anomalous": label})  # fmt: skip
    faults = draw(st.one_of(st.just([]), st.lists(st.sampled_from(FAULTS), min_size=1, max_size=3)))
    order = draw(st.permutations(range(len(rows))))
    chosen: dict[int, str] = {}
    for fault in faults:
        needs = {"missing_mask": 1, "mask_wrong_size": 1, "mask_on_normal": 0}.get(fault)
        free = [i for i in order if i not in chosen and (needs is None or rows[i]["anomalous"] == needs)]
        if free:
            chosen[free[0]] = fault
    return {"rows": rows, "faults": chosen, "suffix": draw(st.sampled_from([".csv", ".json"]))}


def _materialise(folder: Path, spec: dict) -> tuple[Path, dict[int, str], list[dict]]:
    """Write the images, masks and manifest; return it, the faulty row numbers (1-based) and the valid rows."""
    rows, faults = [], {}
    for i, row in enumerate(spec["rows"]):
        fault = spec["faults"].get(i)
        entry = {k: row[k] for k in ("split", "label", "category")}
        entry["image"] = f"img/{i}.png" if fault != "missing_image" else f"img/gone-{i}.png"
        _image(folder / f"img/{i}.png", i)
        entry["mask"] = None
        if row["anomalous"] or fault == "mask_on_normal":
            entry["mask"] = f"gt/{i}.png" if fault != "missing_mask" else f"gt/gone-{i}.png"
            _mask(folder / f"gt/{i}.png", SIZE + 3 if fault == "mask_wrong_size" else SIZE)
        if fault == "bad_label":
            entry["label"] = "maybe" if i % 2 else "2"
        if fault == "unknown_split":
            entry["split"] = "holdout"
        rows.append(entry)
        if fault is not None and fault != "duplicate":
            faults[len(rows)] = fault
        if fault == "duplicate":
            rows.append(dict(entry))
            faults[len(rows)] = fault
    valid = [r for n, r in enumerate(rows, start=1) if n not in faults]
    return write_manifest(folder / f"list{spec['suffix']}", rows), faults, valid


def _one_fault(fault: str, suffix: str) -> dict:
    """Three rows of one category (normal train, normal test, anomalous test) with ``fault`` on a row it fits."""
    rows = [{"split": split, "label": label, "category": "c", "anomalous": int(label == "1")}
            for split, label in (("train", "0"), ("test", "0"), ("test", "1"))]  # fmt: skip
    return {"rows": rows, "faults": {{"mask_on_normal": 1}.get(fault, 2): fault}, "suffix": suffix}


def every_fault(test: Callable) -> Callable:
    """The test with one explicit example per fault and format, so no fault kind is left to chance."""
    for fault in FAULTS:
        for suffix in (".csv", ".json"):
            test = example(_one_fault(fault, suffix))(test)
    return test


@every_fault
@settings(max_examples=80, deadline=None, database=None)
@given(manifests())
def test_random_faults_are_named_by_row_and_valid_manifests_load(spec: dict) -> None:
    """Every fault kind once in each format (the examples), then random manifests."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest, faults, valid = _materialise(Path(tmp), spec)
        row_faults = {n: f for n, f in faults.items() if f in ROW_FAULTS}
        for fault in faults.values():
            event(fault)
        if row_faults:
            with pytest.raises(DataError) as caught:
                ManifestSource(manifest)
            message = str(caught.value)
            assert f"manifest {manifest}" in message
            for n, fault in row_faults.items():
                column = {"missing_image": "image", "bad_label": "label", "unknown_split": "split"}.get(fault, "mask")
                column = "image" if fault == "duplicate" else column
                assert f"row {n} (" in message and f"row {n} ({_where(manifest, n)}), column '{column}'" in message
            return
        source = ManifestSource(manifest)
        wrong_size = [n for n, f in faults.items() if f == "mask_wrong_size"]
        if wrong_size:
            with pytest.raises(DataError) as caught:
                source.validate()
            for n in wrong_size:
                assert f"(manifest {manifest}, row {n} ({_where(manifest, n)}))" in str(caught.value)
            return
        event("valid")
        source.validate()
        for category in sorted({r["category"] for r in valid}):
            mine = [r for r in valid if r["category"] == category]
            assert len(source._train[category]) == sum(r["split"].strip().lower() == "train" for r in mine)
            assert len(source._test[category]) == sum(r["split"].strip().lower() == "test" for r in mine)
            assert source.has_masks(category)
            assert sum(r.label for r in source._test[category]) == sum(r["mask"] is not None for r in mine)


def _where(manifest: Path, n: int) -> str:
    return f"line {n + 1}" if manifest.suffix == ".csv" else f"entry [{n - 1}]"
