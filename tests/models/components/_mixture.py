"""Random data with structure, as patch features have: a seeded Gaussian mixture (unit noise around scaled centres).

iid Gaussians in many dimensions are the adversarial case for any approximate index (no probe short of all of
them finds the neighbour), so the bank tests draw from this instead.
"""

from __future__ import annotations

import torch


def gaussian_mixture(n: int, dim: int, seed: int, clusters: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = scale * torch.randn(clusters, dim, generator=g)
    return centres[torch.randint(clusters, (n,), generator=g)] + torch.randn(n, dim, generator=g)
