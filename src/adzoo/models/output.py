"""What every method's torch model returns from one eval-mode forward."""

from __future__ import annotations

from typing import NamedTuple

import torch


class AnomalyOutput(NamedTuple):
    """``pred_score`` (B,): higher is more anomalous. ``anomaly_map`` (B, 1, H, W) at input resolution."""

    pred_score: torch.Tensor
    anomaly_map: torch.Tensor
