"""adzoo: a Lightning + Hydra model zoo for image anomaly detection."""

__version__ = "0.1.0"
