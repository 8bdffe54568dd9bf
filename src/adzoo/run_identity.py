"""What makes a run the run it is: the identity digest, the run folder named after it, and eval's own config.

A finished run is skipped on rerun, so the folder a config maps to must never be shared by another config: the
second run would be "skipped as complete" and report the first one's numbers. The folder name is therefore made
from the resolved config, never from the command-line text: ``<method>-<data>-<setting>-s<seed>-<digest>``,
where the digest is a SHA-256 over the **identity keys** below. It contains only ``[A-Za-z0-9._-]``, so it works as
a Hydra argument (``ckpt_path=logs/runs/<name>``), and ``logs/runs/latest`` links to the newest run.

The rule: a key is *identity* when the numbers are a function of it, and an *execution detail* when it only says
where, how fast or how visibly the run happens.

- Identity: ``method_name``, ``profile``, ``seed``, ``data`` (root as an absolute path, categories, sizes,
  setting, generator parameters), ``model``, ``backbone``, ``trainer`` (epochs, precision, clipping, limits,
  devices and strategy: the world size changes the effective batch), ``callbacks.metrics`` (conventions) and,
  when set, ``search.objective`` (a search trial scores the validation split instead of testing).
- Execution details: ``paths``, ``logger``, every other callback (checkpointing), ``torch_threads``,
  ``force``, ``print_table``, ``tags``, ``sweep_name``, ``ckpt_path``, ``task_name``, ``allow_external_paths``,
  ``search.tuned`` (where a tuned config came from),
  and the keys in :data:`EXECUTION_KEYS` (loader workers, the eval batch size, the frozen-feature cache,
  the accelerator, progress bars, logging cadence, ``trainer.deterministic``, the memory bank's memory limit,
  ``model.compile``).

Naming a default explicitly (``method=patchknn``) or setting an execution detail therefore maps to the same
folder, and any identity change to another one. Before a run is skipped, the engine also checks the digest
stored in the folder and the data fingerprint, so a folder set by hand (``hydra.run.dir=...``) or data changed
on disk is never taken for a finished run of this config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from adzoo.errors import ConfigError

#: config sections whose resolved values define the run
IDENTITY_SECTIONS = (
    "method_name", "profile", "seed", "data", "model", "backbone", "trainer", "callbacks.metrics", "threshold",
)  # fmt: skip
#: identity keys that count only when set, so configs from before the key existed keep their digests: a search
#: trial (``search.objective``) computes validation numbers, not a run's test numbers
OPTIONAL_IDENTITY_KEYS = ("search.objective",)
#: keys inside those sections that do not change a number
EXECUTION_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("num_workers", "pin_memory", "eval_batch_size", "preload", "preload_max_gb"),
    "model": ("feature_cache", "compile", "bank.max_memory_gb"),
    "trainer": (
        "accelerator", "enable_progress_bar", "enable_model_summary", "enable_checkpointing", "log_every_n_steps",
        "default_root_dir", "deterministic", "logger", "callbacks", "benchmark", "profiler", "barebones",
    ),
    "callbacks.metrics": ("log_images", "resample_bins"),  # resample_bins: the leaderboard's artifact, not a metric
}  # fmt: skip
#: keys added to a section after runs existed, left out while null (their default), so older digests still match
NULL_DEFAULT_KEYS: dict[str, tuple[str, ...]] = {"callbacks.metrics": ("spro_max_fpr",)}
DIGEST_CHARS = 16  # stored in results.json and identity.json, compared before a skip
NAME_DIGEST_CHARS = 10  # in the folder name; a clash of these is still caught by the full digest
IDENTITY_FILE = "identity.json"
#: top-level keys an eval takes from its own command line rather than from the trained run
EVAL_EXECUTION_TOP = (
    "paths", "logger", "hydra", "force", "print_table", "tags", "sweep_name", "ckpt_path", "torch_threads",
    "task_name", "allow_external_paths", "verbose",
)  # fmt: skip
#: config groups that rewrite many top-level keys: they would change what the checkpoint is
_GLOBAL_GROUPS = ("method", "experiment", "sweep")


class CheckpointNotFoundError(ConfigError, FileNotFoundError):
    """``ckpt_path`` names no checkpoint or run folder: a config mistake, reported in one line."""


class RunFolderConflictError(ConfigError):
    """The run folder holds another config's run (or data that has changed since): refuse rather than mix."""


