"""Leaderboard fixtures: real run folders made by the app, and results.json payloads in the engine's schema.

The leaderboard reads only artifacts, so most cases are written as results.json files directly. They are built by
:func:`results_payload`, which writes every key ``adzoo.engine._run`` writes (a test compares the two), so a
case here is a file the engine could have written, not a shape the leaderboard happens to accept.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from adzoo.leaderboard.collect import METRICS
from adzoo.run_identity import EXECUTION_KEYS, IDENTITY_SECTIONS, digest_of
from tests.conftest import TINY_DATA

CATS = "data.categories=[fabric,pill]"


def make_run(folder: Path, cache_dir: Path, overrides: list[str]) -> Path:
    """One patchknn run on the tiny data, by the real app (Hydra composition and engine), into ``folder``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from adzoo._config import config_dir
    from adzoo.engine import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.cache_dir={cache_dir}", "backbone=test_efficientnet", *TINY_DATA, CATS, *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(folder)
    HydraConfig.instance().set_config(cfg)
    try:
        run(cfg)
    finally:
        GlobalHydra.instance().clear()
    return folder


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Two seeds of patchknn plus a separate-setting run, made by the real app on tiny data."""
    root = tmp_path_factory.mktemp("sweep")
    for name, extra in [("s0", ["seed=0"]), ("s1", ["seed=1"]), ("sep", ["data.setting=separate"])]:
        make_run(root / name, cache_dir, extra)
    return root


def _metrics(score: float) -> dict[str, float]:
    """Every metric column of one category, distinct per metric so a swapped column would show."""
    return {m: round(score - 0.01 * i, 6) for i, m in enumerate(METRICS)}


def _identity_digest(config: dict[str, Any]) -> str:
    """The engine's identity rule applied to a plain config (sections minus execution keys, roots absolute)."""
    out: dict[str, Any] = {}
    for section in IDENTITY_SECTIONS:
        node: Any = config
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node = {k: v for k, v in node.items() if k not in EXECUTION_KEYS.get(section, ())}
        out[section] = node
    return digest_of(out)


