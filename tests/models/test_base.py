"""The base LightningModule: a non-finite loss stops the run and names method, epoch and step."""

from __future__ import annotations

import pytest
import torch

from adzoo.models import AnomalyModule, NonFiniteLossError


def test_non_finite_loss_names_method_epoch_and_step() -> None:
    module = AnomalyModule(name="toy")
    assert module.check_loss(torch.tensor(1.0)) == 1.0
    with pytest.raises(NonFiniteLossError, match=r"toy: non-finite loss nan at epoch 0, step 0"):
        module.check_loss(torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="inf"):
        module.check_loss(torch.tensor(float("inf")))


class _Toy(AnomalyModule):
    """A frozen "backbone" and a trained head, as every gradient-trained method has."""

    def __init__(self, **kwargs) -> None:
        super().__init__(name="toy", **kwargs)
        self.model = torch.nn.Module()
        self.model.backbone = torch.nn.Linear(4, 4).requires_grad_(False)
        self.model.head = torch.nn.Linear(4, 1)


def test_compile_switch_compiles_only_the_trained_parts_in_place(caplog) -> None:
    module = _Toy(compile=True)
    keys = set(module.state_dict())
    with caplog.at_level("INFO", logger="adzoo.models.base"):
        module.configure_model()
        module.configure_model()  # the hook may run again (fit, then test): compiled once
    assert module.model.head._compiled_call_impl is not None
    assert module.model.backbone._compiled_call_impl is None  # frozen: its features are cached instead
    assert set(module.state_dict()) == keys  # checkpoints keep their keys
    assert [r.getMessage() for r in caplog.records] == ["model.compile=true: compiled head"]
    assert _Toy().compile_model is False


def test_compile_without_a_cpu_compiler_says_so_and_runs_eagerly(monkeypatch, caplog) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    module = _Toy(compile=True)
    with caplog.at_level("WARNING", logger="adzoo.models.base"):
        assert module.compile_trained_parts() == []
    assert "no C++ compiler" in caplog.text and module.model.head._compiled_call_impl is None
    assert module.model.head(torch.ones(1, 4)).shape == (1, 1)


@pytest.mark.slow
def test_a_compiled_uniad_run_matches_the_eager_one(compose_cfg, tmp_path) -> None:
    """model.compile=true through the real Trainer (inductor builds C++ kernels: about a minute here)."""
    from adzoo.engine import run
    from tests.conftest import TINY_DATA, TINY_METHOD

    overrides = ["method=uniad", *TINY_DATA, *TINY_METHOD["uniad"], "data.categories=[pill]", "trainer.max_epochs=1"]
    eager = run(compose_cfg(*overrides, run_dir=tmp_path / "eager"))
    compiled = run(compose_cfg(*overrides, "model.compile=true", run_dir=tmp_path / "compiled"))
    for key, value in eager["metrics"]["mean"].items():
        assert compiled["metrics"]["mean"][key] == pytest.approx(value, abs=0.02), key  # fused kernels round apart
