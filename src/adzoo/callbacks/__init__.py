"""Lightning callbacks shared by every method."""

from adzoo.callbacks.anomaly_metrics import AnomalyMetrics

__all__ = ["AnomalyMetrics"]
