"""UniAD: unified multi-class anomaly detection by neighbour-masked feature reconstruction."""

from adzoo.models.uniad.lightning_model import UniAD

__all__ = ["UniAD"]
