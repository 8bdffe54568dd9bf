"""The faiss memory bank: exact search, self-exclusion by index, errors, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from adzoo.models.components import MemoryBank


def test_l2_search_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    bank_x, queries = torch.randn(200, 16, generator=g), torch.randn(30, 16, generator=g)
    bank = MemoryBank("l2")
    bank.fit(bank_x)
    dist, idx = bank.search(queries, k=3)
    ref = torch.cdist(queries, bank_x).topk(3, largest=False)
    assert torch.equal(idx, ref.indices)
    torch.testing.assert_close(dist, ref.values, atol=1e-4, rtol=1e-4)


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
    assert torch.equal(other.search(q, 2)[1], bank.search(q, 2)[1])


def test_torch_search_matches_faiss() -> None:
    g = torch.Generator().manual_seed(3)
    for metric in ("l2", "cosine", "ip"):
        bank = MemoryBank(metric)
        bank.fit(torch.randn(100, 8, generator=g))
        queries = torch.randn(7, 8, generator=g)
        faiss_scores, faiss_idx = bank.search(queries, k=3)
        torch_scores, torch_idx = bank.torch_search(queries, k=3)
        assert torch.equal(faiss_idx, torch_idx)
        torch.testing.assert_close(faiss_scores, torch_scores, atol=1e-4, rtol=1e-4)
