"""PatchCore-grade memory banks at real data sizes: exact patch-kNN against PatchCore's coreset and faiss indices.

Run from the repo root (about 25 minutes on 2 CPU cores with the defaults)::

    .venv/bin/python bench/bench_memory_bank.py [--seed 0] [--threads 2] [--settings separate,unified]
        [--categories brick,grass,pill,screw] [--rows patchknn,patchcore,patchcore-1,patchcore-hnsw,patchcore-ivf]

It generates the MVTec-like set (``data=mvtec_like``: 256², 80 training images per category, 72 after the
validation split; ~45 test images per category) and runs every row below through ``adzoo-train`` in its own
process, in the separate and the unified setting. Each process's peak RSS comes from ``wait4``; fit and test
seconds, the bank's own figures and the metrics from the run's results.json. It also times one backbone pass
over the same images (decoding included), the unit of the issue's "at most 2× one backbone pass" goal, and the
recall@1 of the approximate indices against exact search over the same coreset.

Choose settings on ``--seed 1`` (the dev set) and report on ``--seed 0``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {
    "patchknn": ["method=patchknn"],
    "patchcore": ["method=patchcore"],
    "patchcore-1": ["method=patchcore", "bank.coreset_ratio=0.01"],
    "patchcore-hnsw": ["method=patchcore", "bank.search=hnsw"],
    "patchcore-ivf": ["method=patchcore", "bank.search=ivf"],
    "patchcore-fp16": ["method=patchcore", "bank.storage=float16"],
}
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def _train(overrides: list[str], threads: int) -> tuple[dict, int]:
    """One adzoo-train process; (results.json, its peak RSS in bytes)."""
    command = [str(ROOT / ".venv/bin/adzoo-train"), *overrides, f"torch_threads={threads}",
               "trainer.enable_progress_bar=false", "print_table=false", "callbacks.metrics.log_images=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        sys.exit(f"adzoo-train failed ({' '.join(overrides)}):\n{output[-3000:]}")
    bank_lines = [line for line in output.splitlines() if "memory bank:" in line]
    for line in bank_lines[:1] + bank_lines[-1:] if len(bank_lines) > 1 else bank_lines:
        print("   ", line.split("memory bank:", 1)[1].strip()[:200])
    latest = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("paths.log_dir="))) / "runs" / "latest"
    return json.loads((latest / "results.json").read_text()), usage.ru_maxrss * 1024


def _backbone_pass(common: list[str], threads: int) -> float:
    """Seconds for one pass of the patch-kNN backbone over the training and test images (decoding included)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    torch.set_num_threads(threads)
    overrides = [o for o in common if not o.startswith(("paths.", "hydra."))]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=["method=patchknn", *overrides, f"paths.cache_dir={common_cache(common)}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    backbone = instantiate(cfg.backbone).eval()
    start = time.perf_counter()
    with torch.no_grad():
        for loader in (datamodule.fit_once_dataloader(), datamodule.test_dataloader()):
            for batch in loader:
                backbone(batch["image"])
    return time.perf_counter() - start


def common_cache(common: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in common if o.startswith("paths.cache_dir="))


def _recall(common: list[str], search: str, threads: int) -> float:
    """recall@1 of ``search`` against exact search over the same coreset, on the test patches of one category."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from adzoo.models.components import MemoryBank
    from adzoo.models.patchknn.torch_model import PatchKNNModel

    torch.set_num_threads(threads)
    overrides = [o for o in common if not o.startswith(("paths.", "hydra.", "data.categories"))]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(
            "train",
            overrides=[
                "method=patchcore",
                *overrides,
                "data.categories=[screw]",
                f"paths.cache_dir={common_cache(common)}",
            ],
        )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    model = PatchKNNModel(instantiate(cfg.backbone).eval())

    def patches(loader) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.patches(model.embed(model.backbone(b["image"]))) for b in loader])

    train, test = patches(datamodule.fit_once_dataloader()), patches(datamodule.test_dataloader())
    exact = MemoryBank("l2", options={"coreset_ratio": 0.1})
    kept = exact.fit(train)
    approximate = MemoryBank("l2", options={"search": search})
    approximate.fit(train[kept])
    return float((exact.search(test, 1)[1] == approximate.search(test, 1)[1]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="generated set seed (1: dev set, 0: report set)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default="separate,unified")
    parser.add_argument("--categories", default="brick,grass,pill,screw")
    parser.add_argument("--rows", default="patchknn,patchcore,patchcore-1,patchcore-hnsw,patchcore-ivf")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="adzoo-bank-"))
    cache = os.environ.get("ADZOO_CACHE_DIR", str(Path.home() / ".cache/adzoo"))
    common = ["data=mvtec_like", f"data.source.seed={args.seed}", f"data.categories=[{args.categories}]",
              f"paths.cache_dir={cache}"]  # fmt: skip
    rows = args.rows.split(",")
    print(f"MVTec-like set, seed {args.seed}, categories {args.categories}; runs under {out}")
    results: dict[tuple[str, str], tuple[dict, int]] = {}
    for setting in args.settings.split(","):
        for row in rows:
            print(f"== {setting} {row}", flush=True)
            overrides = [*common, *ROWS[row], f"data.setting={setting}", f"paths.log_dir={out / setting / row}"]
            results[setting, row] = _train(overrides, args.threads)
    backbone_s = _backbone_pass([*common, "data.setting=separate"], args.threads)
    recalls = {s: _recall(common, s, args.threads) for s in ("hnsw", "ivf") if f"patchcore-{s}" in rows}

    print(f"\none backbone pass over the training and test images: {backbone_s:.1f} s")
    for search, recall in recalls.items():
        print(f"recall@1 of {search} (default probe) against exact search over the 10 % coreset, screw: {recall:.4f}")
    header = "| setting | row | bank | fit s | test s | test speed-up | fit+test / backbone pass | peak RSS GiB | "
    header += " | ".join(METRICS) + " |"
    print("\n" + header + "\n|" + " --- |" * (header.count("|") - 1))
    for (setting, row), (payload, rss) in results.items():
        timing = payload["timing"]
        reference = results.get((setting, "patchknn"), (payload, rss))[0]["timing"]["test_s"]
        banks = [g.get("memory_bank", {}) for g in timing["per_group"]]
        size = sum(b.get("size", 0) for b in banks)
        mean = payload["metrics"]["mean"]
        cells = [setting, row, f"{size:,}", f"{timing['fit_s']:.1f}", f"{timing['test_s']:.1f}",
                 f"{reference / timing['test_s']:.1f}×", f"{(timing['fit_s'] + timing['test_s']) / backbone_s:.2f}",
                 f"{rss / 1024**3:.2f}", *(f"{100 * mean[m]:.2f}" for m in METRICS)]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
