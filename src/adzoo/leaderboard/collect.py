"""Collect finished runs from their artifacts (``results.json``), check them, drop duplicates, aggregate seeds.

Nothing here reads a number from anywhere but a run folder: every cell of a leaderboard traces back to the
run folders, git commits and config hashes listed with it, and so does every result left out as a duplicate.

A row is one computation up to its seed: method × profile × setting × **data** (what was read, by its content
fingerprint) × categories × backbone × config variant × task (trained here, or an eval of a model trained
elsewhere). A seed appears in a row once: results.json files that claim the same row and seed (a run copied to
two folders, an eval that re-tests a trained run on the same data, a rerun) are reduced to one, and the others
are listed in the row's provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from adzoo.run_identity import EXECUTION_KEYS, IDENTITY_SECTIONS
from adzoo.search.objective import SEARCH_TRIAL
from adzoo.thresholds import DECISION_KEYS
from adzoo.utils.io import read_json

REQUIRED_KEYS = ("status", "method", "setting", "data", "backbone", "seed", "metrics", "timing", "git", "config")
METRICS = (
    "image_auroc", "image_ap", "image_f1max",
    "image_auroc_avgpool", "image_ap_avgpool", "image_f1max_avgpool",
    "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro",
    *DECISION_KEYS,  # test metrics at the validation-fitted thresholds (adzoo.thresholds); shown on request
)  # fmt: skip
TOLERANCE = 1e-9
SHORT_FINGERPRINT = 8  # hex characters shown in the data column; rows are keyed on the full digest
TRAIN = "train"
DEFAULT_VARIANT = "default"  # the variant column of a method with one config variant
VARIANT_KEYS_SHOWN = 3  # config keys named in a variant cell; the rest are counted ("+N more")
VARIANT_VALUE_CHARS = 24  # a longer value is cut, with "…"
SEEDS_SHOWN = 6  # seeds listed in a seeds cell; longer lists keep the first few and the last
#: identity keys that have a column of their own (and ``model.backbone``, which mirrors ``backbone``): a variant
#: cell never repeats them
COLUMN_KEYS = ("method_name", "profile", "data.name", "data.setting", "backbone.name", "backbone.weights")
SAME_NUMBERS = "same computation, same numbers"
NUMBERS_DIFFER = "same row and seed, different numbers: the newest is kept"


class LeaderboardError(ValueError):
    """A run's artifacts are inconsistent or incomplete: no table is written from them."""


class RowKey(NamedTuple):
    """What makes two runs seeds of one leaderboard row (every field but ``data_id`` is a column)."""

    method: str
    profile: str
    setting: str
    data: str  # name + short fingerprint (or the root where there is no content fingerprint)
    categories: tuple[str, ...]
    backbone: str
    variant: str
    task: str  # "train", or "eval of …" naming the trained model
    data_id: str  # the full fingerprint (or root): two data sets never share a row through a short-label clash


@dataclass(frozen=True)
class Dropped:
    """A results.json left out because another one already counts for its row and seed."""

    folder: Path
    seed: int
    task: str
    kept: Path
    reason: str


@dataclass
class Run:
    """One finished run, read from its folder."""

    folder: Path
    task: str
    method: str
    profile: str
    setting: str
    data_name: str
    data_id: str
    data_label: str
    categories: tuple[str, ...]
    all_categories: bool  # the run asked for every category of its data set (``data.categories=all``)
    backbone: str
    seed: int
    per_category: dict[str, dict[str, float]]
    mean: dict[str, float]
    fit_s: float | None  # None for an eval: it trained nothing, and a 0 would pull a row's fit time down
    test_s: float
    parameters: int
    throughput: float | None
    commit: str
    config_hash: str
    variant: str
    identity: str | None  # results.json ``identity.digest`` (the engine's rule; absent in older files)
    variant_config: dict[str, Any] = field(default_factory=dict)  # :func:`variant_settings` of its config
    source_identity: str | None = None  # an eval's trained run, by its identity digest
    source_run_dir: str | None = None
    gflops: float | None = None  # results.json ``cost.gflops_per_image``: the eval forward of one image
    peak_memory_gib: float | None = None  # ``cost``: CUDA's allocator peak on a GPU, else the peak resident set
    tuned: dict[str, Any] | None = None  # ``search.tuned``: the best config of a search (study, trials, objective)
    git: dict[str, Any] = field(default_factory=dict)  # results.json ``git``: full commit, dirty, remote
    mtime: float = 0.0
    row_task: str = TRAIN  # set by :func:`deduplicate`: which model this run's numbers measure
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def natural_key(self) -> tuple[str, ...]:
        """The row without the task: an eval that equals a training run here (and in seed) re-tests it."""
        return (self.method, self.profile, self.setting, self.data_id, *self.categories, "|", self.backbone,
                self.variant)  # fmt: skip

    @property
    def key(self) -> RowKey:
        """Rows of a leaderboard: runs differing only by seed are aggregated."""
        return RowKey(self.method, self.profile, self.setting, self.data_label, self.categories, self.backbone,
                      self.variant, self.row_task, self.data_id)  # fmt: skip


