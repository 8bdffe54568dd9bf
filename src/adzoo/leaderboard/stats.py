"""How sure a leaderboard is: bootstrap intervals, paired comparisons and ranks, all from run artifacts.

What is resampled. A run's test set is a sample of images; its metrics would move if other images of the same
kind had been drawn. The bootstrap redraws, with replacement, the test images of each category **within each
label** (normal and anomalous separately: stratified, so every resample keeps the category's class balance and
each metric stays defined). Image metrics come from ``predictions.csv``; pixel metrics from ``pixel_hist.npz``
(per-image histograms, :mod:`adzoo.metrics.resample`), so a resample is a weighted sum of rows, not a re-sort of
every pixel. The resampling and the interval are :func:`scipy.stats.bootstrap`: BCa by default (it covered closer
to 95% than percentile in ``bench/bootstrap_coverage.py``, most of all for F1-max), percentile or basic on
request; ``n_resamples``, ``seed`` and the level come from the config.

Seeds. A row with several training seeds has two sources of error. The *test-set* interval resamples images
only and keeps the seeds fixed (the row's value is the mean over its seeds). The row's *interval* (the one
shown) is a two-level bootstrap: each resample also redraws the row's seeds with replacement, so it contains
both the test-set error and the seed-to-seed spread. The seed-to-seed standard deviation is reported on its own
as well (``± std``; CSV ``_std``). With few seeds the seed level is underestimated (a bootstrap over k seeds has
(k-1)/k of their variance); the interval says what the runs can say, no more.

Paired comparisons. Rows scored on the same test images (same data fingerprint, same categories, same image
paths) share every resample, so the bootstrap distribution of the difference of two rows is paired. Its
two-sided p-value is 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0)) with the +1 correction, and a group's p-values are Holm
adjusted (statsmodels). A row is "≈ best" when its adjusted p against the best row is at least ``alpha``.

Ranks. Across categories (and data sets), rows are ranked per block and compared with the Friedman test and the
Nemenyi post-hoc test (Demšar 2006), through scikit-posthocs, which also draws the critical-difference diagram.
"""

from __future__ import annotations

import csv
import functools
import gc
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from adzoo.leaderboard import names
from adzoo.leaderboard.collect import LeaderboardError, Row, Run, aggregate
from adzoo.metrics.functional import Groups, _ap_from_groups, _auroc_from_groups, _f1max_from_groups, _shift
from adzoo.metrics.resample import ARTIFACT, load_histograms, pixel_metrics_from_histograms

__all__ = [
    "CI_METRICS",
    "BootstrapConfig",
    "RowStats",
    "annotate",
    "check_comparable",
    "friedman_nemenyi",
    "interval_decimals",
    "load_evidence",
    "run_intervals",
]

IMAGE_CI = ("image_auroc", "image_ap", "image_f1max")
POOL_CI = ("image_auroc_avgpool",)  # from predictions.csv's avgpool_score, where the run wrote one
PIXEL_CI = ("pixel_auroc", "pixel_aupro", "pixel_ap", "pixel_f1max")
CI_METRICS = (*IMAGE_CI, *POOL_CI, *PIXEL_CI)  # every metric column of the leaderboard
COMPARED = ("image_auroc", "pixel_auroc", "pixel_aupro")  # the headline metrics get paired tests and marks
IMAGE_TOLERANCE = 1e-9  # predictions.csv reproduces results.json's image metrics exactly
CI_METHODS = ("percentile", "BCa", "basic")


