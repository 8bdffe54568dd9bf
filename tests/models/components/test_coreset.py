"""PatchCore's greedy coreset: the farthest-point property, seeding, and the projection it searches in."""

from __future__ import annotations

import math

import pytest
import torch

from adzoo.models.components.coreset import coreset_size, greedy_coreset, sparse_random_projection
from tests.models.components._mixture import gaussian_mixture


def _clustered(n: int, dim: int, seed: int) -> torch.Tensor:
    return gaussian_mixture(n, dim, seed, clusters=8, scale=4.0)


def test_each_chosen_point_is_the_farthest_from_those_already_chosen() -> None:
    x = _clustered(400, 6, seed=0)
    chosen = greedy_coreset(x, 40, torch.Generator().manual_seed(1))
    assert len(set(chosen.tolist())) == 40
    exact = torch.cdist(x.double(), x.double())
    for step in range(1, 40):
        nearest = exact[:, chosen[:step]].min(dim=1).values  # float64 distance to the chosen set
        # float32 rounding in the mat-vec may swap two points whose distances agree to ~1e-5
        assert nearest[chosen[step]] >= nearest.max() - 1e-4, f"step {step} did not take the farthest point"
        assert nearest[chosen[step]] > 0


def test_the_same_seed_gives_the_same_coreset_and_another_seed_another_start() -> None:
    x = _clustered(300, 5, seed=2)
    first = greedy_coreset(x, 30, torch.Generator().manual_seed(7))
    assert torch.equal(first, greedy_coreset(x, 30, torch.Generator().manual_seed(7)))
    other = greedy_coreset(x, 30, torch.Generator().manual_seed(8))
    assert first[0] != other[0]


def test_the_coreset_covers_every_cluster_that_random_sampling_misses() -> None:
    """What the coreset is for: a rare normal pattern (10 of 1,000 points) keeps a representative."""
    g = torch.Generator().manual_seed(3)
    common = torch.randn(990, 4, generator=g)
    rare = torch.randn(10, 4, generator=g) * 0.1 + 20.0
    x = torch.cat([common, rare])
    chosen = greedy_coreset(x, 10, torch.Generator().manual_seed(0))
    assert (chosen >= 990).any()


def test_projection_is_sparse_and_roughly_norm_preserving() -> None:
    g = torch.Generator().manual_seed(0)
    projection = sparse_random_projection(400, 128, g)
    density = (projection != 0).float().mean().item()
    assert abs(density - 1 / math.sqrt(400)) < 0.01
    x = torch.randn(200, 400, generator=g)
    ratio = (x @ projection).norm(dim=1) / x.norm(dim=1)
    assert abs(ratio.mean().item() - 1.0) < 0.1


def test_sizes() -> None:
    assert coreset_size(1000, 0.1, None) == 100
    assert coreset_size(1000, 0.1, 50) == 50
    assert coreset_size(5, 0.01, None) == 1
    with pytest.raises(ValueError, match="coreset size"):
        greedy_coreset(torch.zeros(3, 2), 4, torch.Generator())
