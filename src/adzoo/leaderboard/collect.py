"""Collect finished runs from their artifacts (``results.json``), check them, and aggregate over seeds.

Nothing here reads a number from anywhere but a run folder: every cell of a leaderboard traces back to the
run folders, git commits and config hashes listed with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adzoo.utils.io import read_json

REQUIRED_KEYS = ("status", "method", "setting", "data", "backbone", "seed", "metrics", "timing", "git", "config")
METRICS = (
    "image_auroc", "image_ap", "image_f1max",
    "image_auroc_avgpool", "image_ap_avgpool", "image_f1max_avgpool",
    "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro",
)  # fmt: skip
TOLERANCE = 1e-9


class LeaderboardError(ValueError):
    """A run's artifacts are inconsistent or incomplete: no table is written from them."""


@dataclass
class Run:
    """One finished run, read from its folder."""

    folder: Path
    method: str
    profile: str
    setting: str
    data: str
    backbone: str
    seed: int
    per_category: dict[str, dict[str, float]]
    mean: dict[str, float]
    fit_s: float
    test_s: float
    parameters: int
    throughput: float | None
    commit: str
    config_hash: str
    variant: str
    mtime: float

    @property
    def group(self) -> tuple[str, str, str, str, str, str]:
        """Rows of a leaderboard: runs differing only by seed are aggregated."""
        return (self.method, self.profile, self.setting, self.data, self.backbone, self.variant)


# Keys that do not change what a run computes (where it writes, how it logs), and the seed: runs whose
# configs agree on everything else are seeds of one leaderboard row.
NON_IDENTITY_TOP = ("paths", "force", "print_table", "logger", "tags", "sweep_name", "ckpt_path", "task_name")
NON_IDENTITY_NESTED = {
    "trainer": ("enable_progress_bar", "log_every_n_steps", "default_root_dir"),
    "data": ("num_workers",),
}


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _without_seed(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_seed(v) for k, v in node.items() if k != "seed"}
    if isinstance(node, list):
        return [_without_seed(v) for v in node]
    return node


def variant_hash(config: dict[str, Any]) -> str:
    """Hash of everything that defines the computation except the seed: the row a run belongs to."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_TOP}
    for key, drop in NON_IDENTITY_NESTED.items():
        if isinstance(identity.get(key), dict):
            identity[key] = {k: v for k, v in identity[key].items() if k not in drop}
    return _config_hash(_without_seed(identity))[:8]


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


def _nan(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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


def collect(paths: Iterable[str | Path]) -> list[Run]:
    """Read and check every results.json below ``paths``; incomplete runs are skipped, bad ones refused."""
    runs: dict[str, Run] = {}
    for results in find_results(paths):
        try:
            payload = read_json(results)
        except (OSError, ValueError) as exc:
            raise LeaderboardError(f"{results}: unreadable ({exc})") from exc
        if payload.get("status") != "complete":
            continue
        check_results(payload, results)
        backbone = payload.get("backbone") or {}
        run = Run(
            folder=results.parent.resolve(),
            method=payload["method"],
            profile=payload.get("profile", "?"),
            setting=payload["setting"],
            data=payload["data"].get("name", "?"),
            backbone=f"{backbone.get('name')} ({backbone.get('weights')})",
            seed=int(payload["seed"]),
            per_category=payload["metrics"]["per_category"],
            mean=payload["metrics"]["mean"],
            fit_s=float(payload["timing"]["fit_s"]),
            test_s=float(payload["timing"]["test_s"]),
            parameters=int((payload.get("parameters") or {}).get("total", 0)),
            throughput=payload.get("throughput_images_per_s"),
            commit=str(payload["git"].get("commit", "unknown"))[:12],
            config_hash=_config_hash(payload["config"]),
            variant=variant_hash(payload["config"]),
            mtime=results.stat().st_mtime,
        )
        # The same config twice (a rerun elsewhere): keep the latest.
        key = run.config_hash
        if key not in runs or runs[key].mtime < run.mtime:
            runs[key] = run
    return sorted(runs.values(), key=lambda r: (r.group, r.seed))


@dataclass
class Row:
    """One leaderboard row: a method × profile × setting × data × backbone, aggregated over seeds."""

    group: tuple[str, str, str, str, str, str]
    runs: list[Run]
    categories: list[str]
    cells: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # category|"mean" -> metric
    fit_s: float = 0.0
    test_s: float = 0.0
    parameters: int = 0
    throughput: float | None = None

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not _nan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: Sequence[Run], metrics: Sequence[str] = METRICS) -> list[Row]:
    """Mean ± std over seeds per category and for the category mean; checked against the runs' own means."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    rows = []
    for group, members in sorted(groups.items()):
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
        row.fit_s = statistics.fmean(r.fit_s for r in members)
        row.test_s = statistics.fmean(r.test_s for r in members)
        row.parameters = members[0].parameters
        throughputs = [r.throughput for r in members if r.throughput]
        row.throughput = statistics.fmean(throughputs) if throughputs else None
        rows.append(row)
    # A leaderboard reads best first: by data set and setting, then mean image AUROC (NaN last), then name.
    return sorted(rows, key=lambda r: (r.group[3], r.group[2], -_sort_value(r.cells["mean"]["image_auroc"][0]),
                                       r.group))  # fmt: skip


def _sort_value(value: float) -> float:
    return -math.inf if _nan(value) else value
