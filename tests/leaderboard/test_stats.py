"""Leaderboard uncertainty: the intervals cover, the histogram bootstrap is the exact one, paired tests behave."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from adzoo.leaderboard.build import build_leaderboard
from adzoo.leaderboard.collect import LeaderboardError, Row, RowKey, aggregate, collect
from adzoo.leaderboard.render import compact_table
from adzoo.leaderboard.stats import (
    CI_METRICS,
    BootstrapConfig,
    CategoryEvidence,
    RunEvidence,
    annotate,
    check_comparable,
    compare_evidence,
    evidence_intervals,
    friedman_nemenyi,
    interval_decimals,
)
from adzoo.metrics.functional import pixel_metrics
from adzoo.metrics.resample import PerImageHistograms, pixel_metrics_from_histograms
from tests.leaderboard.conftest import make_run

FAST = BootstrapConfig(n_resamples=200, seed=0)


def _image_evidence(pos: np.ndarray, neg: np.ndarray, folder: str = "run") -> RunEvidence:
    scores = np.concatenate([neg, pos])
    labels = np.concatenate([np.zeros(neg.size, dtype=np.int64), np.ones(pos.size, dtype=np.int64)])
    paths = [f"img{i:04d}" for i in range(scores.size)]
    return RunEvidence(Path(folder), {"cat": CategoryEvidence(paths, labels, scores)}, has_pixels=False)


def test_image_auroc_interval_covers_the_true_value() -> None:
    """Gaussian scores 1 sd apart: true AUROC = Φ(1/√2). Over 200 test sets the 95% interval covers it 90–99%."""
    true_auroc = norm.cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        ev = _image_evidence(rng.normal(1, 1, 40), rng.normal(0, 1, 40))
        low, high = evidence_intervals([ev], BootstrapConfig(n_resamples=200, seed=trial))["mean"]["image_auroc"]
        covered += low <= true_auroc <= high
    assert 0.90 <= covered / 200 <= 0.99


def _maps(rng: np.random.Generator, n: int, size: int = 12, shift: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent N(0,1) pixels, N(shift,1) inside a square defect on every other image: true P-AUROC known."""
    maps = rng.normal(0, 1, (n, size, size))
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(0, n, 2):
        r, c = rng.integers(0, size - 4, 2)
        masks[i, r : r + 4, c : c + 4] = True
    maps[masks] += shift
    return torch.from_numpy(maps), torch.from_numpy(masks)


def _pixel_evidence(maps: torch.Tensor, masks: torch.Tensor, bins: int = 1024) -> RunEvidence:
    acc = PerImageHistograms(bins)
    paths = [f"img{i:04d}" for i in range(maps.shape[0])]
    acc.update(maps, masks, paths)
    hist = acc.finish()
    assert hist is not None
    neg, pos, overlap = hist.dense()
    labels = masks.reshape(masks.shape[0], -1).any(dim=1).numpy().astype(np.int64)
    scores = maps.reshape(maps.shape[0], -1).amax(dim=1).numpy()
    cat = CategoryEvidence(paths, labels, scores, neg, pos, overlap, hist.regions)
    return RunEvidence(Path("run"), {"cat": cat}, has_pixels=True)


def test_pixel_auroc_interval_covers_the_true_value() -> None:
    true_auroc = norm.cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        ev = _pixel_evidence(*_maps(rng, 40))
        low, high = evidence_intervals([ev], BootstrapConfig(n_resamples=200, seed=trial))["mean"]["pixel_auroc"]
        covered += low <= true_auroc <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_histogram_resamples_agree_with_brute_force_recomputation() -> None:
    """Each resample from summed histograms equals the exact metric of the resampled maps, to the bin width."""
    rng = np.random.default_rng(2)
    maps, masks = _maps(rng, 10, size=16)
    ev = _pixel_evidence(maps, masks, bins=4096).categories["cat"]
    draws = rng.integers(0, 10, (30, 10))
    weights = np.stack([np.bincount(d, minlength=10) for d in draws])
    fast = pixel_metrics_from_histograms(weights, ev.neg, ev.pos, ev.overlap, ev.regions)
    for r, d in enumerate(draws):
        exact = pixel_metrics(maps[d], masks[d])
        for key in ("pixel_auroc", "pixel_aupro"):
            assert fast[key][r] == pytest.approx(exact[key], abs=2e-3)


