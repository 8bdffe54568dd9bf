"""PatchCore's greedy coreset (Roth et al., CVPR 2022, §3.2, Algorithm 1): a sparse random projection, then
iterative farthest-point (k-center) selection.

The selection is the textbook greedy: start from a seeded random point, then repeatedly add the point farthest
from everything chosen so far. Nothing N×N is ever formed: a step is one mat-vec against the newest centre and
a running minimum, so memory is the (N, d) projection plus three N-vectors, on whatever device holds them.

On the CPU a step is memory-bound (it reads the whole projection: 82k×128 floats ≈ 42 MB, about 1 ms here), so
the cost is linear in N·size·d. Exact triangle-inequality pruning was tried and dropped: on real patch features
(EfficientNet-Lite0 taps 2+3 on the MVTec-like set) 45 % of the points were still touched after 2,000 steps, and
the bookkeeping made it 3-6× slower than the plain loop.
"""

from __future__ import annotations

import math

import torch


def sparse_random_projection(dim_in: int, dim_out: int, generator: torch.Generator) -> torch.Tensor:
    """A (dim_in, dim_out) very sparse random projection (Li et al., 2006; what PatchCore's samplers use).

    Density 1/sqrt(dim_in); the nonzero entries are ±sqrt(1/(density·dim_out)), so squared norms are preserved
    in expectation (Johnson-Lindenstrauss)."""
    density = 1.0 / math.sqrt(dim_in)
    draw = torch.rand(dim_in, dim_out, generator=generator)
    sign = torch.where(draw < density / 2, -1.0, torch.where(draw < density, 1.0, 0.0))
    return sign * math.sqrt(1.0 / (density * dim_out))


def greedy_coreset(projected: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices, in selection order, of a ``size``-point greedy k-center coreset of the (N, d) rows of ``projected``.

    The first point is drawn from ``generator``; each next one is the row with the largest distance to its nearest
    chosen row (ties: the lowest index)."""
    n = projected.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"coreset size must be in [1, {n}], got {size}")
    device = projected.device
    x = projected.float().contiguous()
    sq = (x * x).sum(dim=1)
    selected = torch.empty(size, dtype=torch.long, device=device)
    nearest = torch.full((n,), math.inf, device=device)  # squared distance to the nearest chosen row, shifted
    step_sq = torch.empty(n, device=device)
    nxt = torch.randint(n, (1,), generator=generator).to(device)[0]
    for step in range(size):
        selected[step] = nxt
        # ‖x‖² − 2x·c + ‖c‖² in two passes (addmv, then the constant), so no (N, d) temporary is made.
        torch.addmv(sq, x, x[nxt], alpha=-2.0, out=step_sq)
        step_sq += sq[nxt]
        torch.minimum(nearest, step_sq, out=nearest)
        nxt = nearest.argmax()
    return selected


def coreset_size(n: int, ratio: float, max_size: int | None) -> int:
    """How many of ``n`` points a bank keeps: ``ceil(ratio·n)``, capped by ``max_size``."""
    size = max(1, math.ceil(ratio * n))
    return min(size, max_size) if max_size is not None else size
