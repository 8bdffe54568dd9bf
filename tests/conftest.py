"""Shared fixtures: a tiny generated data set and in-process Hydra composition, all on the CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from adzoo._config import config_dir

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_DATA = [
    "data.image_size=32",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.source.image_size=32",
    "data.source.n_train=6",
    "data.source.n_test_good=2",
    "data.source.n_test_per_defect=1",
]

# Per method, what on top of TINY_DATA makes a run take seconds (64² input: a 4×4 token grid at stride 16).
TINY_METHOD: dict[str, list[str]] = {
    "patchknn": ["backbone=test_efficientnet"],
    "patchcore": ["backbone=test_efficientnet"],
    "cap": ["backbone=test_efficientnet"],
    "transformaly": ["backbone=test_vit", "data.batch_size=4"],
    "uniad": [
        "backbone=test_efficientnet", "data.image_size=64", "data.source.image_size=64", "model.hidden_dim=32",
        "model.ffn_dim=64", "model.num_heads=4", "model.num_encoder_layers=1", "model.num_decoder_layers=1",
        "model.neighbour_mask_size=3",
    ],
    "adtr": [
        "backbone=test_efficientnet", "data.image_size=64", "data.source.image_size=64", "model.hidden_dim=32",
        "model.ffn_dim=64", "model.num_heads=4", "model.num_encoder_layers=1", "model.num_decoder_layers=1",
    ],
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (generated data, features, weights) for the whole session, outside the user's home."""
    path = tmp_path_factory.mktemp("adzoo-cache")
    os.environ["ADZOO_CACHE_DIR"] = str(path)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    return path


@pytest.fixture
def compose_cfg(tmp_path: Path, cache_dir: Path) -> Iterator:
    """Compose the real ``train`` config in-process with HydraConfig set, like the app does."""

    def _compose(*overrides: str, config_name: str = "train", run_dir: Path | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir(), version_base="1.3"):
            cfg = compose(
                config_name,
                overrides=[f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={cache_dir}", *overrides],
                return_hydra_config=True,
            )
        out = run_dir or (tmp_path / "run")
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
