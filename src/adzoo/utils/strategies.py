"""DDP that also serves methods which fit once (memory banks, statistics) and so have nothing to optimise.

torch's DistributedDataParallel refuses a module without trainable parameters. Such methods only need the
process group (to gather features and metric states), so the model is left unwrapped for them.
"""

from __future__ import annotations

from pytorch_lightning.strategies import DDPStrategy
from torch import nn


class AnomalyDDPStrategy(DDPStrategy):
    strategy_name = "adzoo_ddp"

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if not any(p.requires_grad for p in model.parameters()):
            return model
        return super()._setup_model(model)
