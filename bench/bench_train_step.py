"""Training and eval step time of the reconstruction methods at their paper sizes, one column per speed-up.

Run from the repo root (about 10 minutes on 1 CPU thread)::

    .venv/bin/python bench/bench_train_step.py [--threads 1] [--repeats 3] [--methods uniad,adtr,cap,transformaly]
        [--columns recompute,cache,cache+bf16,cache+compile] [--device cpu]

Each method is composed from its paper experiment (``experiment=<method>_paper_mvtec``: UniAD 224², 272
channels on a 14×14 grid, 4+4 layers, batch 8; ADTR 256², batch 16) with random weights
(``backbone.weights=none``): the timing does not depend on them. A training step is the LightningModule's own
``training_step``, backward and an AdamW step; an eval step is its forward under ``no_grad``. The columns:

- ``recompute``: the backbone runs on every step, in float32 (what the official code does);
- ``cache``: the frozen-feature cache is warm (the same batch every step), float32;
- ``cache+bf16``: and the step under ``torch.autocast`` in bfloat16 (Lightning's ``bf16-mixed``);
- ``cache+fp16`` (CUDA only): the same in float16 (``16-mixed``);
- ``cache+compile``: and ``model.compile=true`` (the trained parts through ``torch.compile``; n/a where it cannot).

The attention runs through ``F.scaled_dot_product_attention`` wherever dropout allows (eval, GPU, p=0); on
the CPU in training the attention dropout takes the one-baddbmm path (``models/components/attention.py``).
CAP fits its bank on the batch first (its training reads precomputed tables, so it has no ``recompute`` column
and its speed-up is against ``cache``). Transformaly runs at batch 4 (the paper's is 32, at 384² with ViT-B/16)
and has no eval column: its eval needs the Gaussian densities, fitted after the last epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT_CONF = Path(__file__).resolve().parents[1] / "conf"
COLUMNS = ("recompute", "cache", "cache+bf16", "cache+compile")
#: on CUDA also float16 autocast (Lightning's ``16-mixed``, whose GradScaler costs nothing measurable here)
CUDA_COLUMNS = ("recompute", "cache", "cache+bf16", "cache+fp16", "cache+compile")
#: the paper experiment of each method, and overrides that keep a CPU run finite
EXPERIMENTS = {
    "uniad": ("uniad_paper_mvtec", []),
    "adtr": ("adtr_paper_mvtec", []),
    "cap": ("cap_paper_mvtec", []),  # ResNet-152, 224², batch 16
    "transformaly": ("transformaly_paper", ["data.batch_size=4"]),  # ViT-B/16 at 384²; the paper's batch is 32
}


def paper_config(method: str):
    """The method's paper experiment, composed with random backbone weights (and the CPU overrides above)."""
    from hydra import compose, initialize_config_dir

    from adzoo._config import register_resolvers

    register_resolvers()
    experiment, extra = EXPERIMENTS[method]
    with initialize_config_dir(config_dir=str(ROOT_CONF), version_base=None):
        return compose("train", overrides=[f"experiment={experiment}", "backbone.weights=none", *extra])


def build(method: str, device: str):
    """The method's LightningModule at its paper size and a batch of random images for it."""
    from hydra.utils import instantiate

    cfg = paper_config(method)
    module = instantiate(cfg.model).to(device)
    size, batch = int(cfg.data.image_size), int(cfg.data.batch_size)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    return module, {"image": images, "path": [f"train/{i:03d}.png" for i in range(batch)]}


def timed(step: Callable[[], None], repeats: int, device: str) -> float:
    step()  # warm-up: fills the cache, compiles, allocates
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(method: str, column: str, repeats: int, device: str) -> tuple[float, float] | str:
    module, batch = build(method, device)
    if method == "cap":
        if column == "recompute":  # its training never sees the backbone (methods.md: the tables are fixed)
            return "n/a (features once, by design)"
        features, paths = module.pooled_features([batch])  # the batch is the training set
        module.fit_bank(features, paths)
    module.use_feature_cache = column != "recompute"
    if column == "cache+compile":  # the model.compile=true switch: the trained parts, compiled in place
        module.compile_model = True
        if not module.compile_trained_parts():
            return "n/a (no compiler)"
    optimiser = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    dtype = {"cache+bf16": torch.bfloat16, "cache+fp16": torch.float16}.get(column)
    autocast = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def train_step() -> None:
        module.train()
        with autocast:
            loss = module.training_step(batch, 0)
        optimiser.zero_grad(set_to_none=True)
        loss.float().backward()
        optimiser.step()

    def eval_step() -> None:
        module.eval()
        with torch.no_grad(), autocast:
            module(batch["image"])

    try:
        train = timed(train_step, repeats, device)
        if method == "transformaly":  # its eval needs the Gaussian densities, fitted after the last epoch
            return train, float("nan")
        return train, timed(eval_step, repeats, device)
    except Exception as exc:  # e.g. inductor failing to build on this machine
        return f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="uniad,adtr,cap,transformaly")
    parser.add_argument("--columns", default=None, help="default: every column the device has")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer here: the modules' logging is a no-op
    columns = (args.columns or ",".join(CUDA_COLUMNS if args.device == "cuda" else COLUMNS)).split(",")
    where = f"{args.device}, {args.threads} thread(s)" if args.device == "cpu" else args.device
    print(f"step seconds ({where}, torch {torch.__version__}); train = training_step + backward + AdamW")
    print("| method | size | " + " | ".join(f"{c} train | {c} eval" for c in columns) + " | train speed-up |")
    print("|" + " --- |" * (2 + 2 * len(columns) + 1))
    for method in args.methods.split(","):
        cfg = paper_config(method)  # sizes only: building the model here would cost a backbone's construction
        size, batch = int(cfg.data.image_size), int(cfg.data.batch_size)
        cells, train = [], {}
        for column in columns:
            result = measure(method, column, args.repeats, args.device)
            if isinstance(result, str):
                cells += [result, ""]
            else:
                train[column] = result[0]
                cells += [f"{result[0]:.2f}", "n/a" if result[1] != result[1] else f"{result[1]:.2f}"]
        best = min(train.values()) if train else float("nan")
        base = train.get("recompute", train.get("cache"))
        speed = f"{base / best:.2f}×" if base else ""
        print(f"| {method} | {size}², batch {batch} | " + " | ".join(cells) + f" | {speed} |", flush=True)


if __name__ == "__main__":
    main()