@dataclass(frozen=True)
class BootstrapConfig:
    """The bootstrap's knobs (``hydra.callbacks.sweep_leaderboard.bootstrap``, ``adzoo-leaderboard --resamples``)."""

    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    method: str = "BCa"  # bench/bootstrap_coverage.py: BCa covers closer to the level than percentile
    alpha: float = 0.05  # paired tests: "≈ best" when the Holm-adjusted p is at least this
    batch: int = 250  # resamples evaluated at once (memory: batch × images × bins floats per category)

    def __post_init__(self) -> None:
        if self.n_resamples < 10:
            raise ValueError(f"bootstrap.n_resamples must be at least 10, got {self.n_resamples}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"bootstrap.confidence must be in (0.5, 1), got {self.confidence}")
        if self.method not in CI_METHODS:
            raise ValueError(f"bootstrap.method must be one of {CI_METHODS}, got {self.method!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"bootstrap.alpha must be in (0, 1), got {self.alpha}")

    def describe(self) -> str:
        return (
            f"{self.confidence:.0%} {self.method} bootstrap, {self.n_resamples} resamples (seed {self.seed}), "
            "stratified by label within each category"
        )


# -- evidence: what a run's artifacts say per image ------------------------------------------------------------


@dataclass
class CategoryEvidence:
    """One category of one run, images in path order: labels, image scores and (optionally) pooled-map scores
    and pixel histograms."""

    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray
    neg: np.ndarray | None = None  # (n, G) histograms over the bins the category uses, ascending score
    pos: np.ndarray | None = None
    overlap: np.ndarray | None = None
    regions: np.ndarray | None = None
    pool_scores: np.ndarray | None = None  # predictions.csv's avgpool_score

    @functools.cached_property
    def group_onehot(self) -> np.ndarray:
        """(n, G) membership of each image in its tie group (distinct scores, descending): the image curves'
        groups, computed once and reused by every resample."""
        return _tie_groups(self.scores)

    @functools.cached_property
    def pool_onehot(self) -> np.ndarray:
        assert self.pool_scores is not None
        return _tie_groups(self.pool_scores)


def _tie_groups(scores: np.ndarray) -> np.ndarray:
    distinct, inverse = np.unique(-scores, return_inverse=True)
    onehot = np.zeros((scores.size, distinct.size))
    onehot[np.arange(scores.size), inverse.reshape(-1)] = 1.0
    return onehot


@dataclass
class RunEvidence:
    folder: Path
    categories: dict[str, CategoryEvidence]
    has_pixels: bool


def _read_predictions(path: Path) -> dict[str, list[tuple[str, int, float, float]]]:
    """category -> (path, label, score, pooled score or NaN) per image."""
    out: dict[str, list[tuple[str, int, float, float]]] = {}
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                pool = float(row["avgpool_score"]) if row.get("avgpool_score") not in (None, "") else math.nan
                out.setdefault(row["category"], []).append(
                    (row["path"], int(row["label"]), float(row["pred_score"]), pool)
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise LeaderboardError(f"{path}:{line}: unreadable row ({exc})") from exc
    return out


def load_evidence(run: Run) -> RunEvidence | None:
    """A run's per-image artifacts, checked against its results.json; None when it has no predictions.csv.

    Refused (LeaderboardError) when the artifacts do not reproduce results.json: the image metrics recomputed
    from predictions.csv must equal it, and the pixel metrics from the histograms must lie within the
    histogram's resolution of it.
    """
    predictions = run.folder / "predictions.csv"
    if not predictions.is_file():
        return None
    per_category = _read_predictions(predictions)
    hist_path = run.folder / ARTIFACT
    try:
        histograms = load_histograms(hist_path) if hist_path.is_file() else {}
    except ValueError as exc:
        raise LeaderboardError(str(exc)) from exc
    categories: dict[str, CategoryEvidence] = {}
    for category in run.per_category:
        items = sorted(per_category.get(category, []))
        if not items:
            raise LeaderboardError(f"{predictions}: no rows for category {category!r} that results.json scores")
        paths = [item[0] for item in items]
        if len(set(paths)) != len(paths):
            raise LeaderboardError(f"{predictions}: category {category!r} lists an image twice")
        pool = np.asarray([item[3] for item in items])
        ev = CategoryEvidence(
            paths,
            np.asarray([item[1] for item in items], dtype=np.int64),
            np.asarray([item[2] for item in items]),
            pool_scores=pool if np.isfinite(pool).all() else None,
        )
        hist = histograms.get(category)
        if hist is not None:
            order = {p: i for i, p in enumerate(hist.paths)}
            if sorted(order) != paths:
                raise LeaderboardError(f"{hist_path}: category {category!r} holds other images than predictions.csv")
            neg, pos, overlap = hist.dense()
            take = np.asarray([order[p] for p in paths])
            ev.neg, ev.pos, ev.overlap, ev.regions = neg[take], pos[take], overlap[take], hist.regions[take]
        categories[category] = ev
        _check_against_results(run, category, ev, hist.bin_width if hist is not None else None, hist_path)
    has_pixels = all(c.neg is not None for c in categories.values())
    return RunEvidence(run.folder, categories, has_pixels)


def _check_against_results(run: Run, category: str, ev: CategoryEvidence, width: float | None, where: Path) -> None:
    """The self-check: the point values the bootstrap starts from are the ones results.json reports."""
    plain = np.ones((1, ev.labels.size))
    recorded = run.per_category[category]
    got = _image_metrics(ev, plain)
    for key in got:
        want = recorded.get(key, math.nan)
        if not (math.isnan(want) and math.isnan(got[key][0])) and abs(got[key][0] - want) > IMAGE_TOLERANCE:
            raise LeaderboardError(
                f"{run.folder / 'predictions.csv'}: {category} {key} recomputes to {got[key][0]:.6f}, "
                f"results.json says {want:.6f}"
            )
    if ev.neg is None or width is None:
        return
    pixel = _pixel_metrics(ev, plain)
    for key in PIXEL_CI:
        want = recorded.get(key, math.nan)
        if math.isnan(want) or math.isnan(pixel[key][0]):
            continue
        # Binning merges scores within one bin; at 1,024 bins over the category's range that moves a pixel metric
        # by well under a point on real maps. A gap of 5 points means the file belongs to other maps.
        if abs(pixel[key][0] - want) > 0.05:
            raise LeaderboardError(
                f"{where}: {category} {key} from the histograms is {pixel[key][0]:.4f}, results.json says "
                f"{want:.4f}: the histograms are not of this run's maps"
            )


# -- weighted metrics: R resamples at once ---------------------------------------------------------------------


def _image_metrics(ev: CategoryEvidence, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Image AUROC / AP / F1-max (and the pooled-map AUROC) of R weighted copies of the category's images ((R, n)
    integer weights)."""
    w = np.asarray(weights, dtype=np.float64)
    values = _score_metrics(ev.labels, ev.group_onehot, w, full=True)
    if ev.pool_scores is not None:
        values["image_auroc_avgpool"] = _score_metrics(ev.labels, ev.pool_onehot, w, full=False)["image_auroc"]
    return values


def _score_metrics(labels: np.ndarray, onehot: np.ndarray, w: np.ndarray, full: bool) -> dict[str, np.ndarray]:
    """The image curves of one score column: AUROC, plus AP and F1-max when ``full``."""
    tp = np.rint((w * labels) @ onehot).astype(np.int64)
    fp = np.rint((w * (1 - labels)) @ onehot).astype(np.int64)
    tp_ge, fp_ge = tp.cumsum(axis=1), fp.cumsum(axis=1)
    n_pos, n_neg = tp_ge[:, -1], fp_ge[:, -1]
    g = Groups(_shift(tp_ge), tp_ge, _shift(fp_ge), fp_ge)
    ok = (n_pos > 0) & (n_neg > 0)
    safe_pos, safe_neg = np.where(ok, n_pos, 1), np.where(ok, n_neg, 1)
    values = {"image_auroc": _auroc_from_groups(g, safe_pos, safe_neg)}
    if full:
        values.update(image_ap=_ap_from_groups(g, safe_pos), image_f1max=_f1max_from_groups(g, safe_pos))
    return {k: np.where(ok, v, np.nan) for k, v in values.items()}


def _pixel_metrics(ev: CategoryEvidence, weights: np.ndarray) -> dict[str, np.ndarray]:
    assert ev.neg is not None and ev.pos is not None and ev.overlap is not None and ev.regions is not None
    return pixel_metrics_from_histograms(weights, ev.neg, ev.pos, ev.overlap, ev.regions, keys=PIXEL_CI)


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(R, m) resampled indices → (R, n) multiplicities."""
    idx = np.atleast_2d(np.asarray(indices)).astype(np.int64)
    flat = idx + n * np.arange(idx.shape[0])[:, None]
    return np.bincount(flat.ravel(), minlength=n * idx.shape[0]).reshape(idx.shape[0], n)


# -- the bootstrap over a comparison group ---------------------------------------------------------------------


@dataclass
class RowStats:
    """A row's uncertainty: intervals per scope ("mean" or a category) and metric, and its paired tests."""

    interval: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # images and seeds
    test_interval: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # images only
    vs_best: dict[str, tuple[str, float]] = field(default_factory=dict)  # metric -> ("best" | "≈ best" | "", p_holm)
    note: str = ""


@dataclass
class Comparison:
    """A paired test of two rows on one metric: the bootstrap interval of a − b and the (Holm-adjusted) p."""

    metric: str
    a: int
    b: int
    difference: float
    low: float
    high: float
    p: float
    p_holm: float = math.nan


@dataclass
class GroupStats:
    """One comparison group: rows scored on the same test images."""

    rows: list[int]
    data: str
    comparisons: list[Comparison] = field(default_factory=list)


def check_comparable(a: Row, b: Row) -> None:
    """Refuse to compare rows that were not scored on the same test images, naming both fingerprints."""
    if a.group.data_id != b.group.data_id:
        raise LeaderboardError(
            f"refusing to compare {a.group.method} and {b.group.method}: they were scored on different test sets "
            f"({a.group.data_id} vs {b.group.data_id})"
        )
    if list(a.categories) != list(b.categories):
        raise LeaderboardError(
            f"refusing to compare {a.group.method} and {b.group.method}: categories {a.categories} vs {b.categories}"
        )


class _Plan:
    """What one scipy bootstrap call of a group resamples, and how to turn its samples into every output."""

    def __init__(self, categories: Sequence[str], evidence: list[list[RunEvidence]], seeds_resampled: bool) -> None:
        self.n_rows = len(evidence)
        self.evidence = evidence
        self.categories = list(categories)
        self.samples: list[np.ndarray] = []
        self.strata: list[tuple[str, int, np.ndarray]] = []  # (category, label, image indices)
        reference = evidence[0][0].categories
        for category in self.categories:
            labels = reference[category].labels
            for label in (0, 1):
                members = np.flatnonzero(labels == label)
                if members.size:
                    self.strata.append((category, label, members))
                    self.samples.append(np.arange(members.size, dtype=np.float64))
        self.seed_sample: dict[int, int] = {}  # row -> sample position of its seed indices
        if seeds_resampled:
            for r, runs in enumerate(evidence):
                if len(runs) > 1:
                    self.seed_sample[r] = len(self.samples)
                    self.samples.append(np.arange(len(runs), dtype=np.float64))
        every = [e for runs in evidence for e in runs]
        pooled = all(c.pool_scores is not None for e in every for c in e.categories.values())
        has = {**dict.fromkeys(IMAGE_CI, True), **dict.fromkeys(POOL_CI, pooled)}
        has.update(dict.fromkeys(PIXEL_CI, all(e.has_pixels for e in every)))
        self.metrics = [m for m in CI_METRICS if has[m]]
        self.scopes = [*self.categories, "mean"]

    def output_index(self, row: int, scope: str, metric: str) -> int:
        return (row * len(self.scopes) + self.scopes.index(scope)) * len(self.metrics) + self.metrics.index(metric)

    def statistic(self, *samples: np.ndarray, axis: int = -1) -> np.ndarray:
        one = all(s.ndim == 1 for s in samples)
        samples = tuple(np.atleast_2d(s) for s in samples)
        n_batch = max(s.shape[0] for s in samples)  # scipy's jackknife may pass an unaltered sample unbatched
        samples = tuple(np.broadcast_to(s, (n_batch, s.shape[-1])) for s in samples)
        weights: dict[str, np.ndarray] = {}
        for (category, _label, members), sample in zip(self.strata, samples):
            n = self.evidence[0][0].categories[category].labels.size
            w = weights.setdefault(category, np.zeros((n_batch, n)))
            w[:, members] += _counts(members[sample.astype(np.int64)], n)[:, members]
        out = np.empty((self.n_rows * len(self.scopes) * len(self.metrics), n_batch))
        for r, runs in enumerate(self.evidence):
            if r in self.seed_sample:
                seed_w = _counts(samples[self.seed_sample[r]], len(runs)) / samples[self.seed_sample[r]].shape[-1]
            else:
                seed_w = np.full((n_batch, len(runs)), 1.0 / len(runs))
            per_scope = {c: {m: np.zeros(n_batch) for m in self.metrics} for c in self.categories}
            for s, ev in enumerate(runs):
                for category in self.categories:
                    cat, w = ev.categories[category], weights[category]
                    if n_batch > 1 and (w == w[:1]).all():
                        w = w[:1]  # scipy's jackknife leaves one image out of one stratum: the others are unchanged
                    values = _image_metrics(cat, w)
                    if cat.neg is not None and any(m in PIXEL_CI for m in self.metrics):
                        values.update(_pixel_metrics(cat, w))
                    for m in self.metrics:
                        per_scope[category][m] += seed_w[:, s] * values[m]
            for category in self.categories:
                for m in self.metrics:
                    out[self.output_index(r, category, m)] = per_scope[category][m]
            for m in self.metrics:
                stacked = np.stack([per_scope[c][m] for c in self.categories])
                with np.errstate(all="ignore"):
                    out[self.output_index(r, "mean", m)] = _nanmean(stacked)
        return out[:, 0] if one else out


def _nanmean(stacked: np.ndarray) -> np.ndarray:
    """The macro mean as results.json takes it: over the categories where the metric is defined."""
    finite = np.isfinite(stacked)
    total = np.where(finite, stacked, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class _Bootstrap:
    """Per output of a plan: the interval ends, and the resampled values (paired tests read their differences)."""

    low: np.ndarray
    high: np.ndarray
    distribution: np.ndarray
    percentile_fallbacks: int = 0


def _bootstrap(plan: _Plan, config: BootstrapConfig, seed_offset: int) -> _Bootstrap:
    """:func:`scipy.stats.bootstrap` over the plan's strata. BCa is undefined where every resample gives one value
    (a category at AUROC 1.0 is common); there the percentile interval of the same resamples, that value, is used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        result = sps.bootstrap(
            tuple(plan.samples),
            plan.statistic,
            n_resamples=config.n_resamples,
            batch=config.batch,
            vectorized=True,
            paired=False,
            confidence_level=config.confidence,
            method=config.method,
            rng=np.random.default_rng([config.seed, seed_offset]),
        )
    low, high = np.array(result.confidence_interval.low), np.array(result.confidence_interval.high)
    distribution = result.bootstrap_distribution
    undefined = ~(np.isfinite(low) & np.isfinite(high)) & np.isfinite(distribution).all(axis=-1)
    if undefined.any():
        tails = [50 * (1 - config.confidence), 50 * (1 + config.confidence)]
        low[undefined], high[undefined] = np.percentile(distribution[undefined], tails, axis=-1)
    return _Bootstrap(low, high, distribution, int(undefined.sum()))


def _p_two_sided(differences: np.ndarray) -> float:
    """Two-sided bootstrap p of "no difference": twice the smaller tail at 0, with the +1 correction."""
    d = differences[np.isfinite(differences)]
    if d.size == 0:
        return math.nan
    low, high = (np.count_nonzero(d <= 0) + 1) / (d.size + 1), (np.count_nonzero(d >= 0) + 1) / (d.size + 1)
    return min(1.0, 2 * min(low, high))


def _holm(p_values: list[float], multipletests: Any) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels). Its Holm branch calls ``gc.collect()``, which walks every object of
    a process that has torch loaded (0.1 s a call); frozen objects are skipped, so they are frozen around it."""
    gc.freeze()
    try:
        return multipletests(p_values, method="holm")[1]
    finally:
        gc.unfreeze()


def _comparison_groups(rows: Sequence[Row]) -> dict[tuple[str, tuple[str, ...]], list[int]]:
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row.group.data_id, tuple(row.categories)), []).append(i)
    return groups


def _check_same_images(rows: Sequence[Row], evidence: list[list[RunEvidence]]) -> None:
    reference = evidence[0][0]
    for row, runs in zip(rows, evidence):
        for ev in runs:
            for category, cat in ev.categories.items():
                if cat.paths != reference.categories[category].paths or not np.array_equal(
                    cat.labels, reference.categories[category].labels
                ):
                    raise LeaderboardError(
                        f"{ev.folder} and {reference.folder} share the data fingerprint {row.group.data_id} but not "
                        f"the test images of {category!r}: refusing to pair them"
                    )


def annotate(rows: Sequence[Row], config: BootstrapConfig | None = None) -> list[GroupStats]:
    """Set ``row.stats`` on every row (intervals, "≈ best" marks) and return the paired comparisons per group.

    Rows without per-image artifacts (older runs) get no interval and a note saying why.
    """
    from statsmodels.stats.multitest import multipletests

    config = config or BootstrapConfig()
    groups_out: list[GroupStats] = []
    for g, (_key, members) in enumerate(sorted(_comparison_groups(rows).items())):
        evidence: list[list[RunEvidence]] = []
        usable: list[int] = []
        for i in members:
            loaded = [load_evidence(run) for run in rows[i].runs]
            if any(e is None for e in loaded):
                rows[i].stats = RowStats(note="no predictions.csv: no interval")
                continue
            evidence.append([e for e in loaded if e is not None])
            usable.append(i)
        if not usable:
            continue
        group_rows = [rows[i] for i in usable]
        for other in group_rows[1:]:
            check_comparable(group_rows[0], other)
        _check_same_images(group_rows, evidence)
        categories = group_rows[0].categories
        both = _bootstrap(_Plan(categories, evidence, seeds_resampled=True), config, 2 * g)
        plan = _Plan(categories, evidence, seeds_resampled=False)
        test_only = _bootstrap(plan, config, 2 * g + 1) if any(len(r.runs) > 1 for r in group_rows) else both
        point = plan.statistic(*plan.samples)
        for r, i in enumerate(usable):
            row_stats = RowStats()
            for scope in plan.scopes:
                for m in plan.metrics:
                    k = plan.output_index(r, scope, m)
                    row_stats.interval.setdefault(scope, {})[m] = (
                        float(both.low[k]),
                        float(both.high[k]),
                    )
                    row_stats.test_interval.setdefault(scope, {})[m] = (
                        float(test_only.low[k]),
                        float(test_only.high[k]),
                    )
            if not all(e.has_pixels for e in evidence[r]):
                row_stats.note = "no pixel_hist.npz: image intervals only"
            rows[i].stats = row_stats
        group = GroupStats(rows=usable, data=group_rows[0].group.data)
        distribution = both.distribution
        for m in COMPARED:
            if m not in plan.metrics:
                continue
            k_of = {r: plan.output_index(r, "mean", m) for r in range(len(usable))}
            values = {r: point[k_of[r]] for r in k_of if np.isfinite(point[k_of[r]])}
            if len(values) < 2:
                continue
            family = []
            for a in sorted(values):
                for b in sorted(values):
                    if a < b:
                        d = distribution[k_of[a]] - distribution[k_of[b]]
                        lo, hi = np.nanpercentile(d, [50 * (1 - config.confidence), 50 * (1 + config.confidence)])
                        family.append(
                            Comparison(m, usable[a], usable[b], values[a] - values[b], lo, hi, _p_two_sided(d))
                        )
            adjusted = _holm([c.p for c in family], multipletests)
            for c, p in zip(family, adjusted):
                c.p_holm = float(p)
            group.comparisons.extend(family)
            best = max(values, key=lambda r: values[r])
            for r in values:
                if r == best:
                    rows[usable[r]].stats.vs_best[m] = ("best", 1.0)
                    continue
                c = next(c for c in family if {c.a, c.b} == {usable[r], usable[best]})
                mark = "≈ best" if c.p_holm >= config.alpha else ""
                rows[usable[r]].stats.vs_best[m] = (mark, c.p_holm)
        groups_out.append(group)
    return groups_out


def evidence_intervals(
    evidence: list[RunEvidence], config: BootstrapConfig | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """Intervals (scope -> metric -> (low, high)) of one row given as its seeds' evidence."""
    config = config or BootstrapConfig()
    plan = _Plan(sorted(evidence[0].categories), [evidence], seeds_resampled=True)
    result = _bootstrap(plan, config, 0)
    return {
        scope: {
            m: (
                float(result.low[plan.output_index(0, scope, m)]),
                float(result.high[plan.output_index(0, scope, m)]),
            )
            for m in plan.metrics
        }
        for scope in plan.scopes
    }


def compare_evidence(
    a: list[RunEvidence], b: list[RunEvidence], metric: str = "image_auroc", config: BootstrapConfig | None = None
) -> Comparison:
    """Paired bootstrap of the macro-mean ``metric`` of row a minus row b, scored on the same test images."""
    config = config or BootstrapConfig()
    for ev in b:
        for category, cat in ev.categories.items():
            ref = a[0].categories.get(category)
            if ref is None or ref.paths != cat.paths or not np.array_equal(ref.labels, cat.labels):
                raise LeaderboardError(f"{ev.folder} and {a[0].folder} were not scored on the same test images")
    plan = _Plan(sorted(a[0].categories), [a, b], seeds_resampled=True)
    result = _bootstrap(plan, config, 0)
    ka, kb = plan.output_index(0, "mean", metric), plan.output_index(1, "mean", metric)
    point = plan.statistic(*plan.samples)
    d = result.distribution[ka] - result.distribution[kb]
    lo, hi = np.nanpercentile(d, [50 * (1 - config.confidence), 50 * (1 + config.confidence)])
    return Comparison(metric, 0, 1, float(point[ka] - point[kb]), float(lo), float(hi), _p_two_sided(d))


def run_intervals(run: Run, config: BootstrapConfig | None = None) -> dict[str, tuple[float, float]] | None:
    """The mean-scope intervals of one run (the per-job summary line); None without artifacts."""
    rows = aggregate([run])
    annotate(rows, config)
    stats = rows[0].stats
    if stats is None or "mean" not in stats.interval:
        return None
    return stats.interval["mean"]


# -- ranks across categories and data sets ---------------------------------------------------------------------


@dataclass
class RankResult:
    metric: str
    entries: list[str]
    blocks: list[str]
    mean_ranks: dict[str, float]
    friedman_p: float
    nemenyi: Any  # pandas DataFrame of pairwise p-values
    note: str = ""


def _entry_label(row: Row) -> str:
    g = row.group
    variant = getattr(row, "variant_label", "") or ""
    extra = "" if variant in ("", "default") else f" {variant}"
    task = "" if g.task == "train" else f" ({g.task})"
    return f"{g.method} [{g.profile}, {g.setting}]{extra}{task}"


def friedman_nemenyi(rows: Sequence[Row], metric: str = "image_auroc") -> RankResult | None:
    """Friedman test over blocks (data set × category) and the Nemenyi post-hoc test, via scikit-posthocs.

    An entry is a row's method, profile, setting, variant and task; a block is one category of one data set
    where every entry has a value. Needs at least 3 entries and 2 blocks; None otherwise.
    """
    import pandas as pd
    import scikit_posthocs as sp

    table: dict[str, dict[str, float]] = {}
    for row in rows:
        label = _entry_label(row)
        for category in row.categories:
            value = row.cells.get(category, {}).get(metric, (math.nan, math.nan))[0]
            block = f"{row.group.data} / {category}"
            if block in table.get(label, {}):
                return None  # two rows would be one entry: the ranking is ambiguous
            table.setdefault(label, {})[block] = value
    frame = pd.DataFrame(table)  # blocks × entries
    frame = frame.dropna(axis=0, how="any")
    if frame.shape[1] < 3 or frame.shape[0] < 2:
        return None
    friedman = sps.friedmanchisquare(*(frame[c].to_numpy() for c in frame.columns))
    nemenyi = sp.posthoc_nemenyi_friedman(frame)
    ranks = frame.rank(axis=1, ascending=False).mean(axis=0)
    return RankResult(
        metric=metric,
        entries=list(frame.columns),
        blocks=list(frame.index),
        mean_ranks={str(k): float(v) for k, v in ranks.items()},
        friedman_p=float(friedman.pvalue),
        nemenyi=nemenyi,
    )


def cd_diagram(result: RankResult, out: Path) -> Path:
    """The critical-difference diagram of a ranking (scikit-posthocs), as a PNG."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import scikit_posthocs as sp

    from adzoo.leaderboard.plots import save_figure  # sets the Agg back-end

    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.35 * len(result.entries)))
    sp.critical_difference_diagram(pd.Series(result.mean_ranks), result.nemenyi, ax=ax)
    ax.set_title(
        f"{names.title(result.metric)}: mean rank over {len(result.blocks)} blocks "
        f"(Friedman p = {result.friedman_p:.3g}; bars join rows Nemenyi cannot tell apart at 5%)",
        fontsize=8,
    )
    return save_figure(fig, out)


# -- formatting --------------------------------------------------------------------------------------------------


def interval_decimals(low: float, high: float) -> int:
    """Decimals (of a value in %) that an interval supports: about two significant digits of its half-width."""
    half = 50 * (high - low)
    if not math.isfinite(half) or half <= 0:
        return 2
    return int(min(2, max(0, 1 - math.floor(math.log10(half)))))


@dataclass
class Uncertainty:
    """Everything a leaderboard says about its own noise: the method, the paired tests, the ranking."""

    config: BootstrapConfig
    groups: list[GroupStats]
    ranks: RankResult | None = None
    diagram: Path | None = None

    def text(self) -> str:
        return (
            f"Intervals: {self.config.describe()}. Each row's interval also redraws its training seeds (a two-level "
            "bootstrap); the CSV's _test_lo/_test_hi columns hold the test-set interval alone, _std the seed-to-seed "
            "spread. Rows on the same test images are compared by a paired bootstrap of the difference (two-sided p, "
            f"Holm-adjusted within each data set and metric): 'best' marks the top row, '≈ best' every row whose "
            f"adjusted p against it is at least {self.config.alpha}."
        )

    def comparisons_table(self, rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
        header = ["data", "metric", "row a", "row b", "a − b [interval]", "p", "p (Holm)"]
        body = []
        for group in self.groups:
            for c in group.comparisons:
                d = interval_decimals(c.low, c.high)
                body.append(
                    [
                        group.data,
                        names.header(c.metric),
                        _entry_label(rows[c.a]),
                        _entry_label(rows[c.b]),
                        f"{100 * c.difference:+.{d}f} [{100 * c.low:+.{d}f}, {100 * c.high:+.{d}f}]",
                        f"{c.p:.3g}",
                        f"{c.p_holm:.3g}",
                    ]
                )
        return header, body

    def ranks_text(self) -> str:
        if self.ranks is None:
            return (
                "Ranks: not computed (the Friedman test needs at least 3 rows with values on at least 2 common "
                "categories)."
            )
        r = self.ranks
        order = sorted(r.mean_ranks.items(), key=lambda kv: kv[1])
        listed = "; ".join(f"{name} {rank:.2f}" for name, rank in order)
        return (
            f"Ranks ({names.title(r.metric)}, 1 = best) over {len(r.blocks)} blocks (data set × category): {listed}. "
            f"Friedman p = {r.friedman_p:.3g}; the Nemenyi post-hoc test (scikit-posthocs) joins rows it cannot tell "
            "apart at 5% in the critical-difference diagram."
        )


def assess(rows: Sequence[Row], config: BootstrapConfig | None = None, plots_dir: Path | None = None) -> Uncertainty:
    """:func:`annotate` the rows, rank them, and draw the critical-difference diagram into ``plots_dir``."""
    config = config or BootstrapConfig()
    unc = Uncertainty(config, annotate(rows, config), friedman_nemenyi(rows))
    if unc.ranks is not None and plots_dir is not None:
        unc.diagram = cd_diagram(unc.ranks, Path(plots_dir) / f"critical_difference_{unc.ranks.metric}.png")
    return unc
