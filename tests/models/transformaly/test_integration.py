"""Transformaly through Hydra composition and the real Trainer (``engine.run``), on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adzoo.data.oneclass import DEBIAN_FASHION_MNIST_ROOT
from adzoo.engine import run
from tests.conftest import TINY_DATA

pytestmark = pytest.mark.integration

FAST = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.batch_size=4"]


def test_unified_generated_set_with_a_vit_teacher_and_eval_reproduces(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("method=transformaly", "backbone=test_vit", *TINY_DATA, *FAST, "data.categories=[fabric,pill]")
    trained = run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["method"] == "transformaly" and written["backbone"]["name"] == "test_vit"
    for metrics in written["metrics"]["per_category"].values():
        assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state["model.block_scale"].numel() == 4  # densities were fitted before the checkpoint was written
    assert state["model.pretrained_density.means"].numel() > 0
    evaluated = run(
        compose_cfg(
            "method=transformaly",
            "backbone=test_vit",
            *TINY_DATA,
            *FAST,
            "data.categories=[fabric,pill]",
            f"ckpt_path={ckpt}",
            config_name="eval",
            run_dir=tmp_path / "eval",
        ),
        evaluate_only=True,
    )
    # bitwise: the same weights (float32 checkpoint, restored exactly), the same test batches, one process
    assert evaluated["metrics"]["per_category"] == trained["metrics"]["per_category"]


def test_digits_unimodal_with_the_cnn_stage_teacher(compose_cfg) -> None:
    cfg = compose_cfg(
        "experiment=transformaly_cnn",
        "data=digits",
        "backbone=test_efficientnet",
        "data.image_size=32",
        "data.setting=separate",
        "data.categories=[digit_0]",
        "data.source.max_train_per_task=16",
        "data.source.max_test_per_task=30",
        *FAST,
    )
    payload = run(cfg)
    assert set(payload["metrics"]["per_category"]) == {"digit_0"}
    assert payload["profile"] == "cpu" and payload["config"]["model"]["train_all_students"] is False
    assert all(0.0 <= m["image_auroc"] <= 1.0 for m in payload["metrics"]["per_category"].values())


def test_paper_profile_composes_and_runs_a_few_steps_offline(compose_cfg) -> None:
    cfg = compose_cfg("experiment=transformaly_paper")
    assert cfg.backbone.name == "vit_base_patch16_384.orig_in21k_ft_in1k" and cfg.backbone.weights == "hub"
    assert cfg.data.image_size == 384 and cfg.trainer.max_epochs == 30 and cfg.model.optimizer.lr == 1e-4
    assert cfg.data.batch_size == 32 and cfg.profile == "paper"
    cfg = compose_cfg(
        "experiment=transformaly_paper",
        "backbone.weights=none",
        *TINY_DATA,
        "data.categories=[fabric]",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "data.batch_size=2",
        "trainer.enable_progress_bar=false",
        "model.train_all_students=false",  # one ViT-B student keeps this CPU test short; the teacher is the paper's
        "model.scored_blocks=1",
    )
    payload = run(cfg)
    assert payload["parameters"]["trainable"] == 7_087_872  # one ViT-B/16 block (d=768, MLP 3072) as the student
    assert payload["backbone"]["name"] == "vit_base_patch16_384.orig_in21k_ft_in1k"


@pytest.mark.skipif(
    not Path(DEBIAN_FASHION_MNIST_ROOT, "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (make data)",
)
def test_fashion_mnist_experiment_runs_on_the_debian_files(compose_cfg) -> None:
    cfg = compose_cfg(
        "experiment=transformaly_fmnist",
        "backbone=test_vit",
        "data.image_size=32",
        "data.categories=[trouser]",
        "data.source.max_train_per_task=12",
        "data.source.max_test_per_task=40",
        *FAST,
    )
    payload = run(cfg)
    assert payload["data"]["name"] == "fashion_mnist" and payload["data"]["test_images"] == 40
    assert 0.0 <= payload["metrics"]["per_category"]["trouser"]["image_auroc"] <= 1.0
