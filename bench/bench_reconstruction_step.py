"""Cost of one training step of the shared reconstruction transformer (UniAD/ADTR) per token grid and width.

Issue 13 asks for 224²/14×14, 256²/16×16 and stride-8 grids on the CPU profile. With cached frozen features
a step is the transformer alone, so its cost decides which grids fit the 10-minute CPU budget. This times
forward + backward + AdamW on random tokens of Lite0's 192 tap channels and prints the steps that fit.
``--precision bf16`` runs the forward under CPU/GPU autocast in bfloat16 (Lightning's ``bf16-mixed``): on CPUs
with AMX or AVX512-BF16 the matmuls run in oneDNN's bf16 kernels, the loss and AdamW stay in float32.

    .venv/bin/python bench/bench_reconstruction_step.py [--threads 2] [--budget-s 600] [--precision 32|bf16]
"""

from __future__ import annotations

import argparse
import time

import torch

from adzoo.models.components.reconstruction import ReconstructionTransformer

# (grid side, neighbour mask, hidden, FFN, heads, batch): the CPU profile first, then the larger grids.
CASES = [
    (8, 5, 256, 1024, 8, 8),  # CPU profile: 128² at stride 16
    (14, 7, 256, 1024, 8, 8),  # the paper's grid: 224² at stride 16
    (16, 7, 256, 1024, 8, 8),  # 256² at stride 16, or 128² at stride 8
    (16, 7, 256, 1024, 8, 4),
    (14, 7, 128, 512, 4, 8),
    (16, 7, 128, 512, 4, 8),
]


def step_seconds(
    grid: int, mask: int, hidden: int, ffn: int, heads: int, batch: int, repeats: int, precision: str = "32"
) -> float:
    torch.manual_seed(0)
    net = ReconstructionTransformer(
        192, (grid, grid), hidden_dim=hidden, ffn_dim=ffn, num_heads=heads, neighbour_mask_size=mask
    )
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    tokens = torch.randn(batch, grid * grid, 192)
    for i in range(repeats + 2):  # two warm-up steps
        if i == 2:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            rebuilt = net(tokens)
        loss = (rebuilt.float() - tokens).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16: autocast, as bf16-mixed")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training budget to convert into steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'grid':>6} {'mask':>4} {'hidden':>6} {'ffn':>5} {'batch':>5} {'ms/step':>8} {'steps in budget':>15}")
    for grid, mask, hidden, ffn, heads, batch in CASES:
        seconds = step_seconds(grid, mask, hidden, ffn, heads, batch, args.repeats, args.precision)
        steps = int(args.budget_s / seconds)
        print(f"{grid:>3}x{grid:<2} {mask:>4} {hidden:>6} {ffn:>5} {batch:>5} {1000 * seconds:>8.0f} {steps:>15}")


if __name__ == "__main__":
    main()
