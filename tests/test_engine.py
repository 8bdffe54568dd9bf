"""The app's run logic through real Hydra composition and the real Lightning Trainer (patchknn, tiny data)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from adzoo.engine import format_table, is_complete, run
from adzoo.utils.wandb_offline import read_offline_run
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration


def test_unified_run_writes_complete_results(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA)
    payload = run(cfg)
    results_path = tmp_path / "run" / "results.json"
    assert is_complete(results_path)
    written = json.loads(results_path.read_text())
    per_category = written["metrics"]["per_category"]
    assert len(per_category) >= 6
    for metrics in per_category.values():
        for key in ("image_auroc", "image_auroc_avgpool", "pixel_auroc", "pixel_aupro", "pixel_ap", "image_f1max"):
            assert 0.0 <= metrics[key] <= 1.0
    mean = written["metrics"]["mean"]
    recomputed = sum(m["image_auroc"] for m in per_category.values()) / len(per_category)
    assert math.isclose(mean["image_auroc"], recomputed)
    for key in ("config", "seed", "git", "versions", "device", "timing", "parameters", "throughput_images_per_s"):
        assert key in written
    assert written["config"]["method_name"] == "patchknn" and written["setting"] == "unified"
    assert written["timing"]["fit_s"] > 0 and written["parameters"]["total"] > 0
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + written["data"]["test_images"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert payload["metrics"]["mean"] == mean


def test_complete_run_is_skipped_and_force_reruns(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]")
    run(cfg)
    results_path = tmp_path / "run" / "results.json"
    stamp = results_path.stat().st_mtime_ns
    run(cfg)
    assert results_path.stat().st_mtime_ns == stamp
    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]", "force=true")
    run(cfg)
    assert results_path.stat().st_mtime_ns != stamp


def test_half_written_results_are_not_complete(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"status": "complete", "metr')
    assert not is_complete(path)
    path.write_text('{"status": "running"}')
    assert not is_complete(path)


def test_separate_setting_trains_one_model_per_category(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "backbone=test_efficientnet", *TINY_DATA, "data.setting=separate", "data.categories=[fabric,pill]"
    )
    payload = run(cfg)
    assert set(payload["metrics"]["per_category"]) == {"fabric", "pill"}
    for category in ("fabric", "pill"):
        assert (tmp_path / "run" / "categories" / category / "checkpoints" / "last.ckpt").is_file()
    assert len(payload["timing"]["per_group"]) == 2


def test_eval_reproduces_the_training_metrics(compose_cfg, tmp_path: Path) -> None:
    trained = run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric,pill]"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(
        "backbone=test_efficientnet",
        *TINY_DATA,
        "data.categories=[fabric,pill]",
        f"ckpt_path={ckpt}",
        config_name="eval",
        run_dir=tmp_path / "eval",
    )
    evaluated = run(cfg, evaluate_only=True)
    # bitwise: the same weights (float32 checkpoint, restored exactly), the same test batches, one process
    assert evaluated["metrics"]["per_category"] == trained["metrics"]["per_category"]


def test_wandb_offline_run_files_hold_the_metrics(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]", "logger=wandb")
    run(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    logged = read_offline_run(runs[0])
    summary = logged["summary"]
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["test/image_auroc"] == pytest.approx(written["metrics"]["mean"]["image_auroc"])
    assert "test/fabric/pixel_aupro" in summary
    assert logged["config"]["method_name"] == "patchknn"
    assert any(key.startswith("anomaly_maps/") for step in logged["history"] for key in step)


def test_unwritable_output_folder_fails_before_training(compose_cfg, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA, run_dir=blocker / "run")
    with pytest.raises(PermissionError, match="not writable"):
        run(cfg)


def test_table_formats_nan_as_dash() -> None:
    table = format_table({"a": {"image_auroc": 0.5}}, {"image_auroc": 0.5})
    assert "50.00" in table and "—" in table


def test_a_second_run_into_a_locked_folder_is_refused(compose_cfg, tmp_path: Path) -> None:
    from adzoo.utils.io import RunLockedError, run_lock

    cfg = compose_cfg("backbone=test_efficientnet", *TINY_DATA)
    with run_lock(tmp_path / "run"), pytest.raises(RunLockedError, match="in use by pid"):
        run(cfg)
    assert not (tmp_path / "run" / "results.json").exists()


def test_deterministic_sets_the_cublas_workspace_before_any_data_or_model(
    compose_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG once, when CUDA starts: the engine must set it first thing."""
    from hydra.errors import InstantiationException

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cfg = compose_cfg("data=mvtec", f"data.root={tmp_path / 'missing'}", "trainer.deterministic=true")
    with pytest.raises(InstantiationException, match="does not exist"):
        run(cfg)  # fails while indexing the data, before a Trainer or a model exists
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_torch_threads_is_applied_and_recorded(compose_cfg) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        results = run(
            compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric]", "torch_threads=1")
        )
        assert torch.get_num_threads() == 1
        assert results["device"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_a_bad_file_in_a_later_category_stops_the_run_before_the_first_fit(compose_cfg, tmp_path: Path) -> None:
    """Validation reads every category once, up front: a broken image in the last category must not cost the
    training of the earlier ones, and every problem is listed in the one error."""
    import shutil

    from adzoo.data.mvtec import DataError, generated_source

    source = generated_source(tmp_path / "gen", seed=0, image_size=32, n_train=6, n_test_good=2, n_test_per_defect=1)
    root = tmp_path / "parts"
    for category in ("fabric", "pill"):
        shutil.copytree(source.root / category, root / category)
    broken = sorted((root / "pill" / "test" / "good").glob("*.png"))
    broken[0].write_bytes(broken[0].read_bytes()[:60])
    mask = next((root / "pill" / "ground_truth").rglob("*.png"))
    mask.write_bytes(mask.read_bytes()[:60])
    cfg = compose_cfg("backbone=test_efficientnet", "data=mvtec", f"data.root={root}", "data.image_size=32",
                      "data.num_workers=0", "data.setting=separate")  # fmt: skip
    with pytest.raises(DataError) as caught:
        run(cfg)
    assert str(broken[0]) in str(caught.value) and str(mask) in str(caught.value)
    assert not (tmp_path / "run" / "categories" / "fabric" / "checkpoints").exists()  # fabric never trained


def _decision(results: dict, model: str = "unified") -> dict:
    return results["thresholds"]["models"][model]


def test_thresholds_are_fitted_on_the_validation_split_and_recorded(compose_cfg, tmp_path: Path) -> None:
    import torch

    from adzoo.thresholds import CHECKPOINT_KEY, DECISION_KEYS

    payload = run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[fabric,pill]"))
    data = payload["data"]
    assert data["val_images"] == 2 and data["train_images"] == 10  # one of each category's 6 held out
    decision = _decision(payload)
    assert decision["strategy"] == "percentile" and decision["validation"]["normal_images"] == 2
    assert math.isfinite(decision["image_threshold"]) and math.isfinite(decision["pixel_threshold"])
    assert payload["thresholds"]["config"]["q"] == 99.0
    for metrics in payload["metrics"]["per_category"].values():
        assert set(DECISION_KEYS) <= set(metrics)
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").read_text().splitlines()))
    for row in rows:
        assert int(row["is_anomalous"]) == int(float(row["pred_score"]) >= decision["image_threshold"])
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint[CHECKPOINT_KEY] == decision  # the checkpoint carries the decision
    assert "decision [unified] percentile" in (tmp_path / "run" / "results.txt").read_text()


def test_thresholds_do_not_move_when_test_labels_or_images_change(compose_cfg, tmp_path: Path) -> None:
    """No leakage: relabel test images, drop one, and the thresholds stay bit for bit (only validation decides)."""
    import shutil

    run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[pill]"))
    a_test_image = next(csv.DictReader((tmp_path / "run" / "predictions.csv").read_text().splitlines()))["path"]
    generated = Path(a_test_image).parents[3]  # <tree>/pill/test/<defect>/<file>
    root = tmp_path / "copy"
    shutil.copytree(generated, root)
    overrides = ["backbone=test_efficientnet", "data=mvtec", f"data.root={root}", "data.image_size=32",
                 "data.batch_size=8", "data.eval_batch_size=8", "data.num_workers=0",
                 "data.categories=[pill]"]  # fmt: skip
    before = run(compose_cfg(*overrides, run_dir=tmp_path / "before"))
    test = root / "pill" / "test"
    defect = next(d for d in sorted(test.iterdir()) if d.name != "good")
    moved = sorted(defect.iterdir())[0]
    shutil.move(moved, test / "good" / f"relabelled_{moved.name}")  # an anomalous image now labelled good
    (root / "pill" / "ground_truth" / defect.name / f"{moved.stem}_mask.png").unlink()
    sorted((test / "good").iterdir())[0].unlink()  # and a normal test image gone
    after = run(compose_cfg(*overrides, "force=true", run_dir=tmp_path / "after"))
    assert after["data"]["fingerprint"]["sha256"] != before["data"]["fingerprint"]["sha256"]
    assert after["data"]["test_images"] == before["data"]["test_images"] - 1
    assert _decision(after) == _decision(before)


def test_percentile_99_flags_about_one_percent_of_held_out_normal_images(compose_cfg, tmp_path: Path) -> None:
    """400 normal validation images fix the threshold; 400 normal test images (never seen) are flagged at ~1 %.
    Tolerance: the false-alarm rate of an empirical 99th percentile of 400 scores has sd ~0.5 points, its estimate
    on 400 test images another ~0.5, so 2.5 points is over 3.5 sd of both together."""
    payload = run(compose_cfg(
        "backbone=test_efficientnet", "data.image_size=32", "data.source.image_size=32", "data.batch_size=64",
        "data.eval_batch_size=64", "data.source.n_train=400", "data.source.n_test_good=200",
        "data.source.n_test_per_defect=1", "data.val_fraction=0.5", "data.categories=[fabric,pill]",
    ))  # fmt: skip
    decision = _decision(payload)
    assert decision["validation"]["normal_images"] == 400
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").read_text().splitlines()))
    normals = [int(r["is_anomalous"]) for r in rows if r["label"] == "0"]
    assert len(normals) == 400
    assert abs(sum(normals) / len(normals) - 0.01) <= 0.025


def test_decisions_that_cannot_be_fitted_fail_before_training(compose_cfg, tmp_path: Path) -> None:
    from adzoo.errors import ConfigError

    base = ["backbone=test_efficientnet", *TINY_DATA, "data.categories=[pill]"]
    with pytest.raises(ConfigError, match=r"data\.val_anomalies"):
        run(compose_cfg(*base, "threshold.strategy=f1_max", run_dir=tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"data\.val_fraction=0"):
        run(compose_cfg(*base, "data.val_fraction=0", run_dir=tmp_path / "b"))
    with pytest.raises(ValueError, match=r"data\.val_fraction=0\.95: category 'pill' has 6 training image"):
        run(compose_cfg(*base, "data.val_fraction=0.95", run_dir=tmp_path / "c"))
    assert not any((tmp_path / d / "checkpoints").exists() for d in "abc")  # nothing was trained
    payload = run(compose_cfg(*base, "data.val_fraction=0", "threshold.strategy=none", run_dir=tmp_path / "d"))
    assert payload["thresholds"]["models"] == {} and payload["data"]["val_images"] == 0


def test_f1_max_on_synthetic_validation_anomalies(compose_cfg) -> None:
    payload = run(compose_cfg("backbone=test_efficientnet", *TINY_DATA, "data.categories=[pill]",
                              "data.val_anomalies=cutpaste", "threshold.strategy=f1_max"))  # fmt: skip
    decision = _decision(payload)
    assert decision["strategy"] == "f1_max" and decision["validation"]["anomalous_images"] == 1
    assert decision["validation"]["anomalies"] == "cutpaste" and "pixel_tpr" in decision["validation"]
