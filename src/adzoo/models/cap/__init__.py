"""CAP: constrained adaptive projection with pretrained features (Gui et al., IJCAI 2022)."""

from adzoo.models.cap.lightning_model import CAP
from adzoo.models.cap.torch_model import CAPHead, CAPModel, ReformedSelfAttention, cap_loss

__all__ = ["CAP", "CAPHead", "CAPModel", "ReformedSelfAttention", "cap_loss"]
