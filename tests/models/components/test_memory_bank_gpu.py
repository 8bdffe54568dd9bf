"""The memory bank on CUDA: the coreset runs there and chooses what the CPU chooses; every back-end searches."""

from __future__ import annotations

import pytest
import torch

from adzoo.models.components import MemoryBank
from adzoo.models.components.coreset import greedy_coreset
from tests.models.components._mixture import gaussian_mixture

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _mixture(n: int, dim: int, seed: int) -> torch.Tensor:
    return gaussian_mixture(n, dim, seed, clusters=32, scale=3.0)


def test_the_coreset_on_cuda_is_the_cpu_one() -> None:
    x = _mixture(5000, 16, seed=0)
    cpu = greedy_coreset(x, 200, torch.Generator().manual_seed(1))
    gpu = greedy_coreset(x.cuda(), 200, torch.Generator().manual_seed(1))
    assert gpu.is_cuda
    assert (gpu.cpu() == cpu).float().mean().item() >= 0.99  # float32 rounding may swap a near-tie


@pytest.mark.parametrize("search", ["exact", "ivf", "hnsw"])
def test_every_search_back_end_works_from_a_cuda_bank(search: str) -> None:
    bank_x, queries = _mixture(4000, 32, seed=1), _mixture(300, 32, seed=2)
    reference = MemoryBank("l2", options={"search": search, "coreset_ratio": 0.5})
    reference.fit(bank_x)
    on_gpu = MemoryBank("l2", options={"search": search, "coreset_ratio": 0.5}).cuda()
    fill = on_gpu.start_fill()
    fill.add(bank_x.cuda())
    fill.finish("cuda")
    assert on_gpu.features.is_cuda
    distances, indices = on_gpu.search(queries.cuda(), k=2)
    assert distances.is_cuda
    assert (indices.cpu() == reference.search(queries, k=2)[1]).float().mean().item() >= 0.95