def categories_label(categories: Sequence[str], every: bool) -> str:
    """``all 6`` when the run asked for the whole data set, else the names: a subset must never read as the set."""
    return f"all {len(categories)}" if every else ",".join(categories)


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _without(node: Any, key: str) -> Any:
    """``node`` with ``key`` dropped at every depth."""
    if isinstance(node, dict):
        return {k: _without(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [_without(v, key) for v in node]
    return node


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def variant_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What the numbers depend on, except the seed and the data's location and categories.

    The keys are the engine's identity sections (:mod:`adzoo.run_identity`), so an execution detail (threads,
    workers, checkpointing) never splits a row. The seed is what a row aggregates over; the data's root and
    categories are left to the data and categories columns, so the same files at two paths are one data set
    and a training run and an eval of it on that data share a variant.
    """
    identity: dict[str, Any] = {}
    for section in IDENTITY_SECTIONS:
        node = _select(config, section)
        drop = EXECUTION_KEYS.get(section, ())
        if isinstance(node, dict):
            node = {k: v for k, v in node.items() if k not in drop}
            if section == "model" and isinstance(node.get("backbone"), dict):
                node["backbone"] = {k: v for k, v in node["backbone"].items() if k not in drop}
            if section == "data":
                node = _without({k: v for k, v in node.items() if k != "categories"}, "root")
        identity[section] = node
    return _without(identity, "seed")


def variant_hash(config: dict[str, Any]) -> str:
    """Hash of :func:`variant_identity`: the variant column rows are keyed on."""
    return _config_hash(variant_identity(config))[:8]


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = node


def variant_settings(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`variant_identity` as dotted keys (``model.optimizer.lr``) → leaf values, lists kept whole.

    Keys with a column of their own (:data:`COLUMN_KEYS`) are left out, and so is ``model.backbone`` where it
    repeats the ``backbone`` section, so a variant cell names only what no other column shows.
    """
    identity = variant_identity(config)
    model = identity.get("model")
    if isinstance(model, dict) and model.get("backbone") == identity.get("backbone"):
        identity["model"] = {k: v for k, v in model.items() if k != "backbone"}
    flat: dict[str, Any] = {}
    _flatten(identity, "", flat)
    return {k: v for k, v in flat.items() if k not in COLUMN_KEYS}


_UNSET = object()


def _short_value(value: Any) -> str:
    if value is _UNSET:
        text = "unset"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)  # true/false/null, 0.0005, [2,3]
    return text if len(text) <= VARIANT_VALUE_CHARS else text[: VARIANT_VALUE_CHARS - 1] + "…"


def describe_variant(this: dict[str, Any], variants: Sequence[dict[str, Any]]) -> str:
    """The config values by which ``this`` differs from the method's other ``variants`` (:func:`variant_settings`
    of each), as ``key=value, …``: at most :data:`VARIANT_KEYS_SHOWN` keys, the rest counted; ``default`` when
    there is one variant, or when variants differ only in what other columns show."""
    keys: dict[str, None] = {}
    for variant in variants:
        keys.update(dict.fromkeys(variant))
    differing = [k for k in keys if len({_short_value(v.get(k, _UNSET)) for v in variants}) > 1]
    if not differing:
        return DEFAULT_VARIANT
    text = ", ".join(f"{k}={_short_value(this.get(k, _UNSET))}" for k in differing[:VARIANT_KEYS_SHOWN])
    more = len(differing) - VARIANT_KEYS_SHOWN
    return text + (f" +{more} more" if more > 0 else "")