def _resolved(node: Any, drop: tuple[str, ...] = ()) -> Any:
    """Resolve a node key by key, skipping ``drop`` first (``a.b`` drops ``b`` inside ``a``): dropped keys may point
    at the run folder, which does not exist yet while Hydra is still naming it."""
    if isinstance(node, DictConfig):
        inner = {head: tuple(d.split(".", 1)[1] for d in drop if d.startswith(head + ".")) for head in map(str, node)}
        return {str(k): _resolved(node[k], inner[str(k)]) for k in node if str(k) not in drop}
    if isinstance(node, ListConfig):
        return [_resolved(v) for v in node]
    return node


def _absolute_roots(node: Any) -> Any:
    """Data roots as absolute paths, so the same relative ``data.root`` from two working folders never matches."""
    if isinstance(node, dict):
        return {
            k: str(Path(v).expanduser().resolve()) if k == "root" and isinstance(v, str) else _absolute_roots(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_roots(v) for v in node]
    return node


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved identity keys of a composed config (see the module docstring for the rule)."""
    out: dict[str, Any] = {}
    for section in IDENTITY_SECTIONS:
        node = OmegaConf.select(cfg, section, default=None, throw_on_missing=False)
        value = _resolved(node, EXECUTION_KEYS.get(section, ()))
        for key in NULL_DEFAULT_KEYS.get(section, ()):
            if isinstance(value, dict) and value.get(key, 0) is None:
                del value[key]
        out[section] = _absolute_roots(value) if section == "data" else value
    for key in OPTIONAL_IDENTITY_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is not None:
            out[key] = value
    return out


def digest_of(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def identity_digest(cfg: DictConfig) -> str:
    return digest_of(identity(cfg))


def _safe(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def folder_name(cfg: DictConfig, digest: str | None = None) -> str:
    """``<method>-<data>-<setting>-s<seed>-<digest>``: readable, unique per identity, valid in Hydra's grammar."""
    digest = digest or identity_digest(cfg)
    method = _safe(OmegaConf.select(cfg, "method_name", default="run"))
    data = _safe(OmegaConf.select(cfg, "data.name", default="data"))
    setting = _safe(OmegaConf.select(cfg, "data.setting", default="unified"))
    seed = _safe(OmegaConf.select(cfg, "seed", default=0))
    return f"{method}-{data}-{setting}-s{seed}-{digest[:NAME_DIGEST_CHARS]}"


def run_folder_name(_root_: DictConfig) -> str:
    """Resolver ``${adzoo_run_name:}`` (``conf/hydra/default.yaml``): the training run's folder name."""
    return folder_name(_root_)


# --- evaluation: its own folder, the trained run's config ------------------------------------------------------


def locate_run(ckpt_path: str | os.PathLike | None) -> tuple[Path, Path]:
    """(run folder holding results.json, checkpoint file or run folder as given) for ``ckpt_path``."""
    if ckpt_path in (None, ""):
        raise CheckpointNotFoundError("ckpt_path is required: adzoo-eval ckpt_path=<run folder or .ckpt file>")
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        if (path / "results.json").is_file():
            return path.resolve(), path.resolve()
        raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no results.json in this folder (expected a run folder)")
    if not path.is_file():
        raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint or run folder")
    for parent in path.resolve().parents:  # a category's checkpoint sits below the run's own results.json
        if (parent / "results.json").is_file():
            return parent, path.resolve()
    raise CheckpointNotFoundError(
        f"ckpt_path={ckpt_path}: no results.json above it (expected a checkpoint inside an adzoo run folder)"
    )


def _read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    try:
        with open(path) as handle:
            payload = json.load(handle)
        config = payload["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointNotFoundError(
            f"{path}: unreadable or has no 'config' ({exc}); expected a finished run"
        ) from exc
    if payload.get("task", "train") != "train":
        raise ConfigError(f"ckpt_path: {run_dir} is an evaluation folder; point ckpt_path at the trained run")
    if not isinstance(config, dict):
        raise CheckpointNotFoundError(f"{path}: 'config' is not a mapping")
    return payload


def _override_keys(cfg: DictConfig) -> list[tuple[str, bool]]:
    """(key, is_delete) of the user's command-line overrides, in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
    if task is None:  # the app's cfg has no hydra node; Hydra keeps it aside
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    parsed = OverridesParser.create().parse_overrides([str(t) for t in task])
    return [(o.key_or_group, o.is_delete()) for o in parsed]


def _unresolved(cfg: DictConfig, key: str) -> Any:
    """A plain copy of ``cfg[key]`` with its interpolations kept, detached from ``cfg``."""
    node = cfg._get_node(key)
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig | ListConfig) else cfg[key]


def _choices(cfg: DictConfig) -> dict[str, Any]:
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return dict(choices)


def eval_config(cfg: DictConfig) -> DictConfig:
    """The config an eval runs: the trained run's own resolved config (so no training override is repeated),
    with where/how it runs taken from this command line and every key the user overrides taken from it too.

    The trained run's config is data from a folder that may come from anyone: it is checked against the
    allow-list of instantiable targets before anything is built from it (:mod:`adzoo.safe_load`).
    """
    from adzoo.safe_load import check_trusted

    run_dir, _ = locate_run(cfg.get("ckpt_path"))
    saved = _read_results(run_dir)["config"]
    # What the numbers depend on comes from the trained run; callbacks other than the metrics are how this
    # process runs (a user's own training callback is not needed, nor trusted, to test).
    taken = {k: v for k, v in saved.items() if k not in EVAL_EXECUTION_TOP and k != "callbacks"}
    metrics = (saved.get("callbacks") or {}).get("metrics")
    check_trusted({**taken, "callbacks": {"metrics": metrics}}, where=str(run_dir / "results.json"))
    merged = OmegaConf.create(taken)
    for key in EVAL_EXECUTION_TOP:
        if key in cfg:
            merged[key] = _unresolved(cfg, key)  # where this eval writes: resolved in its own folder
    merged.callbacks = _unresolved(cfg, "callbacks") if "callbacks" in cfg else {}
    if metrics is not None:
        merged.callbacks.metrics = metrics
    if "trainer" in merged:
        merged.trainer.default_root_dir = "${paths.output_dir}"  # never the trained run's folder
    choices = _choices(cfg)
    for key, is_delete in _override_keys(cfg):
        if key in EVAL_EXECUTION_TOP or key.split(".")[0] in EVAL_EXECUTION_TOP or key.startswith("hydra"):
            continue
        if key in _GLOBAL_GROUPS:
            raise ConfigError(f"{key}=: adzoo-eval takes the method and its settings from the trained run")
        if is_delete:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
            continue
        if key in choices and key not in cfg:
            continue  # a group whose package is elsewhere (hydra/launcher=...)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        OmegaConf.update(merged, key, value, merge=False, force_add=True)
    merged.task_name = "eval"
    return merged


def eval_folder_name(_root_: DictConfig) -> str:
    """Resolver ``${adzoo_eval_name:}`` (``conf/eval.yaml``): one folder per (checkpoint, effective config), under
    ``evals/``, never a training folder; a bad ``ckpt_path`` is reported by the app, not here."""
    try:
        merged = eval_config(_root_)
        run_dir, ckpt = locate_run(_root_.get("ckpt_path"))
    except ConfigError:
        return "unresolved-" + hashlib.sha256(str(_root_.get("ckpt_path")).encode()).hexdigest()[:NAME_DIGEST_CHARS]
    digest = digest_of({"identity": identity(merged), "checkpoint": str(ckpt), "run": str(run_dir)})
    return folder_name(merged, digest)
