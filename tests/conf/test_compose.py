"""Every option of every config group composes, resolves, and command-line overrides win."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from adzoo._config import config_dir

CONF = Path(config_dir())
ROOTS = ["data.root=/nonexistent/root"]
GROUPS = ["data", "backbone", "trainer", "callbacks", "logger", "method", "experiment", "sweep", "paths"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_resolves(compose_cfg, group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "data" and option in ("mvtec", "folder", "visa", "cifar10", "cifar100"):
        overrides += ROOTS
    cfg = compose_cfg(*overrides)
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra")
    assert container["model"]["_target_"].startswith("adzoo.models.")
    assert container["trainer"]["_target_"] == "pytorch_lightning.Trainer"


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_slurm", "submitit_local"])
def test_launchers_compose(compose_cfg, launcher: str) -> None:
    cfg = compose_cfg(f"hydra/launcher={launcher}")
    assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()


def test_eval_config_requires_a_checkpoint(compose_cfg) -> None:
    from adzoo.engine import run

    cfg = compose_cfg(config_name="eval")
    assert cfg.task_name == "eval" and cfg.ckpt_path is None
    with pytest.raises(ValueError, match="ckpt_path"):
        run(cfg, evaluate_only=True)


def test_command_line_beats_method_defaults(compose_cfg) -> None:
    cfg = compose_cfg("method=patchknn")
    assert cfg.backbone.out_indices == [2, 3]  # the method picks its taps
    cfg = compose_cfg("method=patchknn", "backbone.out_indices=[1,2]", "trainer.max_epochs=3")
    assert cfg.backbone.out_indices == [1, 2]
    assert cfg.trainer.max_epochs == 3


def test_run_folder_is_named_by_the_resolved_identity(compose_cfg) -> None:
    """The folder comes from the resolved config: readable, digest-suffixed, and valid in Hydra's grammar."""
    from adzoo.run_identity import folder_name

    a = compose_cfg("method=patchknn", "data.setting=separate")
    assert a.hydra.run.dir.endswith("/runs/" + folder_name(a))
    assert re.fullmatch(r"patchknn-synthetic-separate-s0-[0-9a-f]{10}", folder_name(a))
    b = compose_cfg("data.setting=separate")  # the default method, named or not, is the same run
    assert folder_name(b) == folder_name(a)


def test_model_and_backbone_instantiate(compose_cfg) -> None:
    from hydra.utils import instantiate

    cfg = compose_cfg("backbone=test_efficientnet")
    model = instantiate(cfg.model)
    assert model.model.backbone.channels and len(model.model.backbone.channels) == 2


def test_vit_backbone_serves_patchknn(compose_cfg) -> None:
    import torch
    from hydra.utils import instantiate

    cfg = compose_cfg("backbone=test_vit", "backbone.out_indices=[0,1]")
    model = instantiate(cfg.model)
    model.model.fit(torch.randn(50, sum(model.model.backbone.channels)))
    out = model(torch.rand(2, 3, 32, 32))
    assert out.anomaly_map.shape == (2, 1, 32, 32) and out.pred_score.shape == (2,)


def test_epoch_fraction_resolver() -> None:
    from adzoo._config import epoch_fraction

    assert epoch_fraction(1000, 0.8) == 800
    assert epoch_fraction(3, 0.8) == 2
    assert epoch_fraction(1, 0.8) == 1


def test_cpu_stride_resolver_keeps_an_8x8_grid_at_128_and_256() -> None:
    from adzoo._config import cpu_feature_stride

    assert [cpu_feature_stride(s) for s in (32, 128, 224, 255, 256, 384, 512)] == [16, 16, 16, 16, 32, 48, 64]


@pytest.mark.parametrize("method", ["uniad", "adtr"])
def test_reconstruction_cpu_profiles_use_an_8x8_area_grid_and_paper_profiles_stride_16(compose_cfg, method) -> None:
    """Issue 13: the CPU profile reads 256² MVTec-like images on an 8x8 grid; the paper profiles keep their neck."""
    for data, stride in (("synthetic", 16), ("mvtec_like", 32)):
        cfg = OmegaConf.to_container(compose_cfg(f"method={method}", f"data={data}"), resolve=True)
        assert cfg["model"]["feature_stride"] == stride and cfg["model"]["align_mode"] == "area"
        assert cfg["data"]["image_size"] // stride == 8
    papers = {"uniad": ["uniad_paper_mvtec", "uniad_paper_cifar10"], "adtr": ["adtr_paper_mvtec"]}[method]
    for experiment in papers:
        cfg = OmegaConf.to_container(compose_cfg(f"experiment={experiment}", *ROOTS), resolve=True)
        assert cfg["model"]["feature_stride"] == 16 and cfg["model"]["align_mode"] == "bilinear"
