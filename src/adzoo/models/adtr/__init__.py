"""ADTR: anomaly detection transformer with feature reconstruction and a query embedding (+ ADTR+)."""

from adzoo.models.adtr.lightning_model import ADTR

__all__ = ["ADTR"]
