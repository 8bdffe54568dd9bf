"""What a hyper-parameter search maximises: a metric of the validation split, never of the test split.

Papers often pick settings on the test images; here a trial (``search.objective`` set) fits, scores the validation
split (held-out normal training images plus synthetic anomalies with exact masks, ``data.val_anomalies``) and
returns the category mean of one metric on it. The synthetic anomalies are the stated proxy for real defects,
which a search never sees: its test split is not even built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adzoo.errors import ConfigError  # no torch at import: adzoo.config_checks checks the objective before it loads

#: objective name -> the validation metric it is (the names of the test metrics, which a search never returns)
OBJECTIVES: dict[str, str] = {
    "val_image_auroc": "image_auroc",
    "val_image_ap": "image_ap",
    "val_image_f1max": "image_f1max",
    "val_pixel_auroc": "pixel_auroc",
    "val_pixel_ap": "pixel_ap",
    "val_pixel_aupro": "pixel_aupro",
}
PIXEL_OBJECTIVES = frozenset(k for k, v in OBJECTIVES.items() if v.startswith("pixel_"))
SEARCH_TRIAL = "search_trial"  # results.json ``task`` of a trial: validation numbers, no test metrics
SEARCH_FILE = "search.json"  # a search's summary in its sweep folder: the leaderboard draws its plots from it


def check_objective(name: Any, val_fraction: float, val_anomalies: str, key: str = "search.objective") -> str:
    """The objective's name, or a one-line :class:`ConfigError` that says what was wrong and what to write."""
    text = str(name)
    if text not in OBJECTIVES:
        bare = text.removeprefix("test_").removeprefix("test/")
        if bare in OBJECTIVES.values() or text.startswith("test"):
            raise ConfigError(
                f"{key}={text} names a test metric; a search is scored on the validation split only "
                f"(use val_{bare} or another of {', '.join(OBJECTIVES)})"
            )
        raise ConfigError(f"{key}={text}: expected one of {', '.join(OBJECTIVES)}")
    if val_fraction <= 0:
        raise ConfigError(f"{key}={text} is measured on the validation split: set data.val_fraction > 0")
    if val_anomalies == "none":
        raise ConfigError(
            f"{key}={text} needs anomalous validation images: set data.val_anomalies=confetti or cutpaste "
            "(synthetic anomalies with exact masks, the proxy for real defects)"
        )
    return text


def validation_metrics(batches: Sequence[dict[str, Any]], pixel: bool) -> dict[str, dict[str, float]]:
    """Per category, the image metrics (and with ``pixel`` the pixel metrics) of eval-step outputs on the
    validation split; categories come from the batches, so unified runs are scored per category as tests are."""
    import torch

    from adzoo.metrics import image_metrics, pixel_metrics

    scores = torch.cat([torch.as_tensor(b["pred_score"]).float().cpu().reshape(-1) for b in batches])
    labels = torch.cat([torch.as_tensor(b["label"]).cpu().reshape(-1) for b in batches])
    categories = [str(c) for b in batches for c in b["category"]]
    maps = torch.cat([b["anomaly_map"].float().cpu()[:, 0] for b in batches]) if pixel else None
    masks = torch.cat([b["mask"].cpu()[:, 0] > 0.5 for b in batches]) if pixel else None
    out: dict[str, dict[str, float]] = {}
    for category in sorted(set(categories)):
        keep = torch.tensor([c == category for c in categories])
        metrics = image_metrics(scores[keep], labels[keep])
        if maps is not None and masks is not None:
            metrics.update(pixel_metrics(maps[keep], masks[keep]))
        out[category] = metrics
    return out
