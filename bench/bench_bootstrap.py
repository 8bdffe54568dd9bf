"""Wall time of the leaderboard's bootstrap, and the size of the per-image artifacts it reads.

    .venv/bin/python bench/bench_bootstrap.py                      # 200 generated 256² maps
    .venv/bin/python bench/bench_bootstrap.py --sweep logs/sweeps/demo   # a finished sweep's rows

Prints: the seconds for ``--resamples`` resamples of all eight metric columns (with the paired tests, and the ranks
apart), and the pixel_hist.npz size scaled to 1,000 images. Goal (issue 14): under 10 s on 2 CPU cores, and under
5 % of the sweep's own test time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def generated(n_maps: int, size: int, resamples: int, bins: int) -> None:
    from adzoo.leaderboard.stats import BootstrapConfig, CategoryEvidence, RunEvidence, evidence_intervals
    from adzoo.metrics.resample import PerImageHistograms, save_histograms

    rng = np.random.default_rng(0)
    # smooth maps (upsampled 16×16 noise, like a real model's) with a square defect on every other image
    coarse = torch.from_numpy(rng.normal(0, 1, (n_maps, 1, 16, 16))).float()
    maps = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[:, 0]
    masks = torch.zeros(n_maps, size, size, dtype=torch.bool)
    for i in range(0, n_maps, 2):
        r, c = rng.integers(0, size - 40, 2)
        masks[i, r : r + 40, c : c + 40] = True
    maps[masks] += 1.0
    paths = [f"img{i:05d}" for i in range(n_maps)]
    acc = PerImageHistograms(bins)
    t0 = time.perf_counter()
    for b in range(0, n_maps, 32):
        acc.update(maps[b : b + 32], masks[b : b + 32], paths[b : b + 32])
    hist = acc.finish()
    assert hist is not None
    t_hist = time.perf_counter() - t0
    target = Path("/tmp/bench_bootstrap_hist.npz")
    save_histograms(target, {"cat": hist})
    size_mb = target.stat().st_size / 1e6 * 1000 / n_maps
    neg, pos, overlap = hist.dense()
    labels = masks.reshape(n_maps, -1).any(dim=1).numpy().astype(np.int64)
    scores = maps.reshape(n_maps, -1).amax(dim=1).numpy().astype(np.float64)
    ev = RunEvidence(Path("bench"), {"cat": CategoryEvidence(paths, labels, scores, neg, pos, overlap, hist.regions)},
                     has_pixels=True)  # fmt: skip
    t0 = time.perf_counter()
    intervals = evidence_intervals([ev], BootstrapConfig(n_resamples=resamples))
    t_boot = time.perf_counter() - t0
    print(f"{n_maps} maps of {size}², {bins} bins: histograms {t_hist:.2f} s (at test time), "
          f"pixel_hist.npz {size_mb:.1f} MB per 1,000 images")  # fmt: skip
    print(f"{resamples} resamples of 8 metrics: {t_boot:.2f} s")
    for metric, (low, high) in intervals["mean"].items():
        print(f"  {metric}: [{100 * low:.1f}, {100 * high:.1f}]")


def sweep(folder: Path, resamples: int) -> None:
    from adzoo.leaderboard import aggregate, collect
    from adzoo.leaderboard.stats import BootstrapConfig, annotate, friedman_nemenyi

    rows = aggregate(collect([folder]))
    test_s = sum(r.test_s * len(r.runs) for r in rows)
    t0 = time.perf_counter()
    annotate(rows, BootstrapConfig(n_resamples=resamples))
    boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    friedman_nemenyi(rows)
    ranks = time.perf_counter() - t0
    sizes = [p.stat().st_size for r in rows for run in r.runs for p in [run.folder / "pixel_hist.npz"] if p.is_file()]
    images = sum(
        len(run.folder.joinpath("predictions.csv").read_text().splitlines()) - 1 for r in rows for run in r.runs
    )
    print(f"{len(rows)} rows: {resamples} resamples of 8 metrics with the paired tests in {boot:.2f} s "
          f"({100 * boot / test_s:.1f} % of the sweep's own test time, {test_s:.0f} s); Friedman/Nemenyi ranks "
          f"{ranks:.2f} s (mostly importing scikit-posthocs and matplotlib)")  # fmt: skip
    if sizes and images:
        print(f"pixel_hist.npz: {sum(sizes) / images * 1000 / 1e6:.1f} MB per 1,000 test images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=Path, default=None, help="a sweep folder with finished runs")
    parser.add_argument("--maps", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--bins", type=int, default=1024)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sweep is not None:
        sweep(args.sweep, args.resamples)
    else:
        generated(args.maps, args.size, args.resamples, args.bins)


if __name__ == "__main__":
    main()
