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
