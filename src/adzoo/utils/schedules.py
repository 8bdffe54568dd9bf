"""Learning-rate schedules that count optimiser steps, for the CPU profiles' short runs.

Why: the post-norm transformers of UniAD and ADTR diverge at a learning rate high enough to learn in a few
thousand steps unless the rate ramps up first (issue 13; the papers' 1e-4 needs ~50k steps). A schedule built
here is stepped per optimiser step; :class:`~adzoo.models.base.AnomalyModule` reads :attr:`interval`.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupStepDecay(LambdaLR):
    """Linear warm-up from ``start_factor`` over ``warmup_steps``, then constant, then ×``gamma`` from ``decay_at``.

    ``decay_at`` is a fraction of ``total_steps`` (the papers' StepLR at 80 % of the epochs, in steps);
    ``total_steps`` is filled in from the trainer when left ``None``.
    """

    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 200,
        total_steps: int | None = None,
        decay_at: float = 0.8,
        gamma: float = 0.1,
        start_factor: float = 0.01,
    ) -> None:
        if total_steps is None or total_steps < 1:
            raise ValueError(f"model.scheduler.total_steps must be a positive step count, got {total_steps}")
        if warmup_steps < 0 or not 0.0 < decay_at <= 1.0 or not 0.0 < start_factor <= 1.0:
            raise ValueError(
                "model.scheduler needs warmup_steps >= 0, 0 < decay_at <= 1 and 0 < start_factor <= 1, got "
                f"warmup_steps={warmup_steps}, decay_at={decay_at}, start_factor={start_factor}"
            )
        self.warmup_steps = int(warmup_steps)
        self.decay_step = round(decay_at * total_steps)
        self.gamma = float(gamma)
        self.start_factor = float(start_factor)
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return self.gamma if step >= self.decay_step else 1.0
