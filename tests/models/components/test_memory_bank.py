"""The faiss memory bank: exact search, self-exclusion by index, errors, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from adzoo.models.components import MemoryBank

# The searches run in float32 (faiss through BLAS, torch through cdist or a matmul), each in its own summation
# order, so their scores are compared with the exact float64 ones to this: the scores here are O(1-10), where
# float32 resolution is ~1e-6 and the observed error 8e-7; 2e-5 leaves a margin for other BLAS and CPUs.
SCORE_TOL = 2e-5


def _exact(queries: torch.Tensor, bank_x: torch.Tensor, metric: str) -> torch.Tensor:
    """(M, N) float64 score of every bank entry for every query, as the metric defines it."""
    q, b = queries.double(), bank_x.double()
    if metric == "cosine":
        q, b = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(b, dim=1)
    return torch.cdist(q, b) if metric == "l2" else q @ b.T


def _assert_exact_neighbours(scores: torch.Tensor, indices: torch.Tensor, exact: torch.Tensor, metric: str) -> None:
    """The k returned neighbours are the exact ones, in order, with their scores to ``SCORE_TOL``.

    Indices are compared exactly only because the data has no near-tie: every gap between consecutive exact
    scores up to the (k+1)-th exceeds 2·SCORE_TOL (asserted), so no float32 rounding can reorder them.
    """
    k = indices.shape[1]
    ordered = exact.topk(k + 1, dim=1, largest=metric != "l2")
    gaps = (ordered.values[:, 1:] - ordered.values[:, :-1]).abs()
    assert float(gaps.min()) > 2 * SCORE_TOL, "near-tied neighbours: pick other seeds"
    assert torch.equal(indices, ordered.indices[:, :k])
    torch.testing.assert_close(scores.double(), ordered.values[:, :k], atol=SCORE_TOL, rtol=0)


def test_l2_search_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    bank_x, queries = torch.randn(200, 16, generator=g), torch.randn(30, 16, generator=g)
    bank = MemoryBank("l2")
    bank.fit(bank_x)
    dist, idx = bank.search(queries, k=3)
    _assert_exact_neighbours(dist, idx, _exact(queries, bank_x, "l2"), "l2")


def test_cosine_returns_similarities() -> None:
    bank = MemoryBank("cosine")
    bank.fit(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    sim, idx = bank.search(torch.tensor([[3.0, 0.1]]), k=2)
    assert idx.tolist() == [[0, 1]]
    assert sim[0, 0] == pytest.approx(3.0 / (9.01**0.5), abs=1e-5)


def test_exclusion_is_by_index_and_keeps_duplicates() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])  # rows 0 and 1 are duplicates
    bank = MemoryBank("l2")
    bank.fit(x)
    dist, idx = bank.search(x, k=1, exclude=torch.arange(4))
    assert idx[:, 0].tolist() == [1, 0, 3, 2]
    assert dist[0, 0] == 0.0 and dist[1, 0] == 0.0  # the duplicate stays a neighbour
    assert (idx[:, 0] != torch.arange(4)).all()


def test_k_larger_than_bank_and_empty_bank() -> None:
    bank = MemoryBank("l2")
    with pytest.raises(RuntimeError, match="empty"):
        bank.search(torch.zeros(1, 2), k=1)
    bank.fit(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="larger than the memory bank"):
        bank.search(torch.zeros(1, 2), k=4)
    with pytest.raises(ValueError, match="metric"):
        MemoryBank("manhattan")


def test_state_dict_round_trip() -> None:
    bank = MemoryBank("l2")
    bank.fit(torch.randn(10, 4))
    other = MemoryBank("l2")
    other.load_state_dict(bank.state_dict())
    q = torch.randn(3, 4)
    # bitwise: the same float32 bank restored exactly, the same queries, the same search in one process
    assert torch.equal(other.search(q, 2)[1], bank.search(q, 2)[1])


def test_torch_search_matches_faiss() -> None:
    g = torch.Generator().manual_seed(3)
    for metric in ("l2", "cosine", "ip"):
        bank = MemoryBank(metric)
        bank_x = torch.randn(100, 8, generator=g)
        bank.fit(bank_x)
        queries = torch.randn(7, 8, generator=g)
        exact = _exact(queries, bank_x, metric)
        _assert_exact_neighbours(*bank.search(queries, k=3), exact, metric)  # faiss
        _assert_exact_neighbours(*bank.torch_search(queries, k=3), exact, metric)  # what exported models run