def test_bca_falls_back_to_the_percentile_interval_where_every_resample_agrees() -> None:
    """Perfectly separated scores give AUROC 1.0 in every resample: BCa is undefined there, the interval is [1, 1]."""
    rng = np.random.default_rng(4)
    ev = _image_evidence(rng.normal(10, 1, 20), rng.normal(0, 1, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and scipy's degenerate-data warning does not reach the user
        intervals = evidence_intervals([ev], BootstrapConfig(n_resamples=100, method="BCa"))["mean"]
    assert intervals["image_auroc"] == (1.0, 1.0)
    assert all(math.isfinite(v) for pair in intervals.values() for v in pair)


def test_identical_rows_give_p_one_and_a_better_row_a_small_p() -> None:
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(0.5, 1, 30), rng.normal(0, 1, 30)
    a = _image_evidence(pos, neg, "a")
    same = compare_evidence([a], [_image_evidence(pos, neg, "b")], config=FAST)
    assert same.p == 1.0
    assert same.difference == 0.0
    better = compare_evidence([_image_evidence(pos + 3, neg, "c")], [a], config=FAST)
    assert better.difference > 0
    assert better.p < 0.01
    assert better.low > 0


def test_a_comparison_across_fingerprints_is_refused_naming_both() -> None:
    def row(data_id: str) -> Row:
        key = RowKey("uniad", "cpu", "unified", "d", ("cat",), "bb", "v", "train", data_id)
        return Row(group=key, runs=[], categories=["cat"])

    with pytest.raises(LeaderboardError, match=r"sha256:aaa.*sha256:bbb"):
        check_comparable(row("sha256:aaa"), row("sha256:bbb"))


def test_interval_decimals_follow_the_interval_width() -> None:
    assert interval_decimals(0.672, 0.810) == 1  # ±6.9 points → 74.5 [67.2, 81.0]
    assert interval_decimals(0.70, 0.71) == 2
    assert interval_decimals(0.2, 0.8) == 0


def test_bad_bootstrap_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"bootstrap\.method"):
        BootstrapConfig(method="jackknife")
    with pytest.raises(ValueError, match=r"bootstrap\.n_resamples"):
        BootstrapConfig(n_resamples=1)


@pytest.mark.integration
def test_real_runs_get_intervals_checked_against_results(runs_dir: Path) -> None:
    """The app's own runs: every row gets intervals that contain its value, from artifacts that reproduce it."""
    rows = aggregate(collect([runs_dir]))
    annotate(rows, FAST)
    for row in rows:
        assert row.stats is not None
        assert set(row.stats.interval["mean"]) == set(CI_METRICS)  # every metric column carries an interval
        for metric in ("image_auroc", "pixel_auroc", "pixel_aupro"):
            value = row.cells["mean"][metric][0]
            low, high = row.stats.interval["mean"][metric]
            assert low - 1e-9 <= value <= high + 1e-9 or math.isnan(value)
        if len(row.runs) > 1:  # two seeds: the row's interval also holds the seed spread
            test_low, test_high = row.stats.test_interval["mean"]["image_auroc"]
            assert math.isfinite(test_low) and math.isfinite(test_high)


@pytest.mark.integration
def test_a_real_leaderboard_shows_intervals_ranks_and_the_cd_diagram(
    runs_dir: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Three rows of the app's own runs on the same test images: the page draws the critical-difference diagram,
    every metric cell and the end-of-sweep table carry an interval."""
    third = make_run(tmp_path / "k3", cache_dir, ["model.k=3"])
    rows, markdown = build_leaderboard([runs_dir, third], tmp_path / "board", bootstrap=FAST)
    assert len(rows) == 3
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    assert 'alt="critical_difference_image_auroc"' in page
    assert (tmp_path / "board" / "plots" / "critical_difference_image_auroc.png").stat().st_size > 1000
    assert "Friedman" in markdown
    assert len(re.findall(r"<span class='ci'>[\d.]+–[\d.]+", page)) >= 3 * len(
        CI_METRICS
    )  # stacked interval cells in the main table
    interval = re.compile(r"\d+(\.\d+)? \[\d+(\.\d+)?, \d+(\.\d+)?\]")
    for line in compact_table(rows).splitlines()[2:]:
        assert len(interval.findall(line)) == 3  # I-AUROC, P-AUROC and AUPRO with their intervals


def test_friedman_needs_three_rows_and_ranks_them() -> None:
    def row(method: str, values: list[float]) -> Row:
        key = RowKey(method, "cpu", "unified", "d", ("a", "b", "c", "d"), "bb", "v", "train", "sha256:x")
        r = Row(group=key, runs=[], categories=["a", "b", "c", "d"])
        r.cells = {c: {"image_auroc": (v, 0.0)} for c, v in zip("abcd", values)}
        return r

    rows = [row("x", [0.9, 0.8, 0.95, 0.7]), row("y", [0.6, 0.5, 0.65, 0.4]), row("z", [0.7, 0.6, 0.75, 0.5])]
    result = friedman_nemenyi(rows)
    assert result is not None
    assert min(result.mean_ranks, key=result.mean_ranks.get).startswith("x ")
    assert result.friedman_p < 0.05
    assert friedman_nemenyi(rows[:2]) is None
