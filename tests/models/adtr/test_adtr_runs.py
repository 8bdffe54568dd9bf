"""ADTR through the real app: Hydra composition, the Lightning Trainer, ADTR+ switches, fine-tuning, paper profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from adzoo.engine import is_complete, run

pytestmark = pytest.mark.integration

# The tiny generated set at 64² (a 4x4 token grid), small hidden sizes, two categories.
TINY_ADTR = [
    "method=adtr",
    "backbone=test_efficientnet",
    "data.image_size=64",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.source.image_size=64",
    "data.source.n_train=6",
    "data.source.n_test_good=2",
    "data.source.n_test_per_defect=1",
    "data.categories=[fabric,pill]",
    "model.hidden_dim=32",
    "model.ffn_dim=64",
    "model.num_heads=4",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]


def test_adtr_plus_pixel_trains_tests_and_reloads_through_the_app(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*TINY_ADTR, "method.anomaly_supervision=pixel", "method.supervised_start=0.5")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["anomaly_supervision"] == "pixel" and resolved["model"]["alpha"] == 0.003
    assert resolved["backbone"]["out_indices"] == [0, 1, 2, 3, 4]
    assert resolved["model"]["scheduler"]["warmup_steps"] == 100
    trained = run(cfg)
    results = tmp_path / "run" / "results.json"
    assert is_complete(results)
    written = json.loads(results.read_text())
    assert written["method"] == "adtr" and set(written["metrics"]["per_category"]) == {"fabric", "pill"}
    for metrics in written["metrics"]["per_category"].values():
        for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
            assert 0.0 <= metrics[key] <= 1.0
        # the pooled-max score: the model and the metric callback apply one avgpool_max_score to the same map tensor
        assert metrics["image_auroc"] == pytest.approx(metrics["image_auroc_avgpool"])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain hparams: safe loading works
    assert state["hyper_parameters"]["anomaly_supervision"] == "pixel"
    assert "model.reconstruction.queries.0" in state["state_dict"]
    assert not any(k.startswith("model.reconstruction.queries.1") for k in state["state_dict"])
    evaluated = run(
        compose_cfg(*TINY_ADTR, f"ckpt_path={ckpt}", config_name="eval", run_dir=tmp_path / "eval"),
        evaluate_only=True,
    )
    # bitwise: the same weights (float32 checkpoint, restored exactly), the same test batches, one process
    assert evaluated["metrics"]["per_category"] == trained["metrics"]["per_category"]

    # ADTR+ with image labels, fine-tuned from the run above (its folder), one epoch
    tuned = run(
        compose_cfg(
            *TINY_ADTR,
            "method.anomaly_supervision=image",
            f"method.finetune_from={tmp_path / 'run'}",
            "trainer.max_epochs=1",
            run_dir=tmp_path / "tuned",
        )
    )
    assert tuned["config"]["model"]["finetune_from"] == str(tmp_path / "run")
    assert 0.0 <= tuned["metrics"]["mean"]["image_auroc"] <= 1.0


def test_paper_profile_composes_and_runs_a_few_steps(compose_cfg) -> None:
    cfg = compose_cfg("experiment=adtr_paper_mvtec")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["profile"] == "paper" and resolved["data"]["name"] == "mvtec"
    assert resolved["backbone"]["name"].startswith("tf_efficientnet_b4") and resolved["backbone"]["weights"] == "hub"
    assert resolved["backbone"]["out_indices"] == [0, 1, 2, 3, 4]
    assert resolved["data"]["image_size"] == 256 and resolved["data"]["batch_size"] == 16
    assert resolved["data"]["setting"] == "separate"
    assert resolved["trainer"]["max_epochs"] == 500 and resolved["model"]["scheduler"]["step_size"] == 400
    assert resolved["model"]["optimizer"]["lr"] == 1e-4 and resolved["model"]["optimizer"]["weight_decay"] == 1e-4
    assert resolved["model"]["hidden_dim"] == 256 and resolved["model"]["anomaly_supervision"] == "none"

    # B4 with random weights on a one-category tiny generated set at 64² (4x4 tokens), two steps
    cfg = compose_cfg(
        "experiment=adtr_paper_mvtec",
        "backbone.weights=none",
        "data=synthetic",
        "data.image_size=64",
        "data.batch_size=8",
        "data.source.image_size=32",
        "data.source.n_train=6",
        "data.source.n_test_good=2",
        "data.source.n_test_per_defect=1",
        "data.categories=[pill]",
        "+trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
    )
    payload = run(cfg)
    assert payload["profile"] == "paper" and payload["backbone"]["name"].startswith("tf_efficientnet_b4")
    assert payload["parameters"]["trainable"] > 0
    assert 0.0 <= payload["metrics"]["mean"]["pixel_auroc"] <= 1.0
