"""The app's run logic through real Hydra composition and the real Lightning Trainer (patchknn, tiny data)."""

from __future__ import annotations

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
