"""Data: one datamodule over MVTec-layout folders, the generated default set and one-class sets."""

from adzoo.data.datamodule import AnomalyDataModule, DataSource
from adzoo.data.mvtec import DataError, MVTecLayoutSource, generated_source
from adzoo.data.types import AnomalySample

__all__ = ["AnomalyDataModule", "AnomalySample", "DataError", "DataSource", "MVTecLayoutSource", "generated_source"]
