"""How much the frozen-feature cache saves: N images through tf_efficientnet_lite0 for several epochs.

Run from the repo root:  PYTHONPATH=src python bench/bench_backbone_cache.py [--n 64 --size 128 --epochs 5]

Compares (a) the backbone every epoch, (b) FeatureCache in memory, (c) a second run that reads the disk
store written by a first run, and reports the cost of content-hashing the images (the default keys).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch

from adzoo.backbones import FeatureCache, build_backbone, content_keys


def _epochs(step: Callable[[torch.Tensor], object], images: torch.Tensor, epochs: int, batch: int) -> list[float]:
    """Wall time of each epoch of ``step`` over ``images`` in fixed batches."""
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(0, images.shape[0], batch):
            step(images[i : i + batch])
        times.append(time.perf_counter() - start)
    return times


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:6.3f}" for t in times) + f"  | total {sum(times):6.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    args = parser.parse_args()

    ext = build_backbone(args.backbone, out_indices=(0, 1, 2, 3), weights="packaged")
    images = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(
        f"{args.backbone} (packaged), {args.n} images {args.size}x{args.size}, batch {args.batch}, "
        f"{args.epochs} epochs, torch threads {torch.get_num_threads()}"
    )
    ext(images[: args.batch])  # warm-up (allocator, oneDNN kernel choice)

    start = time.perf_counter()
    for _ in range(10):
        content_keys(images)
    hash_ms = (time.perf_counter() - start) / 10 / args.n * 1e3
    print(f"content hash (blake2b of float32 bytes): {hash_ms:.3f} ms per image")

    direct = _epochs(ext, images, args.epochs, args.batch)
    print(f"no cache      per epoch [s]: {_fmt(direct)}")

    cache = FeatureCache(ext)
    cached = _epochs(cache, images, args.epochs, args.batch)
    print(f"memory cache  per epoch [s]: {_fmt(cached)}   stats {cache.stats}")

    with tempfile.TemporaryDirectory() as tmp:
        first_run = FeatureCache(ext, disk_dir=tmp)
        write = _epochs(first_run, images, 1, args.batch)
        second_run = FeatureCache(ext, disk_dir=tmp)  # new process/run: empty memory, warm disk
        read = _epochs(second_run, images, args.epochs, args.batch)
        print(f"disk, run 1   epoch 1    [s]: {_fmt(write)}")
        print(f"disk, run 2   per epoch [s]: {_fmt(read)}   stats {second_run.stats}")

    print(f"speed-up, memory cache over {args.epochs} epochs: {sum(direct) / sum(cached):.1f}x")
    print(f"speed-up, epochs 2..{args.epochs} alone: {sum(direct[1:]) / max(sum(cached[1:]), 1e-9):.0f}x")
    print(f"speed-up, run 2 from disk over {args.epochs} epochs: {sum(direct) / sum(read):.1f}x")


if __name__ == "__main__":
    main()
