"""What ``adzoo-train`` and ``adzoo-eval`` do once Hydra has composed the config.

One run = one method on one data set in one setting: unified trains one model for every category,
separate trains one per category. The run folder ends with ``results.json`` (written atomically) and
``predictions.csv``; a folder whose ``results.json`` is complete is skipped unless ``force=true``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import adzoo
from adzoo.backbones.extractor import FeatureExtractor
from adzoo.callbacks.anomaly_metrics import AnomalyMetrics, prediction_fields
from adzoo.config_checks import validate_config
from adzoo.data.datamodule import epoch_seed
from adzoo.errors import ConfigError, OutputFolderError
from adzoo.metrics import category_mean
from adzoo.metrics.resample import ARTIFACT as HISTOGRAMS_FILE
from adzoo.metrics.resample import save_histograms
from adzoo.run_identity import (
    IDENTITY_FILE,
    CheckpointNotFoundError,
    RunFolderConflictError,
    folder_name,
    identity,
    identity_digest,
    locate_run,
)
from adzoo.search.objective import PIXEL_OBJECTIVES, SEARCH_TRIAL, check_objective, validation_metrics
from adzoo.thresholds import CHECKPOINT_KEY, Decision, ThresholdConfig, ThresholdError, ValidationOutputs, fit_decision
from adzoo.utils.checkpoint import AtomicCheckpointIO, check_free_space, load_checkpoint, state_bytes
from adzoo.utils.cost import FLOPS_COUNTED, PeakMemory, eval_flops_per_image
from adzoo.utils.distributed import gather_objects, rank
from adzoo.utils.io import atomic_write_json, atomic_write_text, read_json, run_lock
from adzoo.utils.loggers import build_loggers, close_loggers
from adzoo.utils.quiet import quiet

log = logging.getLogger("adzoo")

RESULTS_FILE = "results.json"
TABLE_COLUMNS = (
    ("image_auroc", "I-AUROC"),
    ("image_auroc_avgpool", "I-AUROC(pool)"),
    ("image_ap", "I-AP"),
    ("image_f1max", "I-F1max"),
    ("pixel_auroc", "P-AUROC"),
    ("pixel_ap", "P-AP"),
    ("pixel_f1max", "P-F1max"),
    ("pixel_aupro", "AUPRO"),
)


class EpochSeed(pl.Callback):
    """Reseed every RNG from (seed, epoch) when a training epoch starts.

    Dropout, feature jitter and augmentation then depend on the epoch alone, not on how much randomness earlier
    epochs consumed, so a run resumed from a checkpoint after a kill continues as the uninterrupted run: bit for
    bit with ``model.feature_cache=false``, to float32 rounding with it (the resumed run recomputes the frozen
    features of epoch 0 in later epochs' batches, whose composition moves the last bits).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)


class FitClock(pl.Callback):
    """Fit seconds across attempts. The checkpoint carries the seconds of the attempts before (as this callback's
    state), so a run killed and resumed with ``ckpt_path=last`` records the fit time of the work its weights hold:
    every attempt up to its last checkpoint, as an uninterrupted run would, plus this attempt's."""

    def __init__(self) -> None:
        self.before = 0.0  # fit seconds of earlier attempts, from the checkpoint resumed
        self.attempts = 1  # this attempt's number
        self.loaded = False
        self._started: float | None = None
        self._elapsed = 0.0

    def start(self) -> None:
        self._started, self._elapsed = time.perf_counter(), 0.0

    def stop(self) -> None:
        self._elapsed, self._started = self.this_attempt(), None

    def this_attempt(self) -> float:
        return self._elapsed + (time.perf_counter() - self._started if self._started is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"fit_s": self.before + self.this_attempt(), "attempts": self.attempts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("fit_s") or 0.0)
        self.attempts = int(state_dict.get("attempts") or 1) + 1
        self.loaded = True

    def report(self, resumed: bool) -> dict[str, Any]:
        """This model's times; a checkpoint from before this record (no state) leaves the earlier attempts unknown."""
        this = self.this_attempt()
        return {
            "fit_s": self.before + this,
            "fit_s_this_attempt": this,
            "resumed": resumed,
            "attempts": self.attempts if (self.loaded or not resumed) else None,
        }


def is_complete(path: Path) -> bool:
    """A results file counts only if it parses and says it is complete (a half-written file never does)."""
    try:
        return read_json(path).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def check_writable(folder: Path) -> None:
    """Fail before training, not after it, when the results could not be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as probe:
            probe.write(b"\0" * 4096)  # a full disk refuses data, not always an empty file
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise OutputFolderError(f"output folder {folder} is not writable ({exc}); set paths.log_dir") from exc


def _git_info() -> dict[str, Any]:
    root = Path(adzoo.__file__).resolve().parents[2]
    info: dict[str, Any] = {"commit": "unknown", "dirty": None, "remote": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["dirty"] = bool(status.stdout.strip())
            remote = subprocess.run(
                ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, timeout=10
            )
            if remote.returncode == 0 and remote.stdout.strip():
                # the leaderboard links the commit on it; credentials in an https URL never reach a result file
                info["remote"] = re.sub(r"^(https?://)[^/@]*@", r"\1", remote.stdout.strip())
    return info


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "adzoo": adzoo.__version__}
    for package in (
        "torch",
        "torchvision",
        "pytorch-lightning",
        "timm",
        "hydra-core",
        "faiss-cpu",
        "faiss-gpu",
        "scikit-learn",
        "numpy",
        "wandb",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[package] = md.version(package)
    return out


def _device_info(trainer: pl.Trainer) -> dict[str, Any]:
    info: dict[str, Any] = {
        "accelerator": type(trainer.accelerator).__name__,
        "num_devices": trainer.num_devices,
        "world_size": trainer.world_size,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _resolve_ckpt(ckpt_path: str | None, group_dir: Path, category: str | None = None) -> str | None:
    """The checkpoint file to resume or test; ``last`` is this run folder's own, and absent on a first run."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = group_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.info("ckpt_path=last: no checkpoint in %s yet, training from the start", last.parent)
            return None
        path = last
    else:
        path = Path(ckpt_path).expanduser()
        if path.is_dir():
            nested = path / "categories" / str(category) / "checkpoints" / "last.ckpt"
            path = nested if category is not None and nested.is_file() else path / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise CheckpointNotFoundError(f"ckpt_path: checkpoint {path} not found (expected a .ckpt or a run folder)")
    load_checkpoint(path)  # a truncated file is named here, not deep inside Lightning's restore
    return str(path)


def format_table(per_category: dict[str, dict[str, float]], mean: dict[str, float]) -> str:
    header = ["category"] + [title for _, title in TABLE_COLUMNS]
    rows = [[c] + [per_category[c].get(k, math.nan) for k, _ in TABLE_COLUMNS] for c in per_category]
    rows.append(["mean"] + [mean.get(k, math.nan) for k, _ in TABLE_COLUMNS])
    width = max(len(header[0]), *(len(r[0]) for r in rows))
    lines = [" ".join([header[0].ljust(width)] + [h.rjust(13) for h in header[1:]])]
    for row in rows:
        cells = ["—".rjust(13) if math.isnan(v) else f"{100 * v:13.2f}" for v in row[1:]]
        lines.append(" ".join([row[0].ljust(width), *cells]))
    return "\n".join(lines)


def run(cfg: DictConfig, evaluate_only: bool = False) -> dict[str, Any] | None:
    """Train (unless ``evaluate_only``) and test per the config; returns the results.json payload."""
    output_dir = Path(cfg.paths.output_dir)
    quiet(bool(cfg.get("verbose", False)))  # the apps did so too; here for runs started in-process (tests, trials)
    validate_config(cfg)
    source = _eval_source(cfg) if evaluate_only else None  # a wrong ckpt_path fails before any work
    _configure_determinism(cfg)
    if _ddp_worker():
        return _run(cfg, source)  # DDP worker processes share rank 0's folder and lock
    check_writable(output_dir)
    with run_lock(output_dir):
        return _run(cfg, source)


def _ddp_worker() -> bool:
    """A process Lightning launched for rank > 0: it shares the folder rank 0 claimed and writes nothing there."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _configure_determinism(cfg: DictConfig) -> None:
    """``trainer.deterministic`` on a GPU: cuBLAS gives repeatable matmuls only with a fixed workspace, read once
    when CUDA starts, so it is set before any data or model exists (Lightning sets the same value later)."""
    if (cfg.get("trainer") or {}).get("deterministic"):
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


def _claim_folder(cfg: DictConfig, output_dir: Path, digest: str, task: str) -> None:
    """Refuse a folder that belongs to another config or task, then record this run's identity in it.

    Folder names carry the digest, so a clash means a folder set by hand (``hydra.run.dir``) or a hand-copied
    run: both are refused rather than mixed, and an eval never writes into a training folder (even with force).
    """
    if _ddp_worker():
        return
    path = output_dir / IDENTITY_FILE
    existing: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        existing = read_json(path)
    if existing:
        other_task = existing.get("task", "train")
        if other_task != task and "train" in (task, other_task):
            raise RunFolderConflictError(
                f"run folder {output_dir} holds a {other_task} run; adzoo-{task} never writes there "
                "(choose another hydra.run.dir, or leave it unset)"
            )
        if existing.get("digest") != digest and not cfg.get("force", False):
            raise RunFolderConflictError(
                f"run folder {output_dir} holds another config's run (identity {existing.get('digest')}, this one "
                f"{digest}); leave hydra.run.dir unset for a folder of its own, or force=true to replace it"
            )
    elif is_complete(output_dir / RESULTS_FILE) and not cfg.get("force", False):
        raise RunFolderConflictError(
            f"run folder {output_dir} holds a finished run with no identity record; force=true replaces it"
        )
    record = {"digest": digest, "task": task, "folder": folder_name(cfg, digest), "identity": identity(cfg)}
    atomic_write_json(path, record)


def _link_latest(cfg: DictConfig, output_dir: Path) -> None:
    """``<log_dir>/runs/latest`` (and ``evals/latest``) → the newest finished run, so it can be named without its
    digest. Not in sweep folders (a glob over jobs would count it twice) and never outside ``paths.log_dir``."""
    with contextlib.suppress(OSError, AttributeError):
        log_dir = Path(cfg.paths.log_dir).expanduser().resolve()
        parent = output_dir.resolve().parent
        if parent not in (log_dir / "runs", log_dir / "evals"):
            return
        link = parent / "latest"
        if link.exists() and not link.is_symlink():
            return
        tmp = parent / f".latest.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(output_dir.name, target_is_directory=True)
        tmp.replace(link)


def _finished(cfg: DictConfig, results_path: Path, digest: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The finished results to skip to, checked: same identity and the same data on disk, else refused."""
    if cfg.get("force", False):
        return None
    try:
        done = read_json(results_path)
    except (OSError, ValueError):
        return None  # absent or half-written: not finished
    if not isinstance(done, dict) or done.get("status") != "complete":
        return None
    if (done.get("identity") or {}).get("digest") != digest:
        raise RunFolderConflictError(
            f"{results_path} is another config's result (identity {(done.get('identity') or {}).get('digest')}, "
            f"this one {digest}); force=true replaces it"
        )
    before = (done.get("data") or {}).get("fingerprint", {}).get("sha256")
    if before != fingerprint.get("sha256"):
        raise RunFolderConflictError(
            f"the data has changed since {results_path} was written (fingerprint {str(before)[:12]} → "
            f"{fingerprint.get('sha256', '')[:12]}, {fingerprint.get('files')} files); force=true reruns it"
        )
    return done


def _run(cfg: DictConfig, source: dict[str, Any] | None) -> dict[str, Any] | None:
    """One run; ``source`` (what an eval reads) is None for training."""
    with PeakMemory() as memory:
        payload = _run_measured(cfg, source, memory)
    return payload


def search_objective(cfg: DictConfig) -> str | None:
    """``search.objective`` checked (a search trial), or None for an ordinary run."""
    name = OmegaConf.select(cfg, "search.objective", default=None)
    if name is None:
        return None
    data = cfg.get("data") or {}
    return check_objective(name, float(data.get("val_fraction", 0.0)), str(data.get("val_anomalies", "none")))


def _run_measured(cfg: DictConfig, source: dict[str, Any] | None, memory: PeakMemory) -> dict[str, Any] | None:
    evaluate_only = source is not None
    output_dir = Path(cfg.paths.output_dir)
    results_path = output_dir / RESULTS_FILE
    objective = None if evaluate_only else search_objective(cfg)
    task = "eval" if evaluate_only else (SEARCH_TRIAL if objective else "train")
    digest = identity_digest(cfg)
    _claim_folder(cfg, output_dir, digest, task)
    started = time.perf_counter()
    if cfg.get("torch_threads"):
        # On a machine shared with other jobs, 2+ OpenMP threads per process spin against each other; 1 is faster.
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    if objective is not None:
        datamodule.withhold_test()  # a search trial never builds, reads or scores the test split
    fingerprint = datamodule.fingerprint()
    if not evaluate_only:
        done = _finished(cfg, results_path, digest, fingerprint)
        if done is not None:
            log.info(
                "skipping %s: results.json is complete for this config and data (force=true reruns it)", output_dir
            )
            return done
    if callable(getattr(datamodule, "validate", None)):
        datamodule.validate()  # every file of every category, before the first fit
    groups: list[str | None] = [None] if datamodule.setting == "unified" else list(datamodule.categories)
    per_category: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    conventions: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    histograms: dict[str, Any] = {}  # category -> per-image pixel histograms (the bootstrap's input)
    threshold_cfg = threshold_config(cfg)
    decisions: dict[str, dict[str, Any]] = {}  # model (unified or category) -> its fitted decision
    group_timings: list[dict[str, Any]] = []
    parameters: dict[str, int] = {}
    device: dict[str, Any] = {}
    flops: dict[str, Any] | None = None
    validation: dict[str, dict[str, float]] = {}  # a search trial's validation metrics, per category
    is_zero = True

    for category in groups:
        dm = datamodule if category is None else datamodule.for_category(category)
        group_dir = output_dir if category is None else output_dir / "categories" / category
        label = category or "unified"
        log.info("%s: %s on %s (%s), categories %s", label, cfg.method_name, dm.name, dm.setting, dm.categories)
        pl.seed_everything(cfg.seed, workers=True)  # every model of a run starts from the same seed
        model = instantiate(cfg.model)
        for module in model.modules():
            if isinstance(module, FeatureExtractor):
                module.check_input_size(dm.image_size)
        check_free_space(output_dir, 2 * state_bytes(model), f"a checkpoint of {cfg.method_name}")
        metrics_cb: AnomalyMetrics = instantiate(cfg.callbacks.metrics, output_dir=str(group_dir))
        clock = FitClock()
        callbacks: list[pl.Callback] = [metrics_cb, EpochSeed(cfg.seed), clock]
        for name, cb_cfg in cfg.callbacks.items():
            if name == "metrics" or cb_cfg is None:
                continue
            if name == "checkpoint":
                callbacks.append(instantiate(cb_cfg, dirpath=str(group_dir / "checkpoints")))
            else:
                callbacks.append(instantiate(cb_cfg))
        loggers = build_loggers(cfg, label)
        failed = True
        try:
            hparams = _resolved_config(cfg)
            for logger in loggers:
                logger.log_hyperparams(hparams)
            trainer: pl.Trainer = instantiate(
                cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
            )
            fit: dict[str, Any] | None = None
            if objective is None:
                _check_decidable(threshold_cfg, dm)  # before any training: a decision that cannot be fitted fails now
            if evaluate_only:
                ckpt = _resolve_ckpt(cfg.ckpt_path, group_dir, category)
                _load_weights(model, ckpt)
            else:
                resume = _resolve_ckpt(cfg.get("ckpt_path"), group_dir, category)
                clock.start()
                trainer.fit(model, datamodule=dm, ckpt_path=resume)
                clock.stop()
                fit = clock.report(resumed=resume is not None)
            if flops is None and trainer.is_global_zero:
                flops = _flops(model, dm.image_size)
            t0 = time.perf_counter()
            if objective is not None:
                validation.update(validation_metrics(_predict(trainer, model, dm), objective in PIXEL_OBJECTIVES))
            else:
                decision = _decide(threshold_cfg, trainer, model, dm, reuse_stored=evaluate_only)
                metrics_cb.decision = decision
                if decision is not None:
                    model.decision = decision.to_dict()
                    decisions[label] = decision.to_dict()
                    if not evaluate_only:
                        _store_decision(trainer)
                t0 = time.perf_counter()
                trainer.test(model, datamodule=dm, verbose=False)
            test_s = time.perf_counter() - t0
            failed = False
        finally:
            close_loggers(loggers, failed)
        is_zero = trainer.is_global_zero
        if objective is None:
            results = metrics_cb.results
            per_category.update(results["per_category"])
            notes.update(results["notes"])
            conventions = results["conventions"]
            rows.extend(metrics_cb.per_image)
            histograms.update(metrics_cb.histograms)
        scored = dm.val_set if objective is not None else dm.test_set
        group_timings.append(_timing(label, fit, test_s, len(scored), dm))
        bank = getattr(getattr(model, "model", None), "memory_bank", None)
        if bank is not None and bank.report:  # what the fill kept, and its seconds and bytes (patchknn, CAP)
            group_timings[-1]["memory_bank"] = dict(bank.report)
        parameters = model.parameter_counts()
        device = _device_info(trainer)

    mean = category_mean(per_category)
    fit_total = None if evaluate_only else sum(g["fit_s"] for g in group_timings)
    attempts = [g.get("attempts") for g in group_timings]
    resumed_fit = {
        "fit_s_this_attempt": None if evaluate_only else sum(g["fit_s_this_attempt"] for g in group_timings),
        "resumed": any(g.get("resumed") for g in group_timings),
        "attempts": None if evaluate_only or None in attempts else max(attempts, default=1),
    }
    test_total = sum(g["test_s"] for g in group_timings)
    test_images = sum(g["test_images"] for g in group_timings)
    backbone = cfg.get("backbone") or {}
    payload = {
        "status": "complete",
        "task": task,
        "identity": {"digest": digest, "folder": folder_name(cfg, digest), "rule": "adzoo.run_identity"},
        "method": cfg.method_name,
        "profile": cfg.get("profile", "cpu"),
        "setting": datamodule.setting,
        "data": {**datamodule.describe(), "fingerprint": fingerprint},
        "backbone": {k: backbone.get(k) for k in ("name", "weights", "out_indices")},
        "seed": cfg.seed,
        "metrics": {"per_category": per_category, "mean": mean, "notes": notes, "conventions": conventions},
        "thresholds": {"config": dataclasses.asdict(threshold_cfg), "models": decisions},
        "timing": {
            "fit_s": fit_total,  # every attempt's, when resumed (FitClock)
            **resumed_fit,
            "test_s": test_total,
            "total_s": time.perf_counter() - started,
            "per_group": group_timings,
        },
        "throughput_images_per_s": test_images / test_total if test_total else None,
        "parameters": parameters,
        "cost": _cost(flops, memory),
        "device": device,
        "versions": _versions(),
        "git": _git_info(),
        "overrides": _overrides(),
        "run_dir": str(output_dir.resolve()),
        "config": _resolved_config(cfg),
    }
    if source is not None:
        payload["source"] = source
    if objective is not None:
        return _finish_trial(payload, objective, validation, results_path, is_zero)
    tuned = OmegaConf.select(cfg, "search.tuned", default=None)
    if tuned is not None:  # the test run of a search's best config (adzoo.search.sweeper): where it came from
        payload["search"] = {"tuned": OmegaConf.to_container(tuned, resolve=True)}
    if is_zero and rank() == 0:
        if datamodule.setting == "separate":
            _write_merged_predictions(output_dir / "predictions.csv", rows)
            if histograms:
                save_histograms(output_dir / HISTOGRAMS_FILE, histograms)
        atomic_write_json(results_path, payload)
        _link_latest(cfg, output_dir)
        table = format_table(per_category, mean)
        if decisions:
            table += "\n" + decision_summary(decisions, mean)
        atomic_write_text(output_dir / "results.txt", table + "\n")
        if cfg.get("print_table", True):
            print(f"\n{cfg.method_name} on {datamodule.name} ({datamodule.setting}), metrics in %:\n{table}")
            fit_text = "eval only" if fit_total is None else f"fit {fit_total:.1f}s"
            print(f"{fit_text}, test {test_total:.1f}s → {results_path}")
    return payload


def _timing(label: str, fit: dict[str, Any] | None, test_s: float, images: int, dm: Any) -> dict[str, Any]:
    """One model's times (``fit``: :meth:`FitClock.report`, None for an eval); ``test_s`` and ``test_images`` are
    the validation split's in a search trial."""
    fit = fit or {"fit_s": None, "fit_s_this_attempt": None, "resumed": False, "attempts": None}
    return {
        "group": label,
        **fit,
        "test_s": test_s,
        "test_images": images,
        "train_images": len(dm.train_set),
        "throughput_images_per_s": images / test_s if test_s else None,
    }


def _flops(model: Any, image_size: int) -> dict[str, Any]:
    """The eval forward's FLOPs per image; a count that fails costs the run nothing but this figure."""
    try:
        return eval_flops_per_image(model, image_size)
    except Exception as exc:  # an op torch's counter cannot follow must not lose a finished training
        log.warning("FLOPs per image not counted: %s: %s", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _cost(flops: dict[str, Any] | None, memory: PeakMemory) -> dict[str, Any]:
    """FLOPs per image of the eval forward (of the first model, in the separate setting) and the run's peak memory
    so far (adzoo.utils.cost), for results.json."""
    cost: dict[str, Any] = {"flops_counted": FLOPS_COUNTED}
    if flops is not None and "error" in flops:
        cost["flops_error"] = flops["error"]
    elif flops is not None:
        cost.update({"flops_per_image": flops["total"], "gflops_per_image": flops["total"] / 1e9,
                     "flops_torch": flops["torch"], "flops_memory_bank": flops["memory_bank"]})  # fmt: skip
    cost.update(memory.report())
    return cost


def _finish_trial(
    payload: dict[str, Any],
    objective: str,
    validation: dict[str, dict[str, float]],
    results_path: Path,
    is_zero: bool,
) -> dict[str, Any]:
    """A search trial's results.json: validation metrics and the objective's value, no test metric at all."""
    from adzoo.search.objective import OBJECTIVES

    mean = category_mean(validation)
    value = mean.get(OBJECTIVES[objective], math.nan)
    payload["validation"] = {"per_category": validation, "mean": mean}
    payload["search"] = {"objective": objective, "value": value}
    if is_zero and rank() == 0:
        atomic_write_json(results_path, payload)
        print(f"search trial: {objective} = {value:.4f} (validation, {len(validation)} categories) → {results_path}")
    return payload


def threshold_config(cfg: DictConfig) -> ThresholdConfig:
    """The ``threshold:`` section as a :class:`ThresholdConfig` (a bad value is a one-line ConfigError)."""
    section = OmegaConf.to_container(cfg.get("threshold") or {}, resolve=True)
    if not isinstance(section, dict):
        raise ConfigError(f"threshold: expected a mapping, got {section!r}")
    unknown = set(section) - set(ThresholdConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            f"threshold: unknown keys {sorted(unknown)}; known: {sorted(ThresholdConfig.__dataclass_fields__)}"
        )
    try:
        return ThresholdConfig(**section)
    except ThresholdError as exc:
        raise ConfigError(str(exc)) from exc


def _check_decidable(config: ThresholdConfig, dm: Any) -> None:
    if not config.enabled or config.strategy == "manual":
        return
    if dm.val_set is None or len(dm.val_set) == 0:
        raise ConfigError(
            f"threshold.strategy={config.strategy} is fitted on the validation split, and data.val_fraction="
            f"{dm.val_fraction} leaves none (set data.val_fraction > 0, or threshold.strategy=manual / none)"
        )
    if config.strategy == "f1_max" and dm.val_anomalies == "none":
        raise ConfigError(
            "threshold.strategy=f1_max needs anomalous validation images: set data.val_anomalies=confetti or "
            "cutpaste (synthetic anomalies with exact masks), or use threshold.strategy=percentile"
        )


def _decide(config: ThresholdConfig, trainer: pl.Trainer, model: Any, dm: Any, reuse_stored: bool) -> Decision | None:
    """The decision fitted on the validation split alone (never a test image). An eval keeps the decision its
    checkpoint carries when the strategy is the same, so a re-tested model decides as its run did."""
    if not config.enabled:
        return None
    stored = getattr(model, "decision", None)
    if reuse_stored and stored and stored.get("strategy") == config.strategy and config.strategy != "manual":
        return Decision.from_dict(stored, "checkpoint decision")
    if config.strategy == "manual" and (dm.val_set is None or len(dm.val_set) == 0):
        return fit_decision(config, None)
    t0 = time.perf_counter()
    try:
        decision = fit_decision(config, ValidationOutputs.from_batches(_predict(trainer, model, dm), dm.val_anomalies))
    except ThresholdError as exc:
        raise ConfigError(str(exc)) from exc
    assert decision is not None
    pixel = "" if decision.pixel_threshold is None else f", pixel threshold {decision.pixel_threshold:.6g}"
    log.info("threshold (%s) fitted on %d validation images in %.1f s: image threshold %.6g%s; validation %s",
             config.strategy, len(dm.val_set), time.perf_counter() - t0, decision.image_threshold, pixel,
             decision.validation)  # fmt: skip
    return decision


def _predict(trainer: pl.Trainer, model: Any, dm: Any) -> list[dict[str, Any]]:
    """The model's eval outputs on the validation split, gathered from every rank, on the CPU."""
    predicted = trainer.predict(model, dataloaders=dm.val_dataloader(), return_predictions=True) or []
    keep = ("pred_score", "anomaly_map", "label", "mask")
    local = [{**{k: torch.as_tensor(b[k]).detach().cpu() for k in keep}, "category": list(b["category"])}
             for b in predicted]  # fmt: skip
    return [b for part in gather_objects(local) for b in part]


def _store_decision(trainer: pl.Trainer) -> None:
    """Rewrite the run's checkpoint with the decision in it (the model's ``on_save_checkpoint`` adds it)."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return
    # the kept epoch file (last.ckpt links to it; with no monitor, best_model_path may be unset)
    path = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
    if path and Path(path).exists():
        trainer.save_checkpoint(os.path.realpath(path))


def decision_summary(decisions: dict[str, dict[str, Any]], mean: dict[str, float]) -> str:
    """A few lines under the metric table: each model's thresholds and the test metrics at them."""
    lines = []
    for label, d in decisions.items():
        pixel = "" if d.get("pixel_threshold") is None else f", pixel {d['pixel_threshold']:.6g}"
        val = d.get("validation") or {}
        val_fpr = f" (validation FPR {100 * val['image_fpr']:.1f}%)" if "image_fpr" in val else ""
        lines.append(f"decision [{label}] {d['strategy']}: image threshold {d['image_threshold']:.6g}{val_fpr}{pixel}")
    shown = [("image_fpr_thr", "FPR"), ("image_tpr_thr", "TPR"), ("image_precision_thr", "precision"),
             ("image_f1_thr", "F1"), ("pixel_iou_thr", "pixel IoU"), ("pixel_dice_thr", "Dice"),
             ("pixel_pro_thr", "PRO")]  # fmt: skip
    cells = [f"{name} {100 * mean[k]:.1f}" for k, name in shown if k in mean and not math.isnan(mean[k])]
    if cells:
        lines.append("test at the threshold (mean over categories, %): " + ", ".join(cells))
    return "\n".join(lines)


def _eval_source(cfg: DictConfig) -> dict[str, Any]:
    """What an eval read: the trained run, its checkpoint argument and that run's identity digest."""
    run_dir, checkpoint = locate_run(cfg.ckpt_path)
    trained: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        trained = read_json(run_dir / RESULTS_FILE)
    return {
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "identity_digest": (trained.get("identity") or {}).get("digest"),
    }


def _load_weights(model: pl.LightningModule, ckpt: str | None) -> None:
    if ckpt is None:
        raise CheckpointNotFoundError("ckpt_path: no checkpoint to evaluate")
    state = load_checkpoint(ckpt)
    model.decision = state.get(CHECKPOINT_KEY)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"ckpt_path: {ckpt} does not fit the configured model ({first})") from exc


def _resolved_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def _overrides() -> list[str]:
    with contextlib.suppress(Exception):
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    return []


def _write_merged_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=prediction_fields(rows))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
