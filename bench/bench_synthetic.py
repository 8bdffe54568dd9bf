"""Time generating the default synthetic data set, and show it is not trivially separable.

Run: ``PYTHONPATH=src python bench/bench_synthetic.py [--seed 0] [--image-size 128] [--no-baseline]``.

Prints the wall time of a cold generation into a fresh temp dir, the file count and size on disk,
the time of the cached (no-op) second call, and -- unless ``--no-baseline`` -- the image AUROC of a
naive detector on global statistics (per-channel mean/std, mean gradient magnitude; diagonal-Gaussian
distance to the train set). Subtle defects should sit near 0.5 there; that is the point of the set.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from adzoo.data.synthetic import SUBTLE_DEFECTS, SYNTHETIC_DEFECTS, generate_synthetic_dataset


def _features(path: Path) -> np.ndarray:
    """Global statistics a lazy baseline would use: they ignore where in the image anything happens."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    gy, gx = np.gradient(img.mean(-1))
    return np.concatenate([img.mean((0, 1)), img.std((0, 1)), [np.hypot(gy, gx).mean()]])


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half; no sklearn needed."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def _baseline(root: Path) -> None:
    print("\nnaive global-statistics detector, image AUROC (subtle defect marked *):")
    for cat, defects in SYNTHETIC_DEFECTS.items():
        train = np.stack([_features(p) for p in sorted((root / cat / "train" / "good").glob("*.png"))])
        mu, sd = train.mean(0), train.std(0) + 1e-6

        def score(paths: list[Path], mu: np.ndarray = mu, sd: np.ndarray = sd) -> np.ndarray:
            return np.array([np.sqrt((((_features(p) - mu) / sd) ** 2).sum()) for p in paths])

        good = score(sorted((root / cat / "test" / "good").glob("*.png")))
        cells = []
        for d in defects:
            auc = _auroc(good, score(sorted((root / cat / "test" / d).glob("*.png"))))
            cells.append(f"{d}{'*' if SUBTLE_DEFECTS.get(cat) == d else ''}={auc:.2f}")
        print(f"  {cat:8s} " + "  ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="adzoo-synth-bench-") as tmp:
        root = Path(tmp) / "synthetic"
        t0 = time.perf_counter()
        generate_synthetic_dataset(root, seed=args.seed, image_size=args.image_size)
        cold = time.perf_counter() - t0
        files = [p for p in root.rglob("*") if p.is_file()]
        nbytes = sum(p.stat().st_size for p in files)
        blocks = sum(p.stat().st_blocks for p in files) * 512
        t0 = time.perf_counter()
        generate_synthetic_dataset(root, seed=args.seed, image_size=args.image_size)
        cached = time.perf_counter() - t0
        print(f"generate (cold):   {cold:.2f} s")
        print(f"generate (cached): {cached * 1e3:.2f} ms")
        print(f"files:             {len(files)} (incl. manifest)")
        print(f"size:              {nbytes / 2**20:.2f} MiB of data, {blocks / 2**20:.2f} MiB on disk")
        if not args.no_baseline:
            _baseline(root)


if __name__ == "__main__":
    main()
