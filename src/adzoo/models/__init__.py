"""Methods: each is a pure-torch model plus a thin LightningModule (see models/base.py)."""

from adzoo.models.base import AnomalyModule, NonFiniteLossError
from adzoo.models.output import AnomalyOutput

METHODS = {
    "patchknn": "adzoo.models.patchknn.PatchKNN",
    "patchcore": "adzoo.models.patchknn.PatchKNN",  # the same model with PatchCore's defaults (conf/method)
    "cap": "adzoo.models.cap.CAP",
    "uniad": "adzoo.models.uniad.UniAD",
    "adtr": "adzoo.models.adtr.ADTR",
    "transformaly": "adzoo.models.transformaly.Transformaly",
}

__all__ = ["METHODS", "AnomalyModule", "AnomalyOutput", "NonFiniteLossError"]
