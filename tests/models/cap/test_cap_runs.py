"""CAP through real Hydra composition and the real Trainer: generated set, digits, paper profile, eval, DDP."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adzoo.cli.export import main as export_main
from adzoo.engine import is_complete, run
from adzoo.predict import load_model
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration
TINY_CAP = ["method=cap", "backbone=test_efficientnet", *TINY_DATA, "trainer.max_epochs=2"]


def test_unified_run_trains_and_eval_reproduces_the_metrics(compose_cfg, tmp_path: Path) -> None:
    trained = run(compose_cfg(*TINY_CAP, "data.categories=[fabric,pill]"))
    assert is_complete(tmp_path / "run" / "results.json")
    assert set(trained["metrics"]["per_category"]) == {"fabric", "pill"}
    for metrics in trained["metrics"]["per_category"].values():
        for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
            assert 0.0 <= metrics[key] <= 1.0
    assert trained["config"]["model"]["k"] == 4 and trained["parameters"]["trainable"] == 3 * 64 * 64
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["state_dict"]["model.bank"].shape == (10, 64)  # 5 of 6 training images per category (1 held out)
    assert "backbone" not in state["hyper_parameters"] and state["hyper_parameters"]["constraint_weight"] == 0.1
    evaluated = run(
        compose_cfg(
            *TINY_CAP,
            "data.categories=[fabric,pill]",
            f"ckpt_path={ckpt}",
            config_name="eval",
            run_dir=tmp_path / "eval",
        ),
        evaluate_only=True,
    )
    # bitwise: the same weights (float32 checkpoint, restored exactly), the same test batches, one process
    assert evaluated["metrics"]["per_category"] == trained["metrics"]["per_category"]


def test_exported_torchscript_matches_the_eager_model(compose_cfg, tmp_path: Path) -> None:
    """The bank search runs as torch ops in the exported graph, so CAP deploys without faiss."""
    run(compose_cfg(*TINY_CAP, "data.categories=[pill]", "trainer.max_epochs=1"))
    out = tmp_path / "export"
    assert export_main([f"ckpt={tmp_path / 'run'}", f"output={out}", "format=torchscript"]) == 0
    scripted = torch.jit.load(str(out / "model.ts"))
    module, _ = load_model(tmp_path / "run")
    module.use_feature_cache = False
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        eager = module(images)
        score, anomaly_map, *_decided = scripted(images)
    torch.testing.assert_close(score, eager.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(anomaly_map, eager.anomaly_map, rtol=1e-4, atol=1e-4)


def test_ablations_run_in_the_separate_setting(compose_cfg, tmp_path: Path) -> None:
    for i, switch in enumerate(("model.adaptation=false", "model.attention=false", "model.constraint_weight=0")):
        payload = run(
            compose_cfg(
                *TINY_CAP, "data.setting=separate", "data.categories=[wood]", switch, run_dir=tmp_path / f"run{i}"
            )
        )
        assert set(payload["metrics"]["per_category"]) == {"wood"}
        trainable = {0: 0, 1: 64 * 64, 2: 3 * 64 * 64}[i]
        assert payload["parameters"]["trainable"] == trainable


def test_one_class_digits(compose_cfg) -> None:
    payload = run(
        compose_cfg(
            "experiment=cap_oneclass",
            "data.image_size=32",
            "data.categories=[digit_0,digit_1]",
            "data.source.max_train_per_task=40",
            "data.source.max_test_per_task=60",
            "model.k=8",
            "trainer.max_epochs=2",
        )
    )
    assert payload["setting"] == "separate" and payload["profile"] == "cpu"
    assert payload["config"]["model"]["constraint_weight"] == 2.0
    per_category = payload["metrics"]["per_category"]
    assert set(per_category) == {"digit_0", "digit_1"}
    for metrics in per_category.values():  # packaged ImageNet features separate digits even at 32²
        assert metrics["image_auroc"] > 0.8
        assert "pixel_auroc" not in metrics


def test_paper_profile_composes_and_runs_a_few_steps(compose_cfg) -> None:
    payload = run(
        compose_cfg(
            "experiment=cap_paper_mvtec",
            "data=synthetic",
            *TINY_DATA,
            "backbone.weights=none",
            "data.categories=[wood]",
            "trainer.max_epochs=1",
        )
    )
    assert payload["profile"] == "paper" and payload["backbone"]["name"].startswith("resnet152")
    assert payload["parameters"]["trainable"] == 3 * 2048 * 2048  # pooled layer4: D=2048


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path: Path, cache_dir: Path) -> None:
    """Every rank holds the gathered bank: without adaptation DDP scores every image as one process does; with
    training it runs.

    Compared per image rather than per metric: features of differently composed batches differ in the last
    float bits, and the 1×1 maps of this tiny backbone tie all pixels of an image, so one near-tie between two
    images moves pixel AUROC by about 1e-2.
    """
    common = [
        str(Path(sys.executable).parent / "adzoo-train"),
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY_CAP,
        "data.categories=[fabric,pill]",
        "trainer.enable_progress_bar=false",
    ]
    env = {"ADZOO_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    results = {}
    for name, extra in {
        "single": ["model.adaptation=false"],
        "ddp": ["model.adaptation=false", "trainer=ddp_cpu"],
        "ddp_train": ["trainer=ddp_cpu"],
    }.items():
        proc = subprocess.run(
            [*common, *extra, f"hydra.run.dir={tmp_path / name}"], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert results["ddp"]["device"]["world_size"] == 2
    banks = {}
    for name in ("single", "ddp"):
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        banks[name] = state["state_dict"]["model.bank"]
    assert banks["ddp"].shape == banks["single"].shape == (10, 64)
    # DDP gathers rank by rank: the same rows in another order. Each row is matched to its nearest single-process
    # row (not by sorting on one column, where a near-tie between two rows could pair them the other way); the
    # matching must be one to one, and matched rows equal to the stated tolerance.
    distances = torch.cdist(banks["ddp"].double(), banks["single"].double())
    nearest = distances.min(dim=1)
    assert sorted(nearest.indices.tolist()) == list(range(10))
    torch.testing.assert_close(banks["ddp"], banks["single"][nearest.indices], atol=1e-5, rtol=1e-5)
    scores = {}
    for name in ("single", "ddp"):
        rows = csv.DictReader(io.StringIO((tmp_path / name / "predictions.csv").read_text()))
        scores[name] = {row["path"]: float(row["pred_score"]) for row in rows}
    assert scores["ddp"].keys() == scores["single"].keys()
    for path, value in scores["single"].items():
        assert scores["ddp"][path] == pytest.approx(value, abs=1e-5), path
    assert results["ddp_train"]["status"] == "complete"
