"""A run folder from someone else runs none of its code: every ``_target_`` in its results.json is allow-listed.

The hostile configs go through the real apps (``adzoo-predict`` and ``adzoo-export`` on a trained tiny run whose
results.json was tampered with); each would create a marker file if it ran, and none may. Every config shipped
in conf/ must pass the same check, or the apps (and adzoo-eval) would refuse our own runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from adzoo._config import config_dir
from adzoo.cli.export import main as export_main
from adzoo.cli.predict import main as predict_main
from adzoo.engine import run
from adzoo.errors import USAGE_EXIT, ConfigError
from adzoo.models import METHODS
from adzoo.predict import load_model
from adzoo.safe_load import UntrustedConfigError, check_trusted, instantiate_trusted
from tests.conftest import TINY_DATA

TINY_RUN = [
    "backbone=test_efficientnet",
    *TINY_DATA,
    "data.categories=[pill]",
    "trainer.enable_progress_bar=false",
    "print_table=false",
]


class _OpensAFile:
    """A pickle that creates ``path`` when unpickled: what ``torch.load(weights_only=False)`` would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _hostile_cases(marker: Path, evil_pickle: Path) -> dict[str, tuple[list[str], Any, str]]:
    """name -> (key path to replace in results.json["config"], new value, the target the error must name)."""
    return {
        "os.system as the model": (
            ["model"], {"_target_": "os.system", "_args_": [f"touch {marker}"]}, "os.system"
        ),
        "eval as the backbone": (
            ["model", "backbone"], {"_target_": "builtins.eval", "_args_": [f"open({str(marker)!r}, 'w')"]},
            "builtins.eval",
        ),
        "Path.write_text inside _args_": (
            ["model", "_args_"],
            [{"_target_": "pathlib.Path.write_text", "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]},
                                                                "x"]}],
            "pathlib.Path.write_text",
        ),
        "torch.load of a pickle in the data section": (
            ["data", "source"], {"_target_": "torch.load", "f": str(evil_pickle), "weights_only": False}, "torch.load"
        ),
        "os.system behind an adzoo prefix (models)": (
            ["model", "_target_"], "adzoo.models.base.os.system", "adzoo.models.base.os.system"
        ),
        "os.system behind an adzoo prefix (data, which imports os)": (
            ["model", "_target_"], "adzoo.data.mvtec.os.system", "adzoo.data.mvtec.os.system"
        ),
        "a target that is not a string": (["model", "_target_"], {"_target_": "os.system"}, "_target_={'_target_'"),
    }  # fmt: skip


def _set(config: dict[str, Any], keys: list[str], value: Any) -> None:
    node = config
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


