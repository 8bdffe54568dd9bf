"""Step-counted learning-rate schedules: warm-up, plateau, decay, and the trainer filling in the run length."""

from __future__ import annotations

import functools

import pytest
import torch

from adzoo.utils.schedules import WarmupStepDecay


def _lrs(scheduler: WarmupStepDecay, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_constant_then_decay() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupStepDecay(optimizer, warmup_steps=4, total_steps=10, decay_at=0.8, gamma=0.1, start_factor=0.2)
    assert _lrs(scheduler, optimizer, 10) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 0.1, 0.1])


def test_bad_arguments_name_the_config_key() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupStepDecay(optimizer, total_steps=None)
    with pytest.raises(ValueError, match="decay_at"):
        WarmupStepDecay(optimizer, total_steps=10, decay_at=1.5)


def test_module_passes_the_trainers_step_count_and_steps_per_batch() -> None:
    from adzoo.models.base import AnomalyModule

    class _Tiny(AnomalyModule):
        def __init__(self) -> None:
            super().__init__(
                optimizer=functools.partial(torch.optim.SGD, lr=1.0),
                scheduler=functools.partial(WarmupStepDecay, warmup_steps=2),
            )
            self.weight = torch.nn.Parameter(torch.zeros(1))

    module = _Tiny()

    class _Trainer:
        estimated_stepping_batches = 20

    module.trainer = _Trainer()  # type: ignore[assignment]
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert scheduler.decay_step == 16