def results_payload(
    folder: Path,
    *,
    seed: int = 0,
    task: str = "train",
    scores: dict[str, float] | None = None,
    every: bool = True,
    root: str = "/data/synthetic",
    sha: str | None = "auto",
    kind: str = "content",
    fit_s: float | None = 2.0,
    test_s: float = 1.0,
    identity: bool = True,
    source: Path | None = None,
    source_digest: str | None = None,
    tuned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A results.json payload as ``engine._run`` writes it (task ``eval``: ``source`` and a null fit time).

    ``scores`` maps category → image AUROC (the other metrics follow it); ``sha="auto"`` fingerprints the data
    by root and categories, ``None`` leaves the fingerprint out (files from before it existed); ``identity=False``
    leaves out what older engines did not write (``identity``, ``source``); ``tuned`` marks the test run of a
    search's best config (``search.tuned``).
    """
    scores = scores or {"fabric": 0.9, "pill": 0.7, "screw": 0.8}
    categories = sorted(scores)
    per_category = {c: _metrics(s) for c, s in scores.items()}
    mean = {}
    for key in sorted({k for m in per_category.values() for k in m}):
        values = [m[key] for m in per_category.values() if not math.isnan(m[key])]
        mean[key] = sum(values) / len(values)
    evaluating = task == "eval"
    bank = {"coreset_ratio": 1.0, "max_size": None, "search": "exact", "storage": "float32", "seed": seed}
    config: dict[str, Any] = {
        "task_name": task,
        "seed": seed,
        "torch_threads": 1 if evaluating else None,  # an execution detail: must not split a row
        "profile": "cpu",
        "force": evaluating,
        "sweep_name": "adhoc",
        "ckpt_path": str(source) if evaluating and source else None,
        "allow_external_paths": False,
        "print_table": True,
        "verbose": False,
        "tags": ["dev"],
        "paths": {"log_dir": "logs", "cache_dir": "/cache", "data_dir": "/cache/data", "output_dir": str(folder)},
        "data": {
            "_target_": "adzoo.data.AnomalyDataModule",
            "name": "synthetic",
            "source": {
                "_target_": "adzoo.data.generated_source",
                "root": root,
                "seed": 0,
                "image_size": 32,
                "n_train": 6,
                "n_test_good": 2,
                "n_test_per_defect": 1,
            },
            "image_size": 32,
            "batch_size": 8,
            "eval_batch_size": 16 if evaluating else 8,
            "num_workers": 0,
            "setting": "unified",
            "categories": "all" if every else categories,
            "seed": seed,
            "val_fraction": 0.1,
            "val_anomalies": "none",
        },
        "backbone": {
            "_target_": "adzoo.backbones.build_backbone",
            "name": "test_efficientnet",
            "out_indices": [2, 3],
            "weights": "none",
            "frozen": True,
            "kind": "auto",
        },
        "trainer": {
            "_target_": "pytorch_lightning.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "precision": "32-true",
            "enable_progress_bar": not evaluating,
            "default_root_dir": str(folder),
        },
        "callbacks": {
            "metrics": {
                "_target_": "adzoo.callbacks.AnomalyMetrics",
                "backend": "exact",
                "bins": 4096,
                "fpr_limit": 0.3,
                "pool_kernel": 16,
                "log_images": 4,
            },
            "checkpoint": {"_target_": "pytorch_lightning.callbacks.ModelCheckpoint", "save_last": "link"},
        },
        "logger": {"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(folder)}},
        "method_name": "patchknn",
        "model": {"_target_": "adzoo.models.patchknn.PatchKNN", "neighbourhood": 3, "k": 1, "bank": bank},
        "bank": bank,
        "threshold": {"strategy": "percentile", "q": 99.0, "pixel_q": 99.9, "image": None, "pixel": None},
        "search": {"objective": None, "tuned": tuned},
    }
    digest = _identity_digest(config)
    fingerprint: dict[str, Any] = {"files": 16 * len(categories), "kind": kind}
    fingerprint["sha256"] = digest_of([root, categories]) * 4 if sha == "auto" else sha
    data = {
        "name": "synthetic",
        "root": None,
        "setting": "unified",
        "categories": categories,
        "image_size": 32,
        "train_images": 5 * len(categories),
        "val_images": len(categories),
        "val_anomalies": "none",
        "val_source": {c: "held out from train (1 of 6)" for c in categories},
        "test_images": 6 * len(categories),
        "test_withheld": False,
        "batches_per_epoch": 1,
        "preloaded": ["train", "validation", "test"],
        "loader_workers": {"train": 0, "validation": 0, "test": 0},
    }
    if sha is not None:
        data["fingerprint"] = fingerprint
    payload: dict[str, Any] = {
        "status": "complete",
        "task": task,
        "identity": {
            "digest": digest,
            "folder": f"patchknn-synthetic-unified-s{seed}-{digest[:10]}",
            "rule": "adzoo.run_identity",
        },
        "method": "patchknn",
        "profile": "cpu",
        "setting": "unified",
        "data": data,
        "backbone": {"name": "test_efficientnet", "weights": "none", "out_indices": [2, 3]},
        "seed": seed,
        "metrics": {"per_category": per_category, "mean": mean, "notes": {}, "conventions": {"pixel": "exact"}},
        "thresholds": {"config": {"strategy": "percentile"}, "models": {}},
        "timing": {
            "fit_s": fit_s,
            "fit_s_this_attempt": fit_s,
            "resumed": False,
            "attempts": None if fit_s is None else 1,
            "test_s": test_s,
            "total_s": (fit_s or 0.0) + test_s + 0.5,
            "per_group": [
                {
                    "group": "unified",
                    "fit_s": fit_s,
                    "test_s": test_s,
                    "test_images": 18,
                    "train_images": 18,
                    "throughput_images_per_s": 18 / test_s,
                }
            ],
        },
        "throughput_images_per_s": 18 / test_s,
        "parameters": {"total": 82300, "trainable": 0, "frozen": 82300},
        "cost": {
            "flops_counted": "torch ops + memory-bank searches",
            "flops_per_image": 5_800_000,
            "gflops_per_image": 0.0058,
            "flops_torch": 4_500_000,
            "flops_memory_bank": 1_300_000,
            "peak_rss_gib": 0.9,
            "start_rss_gib": 0.8,
        },
        "device": {"accelerator": "CPUAccelerator", "num_devices": 1, "world_size": 1},
        "versions": {"python": "3.11", "adzoo": "0.1.0"},
        "git": {"commit": "c4fcbe3516dc5a6a77f3ce88f4906ffb3309588f", "dirty": False, "remote": None},
        "overrides": [],
        "run_dir": str(folder.resolve()),
        "config": config,
    }
    if evaluating and source is not None:
        payload["source"] = {
            "run_dir": str(source.resolve()),
            "checkpoint": str(source / "checkpoints/last.ckpt"),
            "identity_digest": source_digest,
        }
    if tuned is not None:
        payload["search"] = {"tuned": tuned}
    if not identity:
        payload.pop("identity")
        payload.pop("source", None)
    return payload


def write_run(folder: Path, payload: dict[str, Any], mtime: float | None = None) -> Path:
    """``folder/results.json`` with ``payload``; ``mtime`` sets which of two results is the newer one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(payload))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return folder