def _last_error(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith(f"{prog}: error: "), lines[-1]
    return lines[-1]


def test_hostile_results_json_is_refused_by_predict_and_export(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(compose_cfg(*TINY_RUN))
    run_dir = tmp_path / "run"
    results_file = run_dir / "results.json"
    pristine = json.loads(results_file.read_text())
    load_model(run_dir)  # the untouched run loads: the refusals below are the tampering's doing
    images = tmp_path / "images"
    images.mkdir()
    sample = (run_dir / "predictions.csv").read_text().splitlines()[1].split(",")[1]  # a test image of the run
    (images / "a.png").write_bytes(Path(sample).read_bytes())

    marker, evil_pickle = tmp_path / "marker", tmp_path / "evil.pt"
    with evil_pickle.open("wb") as handle:
        pickle.dump(_OpensAFile(marker), handle)
    for name, (keys, value, target) in _hostile_cases(marker, evil_pickle).items():
        config = json.loads(json.dumps(pristine["config"]))
        _set(config, keys, value)
        results_file.write_text(json.dumps({**pristine, "config": config}))
        out = tmp_path / "out"
        with pytest.raises(SystemExit) as exit_info:
            predict_main([f"ckpt={run_dir}", f"input={images}", f"output={out}"])
        assert exit_info.value.code == USAGE_EXIT, name
        line = _last_error(capsys, "adzoo-predict")
        assert target in line and str(results_file) in line and "refused" in line, (name, line)
        with pytest.raises(SystemExit) as exit_info:
            export_main([f"ckpt={run_dir}", f"output={tmp_path / 'export'}"])
        assert exit_info.value.code == USAGE_EXIT, name
        line = _last_error(capsys, "adzoo-export")
        assert target in line and str(results_file) in line, (name, line)
        assert not marker.exists(), f"{name}: the hostile config ran"
        assert not (out / "scores.csv").exists() and not (tmp_path / "export" / "model.ts").exists()
    # The pickle really is hostile: what weights_only=True (and the allow-list) keep from running.
    with pytest.raises(RuntimeError, match="magic number"):  # a bare pickle, not a torch file: unpickled anyway
        torch.load(evil_pickle, weights_only=False)
    assert marker.exists()


def test_refused_targets_are_not_even_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The string is checked before anything is imported: importing a module runs its code."""
    marker = tmp_path / "imported"
    (tmp_path / "adzoo_hostile_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UntrustedConfigError, match=re.escape("adzoo_hostile_plugin.Model")):
        check_trusted({"model": {"_target_": "adzoo_hostile_plugin.Model"}}, "results.json")
    assert not marker.exists() and "adzoo_hostile_plugin" not in sys.modules


ALLOWED = [
    "adzoo.models.patchknn.PatchKNN",
    "adzoo.models.base.AnomalyModule",
    "adzoo.backbones.build_backbone",
    "adzoo.backbones.FeatureExtractor",
    "adzoo.data.AnomalyDataModule",
    "adzoo.data.generated_source",
    "adzoo.data.visa.visa_source",
    "adzoo.callbacks.AnomalyMetrics",
    "adzoo.utils.strategies.AnomalyDDPStrategy",
    "torch.optim.SGD",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.ReduceLROnPlateau",
    "pytorch_lightning.Trainer",
    "pytorch_lightning.loggers.TensorBoardLogger",
    "pytorch_lightning.callbacks.ModelCheckpoint",
]
REFUSED = {
    "subprocess.run": "not on the allow-list",
    "torch.hub.load": "not on the allow-list",
    "adzoo.models.base.torch.load": "the module torch, outside adzoo.models",
    "adzoo.data.oneclass.pickle.loads": "the module pickle, outside adzoo.data",
    "adzoo.data.mvtec.Path": "pathlib.Path, defined outside adzoo.data",
    "adzoo.data.mvtec.read_image": "not one of the allowed factories",
    "adzoo.models.base.AnomalyModule.load_from_checkpoint": "not one of the allowed factories",
    "adzoo.models.METHODS": "a dict",
    "adzoo.callbacks.anomaly_metrics.torch": "the module torch",
    "torch.optim.swa_utils.AveragedModel": "not a subclass of Optimizer",
    "pytorch_lightning.Trainer.fit": "not on the allow-list",
    "pytorch_lightning.callbacks.LambdaCallback": "not on the allow-list",
    "adzoo.models.__builtins__": "not a plain dotted name",
    "adzoo.models.base.os.system()": "not a plain dotted name",
    "adzoo.models.nosuch.Model": "adzoo.models.nosuch does not exist",
}


@pytest.mark.parametrize("target", ALLOWED)
def test_allowed_targets_pass(target: str) -> None:
    check_trusted({"a": [{"b": {"_target_": target}}]}, "results.json")


@pytest.mark.parametrize("target", list(REFUSED))
def test_refused_targets_name_target_key_and_file(target: str) -> None:
    config = OmegaConf.create({"model": {"head": [{"_target_": "torch.optim.Adam"}, {"_target_": target}]}})
    with pytest.raises(UntrustedConfigError) as info:
        check_trusted(config, "/runs/x/results.json", prefix="config")
    message = str(info.value)
    assert isinstance(info.value, ConfigError)  # reported by the apps in one line, exit 2
    assert message.startswith("/runs/x/results.json: config.model.head[1]._target_=")
    assert repr(target) in message and REFUSED[target] in message
    assert "\n" not in message


def test_interpolations_that_would_resolve_after_the_check_are_refused() -> None:
    """Hydra re-wraps the config before instantiating: ``${oc.create:...}`` would become a new target then."""
    hidden = "${oc.create:'{_target_: os.system, _args_: [touch x]}'}"
    with pytest.raises(UntrustedConfigError, match="interpolation"):
        check_trusted({"model": {"_target_": "adzoo.models.patchknn.PatchKNN", "backbone": hidden}}, "results.json")
    with pytest.raises(UntrustedConfigError, match="interpolation"):  # escaped: resolves to the text once
        check_trusted(OmegaConf.create({"model": {"x": "\\${oc.env:HOME}"}}), "results.json")
    check_trusted(OmegaConf.create({"a": 1, "b": "${a}"}), "results.json")  # resolved during the check: fine


def test_instantiate_trusted_builds_what_it_checked() -> None:
    optimiser = instantiate_trusted({"_target_": "torch.optim.SGD", "lr": 0.5}, "here", params=[torch.zeros(1)])
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.defaults["lr"] == 0.5
    with pytest.raises(UntrustedConfigError, match=re.escape("here: _target_='os.getcwd'")):
        instantiate_trusted({"_target_": "os.getcwd"}, "here")


def _groups() -> list[str]:
    """Every option of every config group in conf/ (``data=cifar10``, ``trainer=ddp``, ``experiment=...``)."""
    root = Path(config_dir())
    skip = {"hydra", "paths", "sweep"}  # hydra/paths have one option (always composed); sweeps are launch settings
    return sorted(
        f"{group.name}={option.stem}"
        for group in root.iterdir()
        if group.is_dir() and group.name not in skip
        for option in group.glob("*.yaml")
    )


def _stored(cfg: DictConfig) -> dict[str, Any]:
    """The config as results.json stores it (engine._resolved_config): resolved, without the hydra node."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def test_every_shipped_config_passes(compose_cfg) -> None:
    choices = [f"method={m}" for m in sorted(METHODS)] + _groups()
    assert len(choices) > 30  # the glob found conf/
    required = {"data=folder": ["data.root=/data/mine"]}  # its mandatory value (???) names the folder
    for choice in choices:
        cfg = compose_cfg(choice, *required.get(choice, []))
        check_trusted(_stored(cfg), choice, prefix="config")
        check_trusted(cfg.hydra.callbacks, choice)  # JobSummary, SweepLeaderboard
        with open_dict(cfg):
            del cfg["hydra"]
        check_trusted(cfg, choice)  # the DictConfig form too
    eval_cfg = compose_cfg("ckpt_path=somewhere", config_name="eval")
    check_trusted(_stored(eval_cfg), "eval.yaml")


def test_shipped_targets_are_all_covered() -> None:
    """Every ``_target_`` written in conf/ passes, so a new config file cannot be refused unnoticed."""
    targets = set()
    for path in Path(config_dir()).rglob("*.yaml"):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "_target_":
                targets.add(value.split("#")[0].strip())
    assert "adzoo.backbones.build_backbone" in targets and "pytorch_lightning.Trainer" in targets
    for target in sorted(targets):
        check_trusted({"_target_": target}, os.fspath(config_dir()))


#: how the README's safety paragraph names each exactly-allowed class
README_NAMES = {
    "pytorch_lightning.Trainer": "`Trainer`",
    "pytorch_lightning.loggers.CSVLogger": "CSV/",
    "pytorch_lightning.loggers.TensorBoardLogger": "TensorBoard/",
    "pytorch_lightning.loggers.WandbLogger": "Wandb/",
    "pytorch_lightning.loggers.MLFlowLogger": "/MLflow loggers",
    "pytorch_lightning.callbacks.ModelCheckpoint": "`ModelCheckpoint`",
    "hydra_plugins.adzoo_optuna_sweeper.optuna_sweeper.OptunaSweeper": "`hydra_plugins.adzoo_optuna_sweeper`",
    "optuna.samplers.TPESampler": "`optuna.samplers.TPESampler`",
}


def test_the_readme_lists_everything_the_allow_list_allows() -> None:
    """The README's safety paragraph is the user's view of the allow-list: a rule added in code must show there."""
    from adzoo import safe_load

    readme = (Path(config_dir()).parent / "README.md").read_text()
    paragraph = readme.split("**Loading a run folder runs none of its code**")[1].split("\n- **")[0]
    paragraph = " ".join(paragraph.split())  # one line: the README wraps names across lines
    missing = [rule.package for rule in safe_load._RULES if f"`{rule.package}`" not in paragraph]
    missing += [name for name in sorted(safe_load._EXACT_CLASSES) if README_NAMES[name] not in paragraph]
    assert missing == []