def check_results(payload: dict[str, Any], where: Path) -> None:
    """Schema and arithmetic checks on one results.json: refuse what does not add up."""
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise LeaderboardError(f"{where}: missing keys {missing}")
    if payload["status"] != "complete":
        raise LeaderboardError(f"{where}: status is {payload['status']!r}, not 'complete'")
    per_category = payload["metrics"].get("per_category") or {}
    if not per_category:
        raise LeaderboardError(f"{where}: no per-category metrics")
    for category, metrics in per_category.items():
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise LeaderboardError(f"{where}: category {category!r} has unknown metric columns {unknown}")
    for key, value in payload["metrics"].get("mean", {}).items():
        values = [m[key] for m in per_category.values() if key in m and not _nan(m[key])]
        expected = sum(values) / len(values) if values else math.nan
        if not (_nan(expected) and _nan(value)) and abs(expected - value) > TOLERANCE:
            raise LeaderboardError(f"{where}: mean {key} = {value} but its per-category values average to {expected}")
    if payload["timing"].get("test_s") is None:
        raise LeaderboardError(f"{where}: timing.test_s is missing")


def _nan(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _data_root(payload: dict[str, Any]) -> str | None:
    """Where the data was read: results.json ``data.root``, else the config's (generated sets keep it there)."""
    data_cfg = payload["config"].get("data") or {}
    source_cfg = data_cfg.get("source") if isinstance(data_cfg.get("source"), dict) else {}
    for root in (payload["data"].get("root"), data_cfg.get("root"), source_cfg.get("root")):
        if root:
            return str(root)
    return None


def data_identity(payload: dict[str, Any]) -> tuple[str, str]:
    """(key, label) of the data a run read.

    A content fingerprint (a hash over every file read) names the data wherever it lies, so it alone is the key.
    A fingerprint of another kind only names the source type and categories, and no fingerprint names nothing:
    then the root is part of the key and the label too, so two roots never read as one data set.
    """
    data = payload["data"]
    name = str(data.get("name", "?"))
    fingerprint = data.get("fingerprint") or {}
    sha = fingerprint.get("sha256")
    root = _data_root(payload)
    if sha and fingerprint.get("kind", "content") == "content":
        return f"sha256:{sha}", f"{name} {sha[:SHORT_FINGERPRINT]}"
    if sha:
        where = f" @ {root}" if root else ""
        return f"sha256:{sha}@{root}", f"{name} {sha[:SHORT_FINGERPRINT]}{where}"
    return f"root:{root}", f"{name} @ {root}" if root else f"{name} (no fingerprint)"


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file() and path.name == "results.json":
            found.append(path)
        elif path.is_dir():
            # separate-setting runs keep per-category folders below; only the run's own results.json counts
            found.extend(p for p in sorted(path.rglob("results.json")) if "categories" not in p.parts[-3:-1])
        else:
            raise LeaderboardError(f"{path}: not a run folder or results.json")
    return found


def read_run(results: Path, payload: dict[str, Any]) -> Run:
    """One checked results.json as a :class:`Run` (older files without ``identity`` or ``source`` included)."""
    backbone = payload.get("backbone") or {}
    task = str(payload.get("task") or payload["config"].get("task_name") or TRAIN)
    fit = payload["timing"].get("fit_s")
    data_id, data_label = data_identity(payload)
    source = payload.get("source") or {}
    asked = (payload["config"].get("data") or {}).get("categories")
    cost = payload.get("cost") or {}
    return Run(
        folder=results.parent.resolve(),
        task=task,
        method=payload["method"],
        profile=payload.get("profile", "?"),
        setting=payload["setting"],
        data_name=str(payload["data"].get("name", "?")),
        data_id=data_id,
        data_label=data_label,
        categories=tuple(sorted(payload["metrics"]["per_category"])),
        all_categories=asked == "all",
        backbone=f"{backbone.get('name')} ({backbone.get('weights')})",
        seed=int(payload["seed"]),
        per_category=payload["metrics"]["per_category"],
        mean=payload["metrics"]["mean"],
        # an eval trains nothing: older engines wrote 0 for it, which must not count as a measured fit time
        fit_s=None if fit is None or task != TRAIN else float(fit),
        test_s=float(payload["timing"]["test_s"]),
        parameters=int((payload.get("parameters") or {}).get("total", 0)),
        throughput=payload.get("throughput_images_per_s"),
        commit=str(payload["git"].get("commit", "unknown"))[:12],
        config_hash=_config_hash(payload["config"]),
        variant=variant_hash(payload["config"]),
        variant_config=variant_settings(payload["config"]),
        identity=(payload.get("identity") or {}).get("digest"),
        source_identity=source.get("identity_digest"),
        source_run_dir=source.get("run_dir"),
        gflops=cost.get("gflops_per_image"),
        peak_memory_gib=cost.get("peak_cuda_allocated_gib", cost.get("peak_rss_gib")),
        tuned=(payload.get("search") or {}).get("tuned"),
        git=dict(payload["git"]),
        mtime=results.stat().st_mtime,
    )


def collect(paths: Iterable[str | Path]) -> list[Run]:
    """Read and check every results.json below ``paths`` (incomplete runs skipped, bad ones refused) and
    :func:`deduplicate` them."""
    runs = []
    for results in find_results(paths):
        try:
            payload = read_json(results)
        except (OSError, ValueError) as exc:
            raise LeaderboardError(f"{results}: unreadable ({exc})") from exc
        if payload.get("status") != "complete" or payload.get("task") == SEARCH_TRIAL:
            continue  # unfinished, or a search trial (validation numbers: search.json and its plots show them)
        check_results(payload, results)
        runs.append(read_run(results, payload))
    return sorted(deduplicate(runs), key=lambda r: (r.key, r.seed))


def _reruns(evaluation: Run, trained: Run) -> bool:
    """Whether an eval re-tests this training run on the same data with the same config: the same computation.

    The identity digests decide where both are recorded; older files fall back to the config variant alone.
    """
    if trained.task != TRAIN or trained.natural_key != evaluation.natural_key or trained.seed != evaluation.seed:
        return False
    return (
        evaluation.source_identity is None
        or trained.identity is None
        or (evaluation.source_identity == trained.identity)
    )


def _origin(evaluation: Run, trains: Sequence[Run]) -> str:
    """The task column of an eval that is its own row: which model it measured, as closely as the files say.

    Named by the trained run's row when that run was collected (so evals of several seeds aggregate), by the
    trained run's folder when not (one row per model: nothing says two such models are seeds of one config).
    """
    source = next((t for t in trains if evaluation.source_identity and t.identity == evaluation.source_identity),
                  None)  # fmt: skip
    if source is None and evaluation.source_run_dir:
        source = next((t for t in trains if str(t.folder) == str(Path(evaluation.source_run_dir).resolve())), None)
    if source is not None:
        cats = categories_label(source.categories, source.all_categories)
        return f"eval of {source.variant} trained on {source.data_label} [{cats}]"
    if evaluation.source_run_dir:
        return f"eval of {Path(evaluation.source_run_dir).name}"
    return "eval (trained run not recorded)"


def _same_numbers(a: Run, b: Run) -> bool:
    if sorted(a.per_category) != sorted(b.per_category):
        return False
    for category, metrics in a.per_category.items():
        other = b.per_category[category]
        for key in set(metrics) | set(other):
            x, y = metrics.get(key), other.get(key)
            if _nan(x) and _nan(y):
                continue
            if _nan(x) or _nan(y) or abs(x - y) > TOLERANCE:
                return False
    return True


def deduplicate(runs: Sequence[Run]) -> list[Run]:
    """One result per row and seed; the others are recorded on the kept run (:attr:`Run.dropped`).

    An eval that re-tests a collected training run on the same data joins that run's row; any other eval is its
    own row, labelled with the model it measured. Then, per row and seed: results that agree in every number
    are one computation read twice, so a training result is kept over an eval (it has the fit time), then the
    newest; results that disagree are kept newest-first, the older ones listed as conflicting.
    """
    trains = [r for r in runs if r.task == TRAIN]
    for run in runs:
        if run.task != TRAIN:
            run.row_task = TRAIN if any(_reruns(run, t) for t in trains) else _origin(run, trains)
    buckets: dict[tuple[RowKey, int], list[Run]] = {}
    for run in runs:
        buckets.setdefault((run.key, run.seed), []).append(run)
    kept = []
    for members in buckets.values():
        newest_first = sorted(members, key=lambda r: (r.mtime, str(r.folder)), reverse=True)
        agree = all(_same_numbers(newest_first[0], other) for other in newest_first[1:])
        winner = min(newest_first, key=lambda r: r.task != TRAIN) if agree else newest_first[0]
        reason = SAME_NUMBERS if agree else NUMBERS_DIFFER
        for other in newest_first:
            if other is not winner:
                winner.dropped.append(Dropped(other.folder, other.seed, other.task, winner.folder, reason))
                winner.dropped.extend(other.dropped)
        kept.append(winner)
    return kept


@dataclass
class Row:
    """One leaderboard row: a method × profile × setting × data × categories × backbone × variant × task,
    aggregated over seeds."""

    group: RowKey
    runs: list[Run]
    categories: list[str]
    cells: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # category|"mean" -> metric
    fit_s: float | None = None  # mean over the runs that trained; None when none did
    test_s: float = 0.0
    parameters: int = 0
    throughput: float | None = None
    gflops: float | None = None
    peak_memory_gib: float | None = None
    variant_label: str = DEFAULT_VARIANT  # set by :func:`aggregate` (:func:`describe_variant`)
    stats: Any = None  # :class:`adzoo.leaderboard.stats.RowStats`, set by ``stats.annotate`` (intervals, marks)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def seeds_label(self) -> str:
        """How many seeds and which: ``1 (seed 0)``, ``2 (0, 1)``; a bare ``0`` would read as "no seeds"."""
        seeds = sorted(self.seeds)
        if len(seeds) == 1:
            return f"1 (seed {seeds[0]})"
        shown = [str(s) for s in seeds]
        if len(shown) > SEEDS_SHOWN:
            shown = [*shown[: SEEDS_SHOWN - 2], "…", shown[-1]]
        return f"{len(seeds)} ({', '.join(shown)})"

    @property
    def categories_label(self) -> str:
        return categories_label(self.categories, any(r.all_categories for r in self.runs))

    @property
    def dropped(self) -> list[Dropped]:
        return [d for r in self.runs for d in r.dropped]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not _nan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: Sequence[Run], metrics: Sequence[str] = METRICS) -> list[Row]:
    """Mean ± std over seeds per category and for the category mean; checked against the runs' own means."""
    groups: dict[RowKey, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    rows = []
    for group, members in sorted(groups.items()):
        seeds = [r.seed for r in members]
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise LeaderboardError(
                f"{group}: seed(s) {twice} more than once ({', '.join(str(r.folder) for r in members)}); "
                "collect() all folders together so duplicates are dropped"
            )
        categories = sorted({c for r in members for c in r.per_category})
        for r in members:
            if sorted(r.per_category) != categories:
                raise LeaderboardError(
                    f"{r.folder}: categories {sorted(r.per_category)} differ from the other seeds' {categories}"
                )
        row = Row(group=group, runs=members, categories=categories)
        for category in categories:
            row.cells[category] = {
                m: _mean_std([r.per_category[category].get(m, math.nan) for r in members]) for m in metrics
            }
        row.cells["mean"] = {m: _mean_std([r.mean.get(m, math.nan) for r in members]) for m in metrics}
        # Self-check: the mean column must equal the mean over the category columns.
        for m in metrics:
            per_cat = [row.cells[c][m][0] for c in categories if not _nan(row.cells[c][m][0])]
            expected = sum(per_cat) / len(per_cat) if per_cat else math.nan
            got = row.cells["mean"][m][0]
            if not (_nan(expected) and _nan(got)) and abs(expected - got) > 1e-9:
                raise LeaderboardError(f"{group}: mean {m} {got} disagrees with its categories ({expected})")
        fits = [r.fit_s for r in members if r.fit_s is not None]
        row.fit_s = statistics.fmean(fits) if fits else None
        row.test_s = statistics.fmean(r.test_s for r in members)
        row.parameters = members[0].parameters
        throughputs = [r.throughput for r in members if r.throughput]
        row.throughput = statistics.fmean(throughputs) if throughputs else None
        row.gflops = _mean_of([r.gflops for r in members])
        row.peak_memory_gib = _mean_of([r.peak_memory_gib for r in members])
        rows.append(row)
    label_variants(rows)
    # A leaderboard reads best first: by data set and setting, then mean image AUROC (NaN last), then name.
    return sorted(rows, key=lambda r: (r.group.data, r.group.setting,
                                       -_sort_value(r.cells["mean"]["image_auroc"][0]), r.group))  # fmt: skip


def _mean_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def tuned_label(run: Run) -> str:
    """``tuned on validation (8 trials)`` for the test run of a search's best config, else empty."""
    if not run.tuned:
        return ""
    return f"tuned on validation ({run.tuned.get('trials', '?')} trials)"


def label_variants(rows: Sequence[Row]) -> None:
    """Set each row's :attr:`Row.variant_label`: what its config variant changes among its method's rows, and
    whether a search chose it (on validation data only)."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row.group.method, {})[row.group.variant] = row.runs[0].variant_config
    for row in rows:
        variants = by_method[row.group.method]
        row.variant_label = describe_variant(variants[row.group.variant], list(variants.values()))
        tags = sorted({tuned_label(r) for r in row.runs} - {""})
        if tags:
            row.variant_label = f"{row.variant_label}; {', '.join(tags)}"


def _sort_value(value: float) -> float:
    return -math.inf if _nan(value) else value
