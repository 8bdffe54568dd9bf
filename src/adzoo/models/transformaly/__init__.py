"""Transformaly (Cohen & Avidan, CVPRW 2022): pre-trained + teacher-student feature spaces, Gaussian scoring."""

from adzoo.models.transformaly.lightning_model import Transformaly
from adzoo.models.transformaly.torch_model import TransformalyModel

__all__ = ["Transformaly", "TransformalyModel"]
