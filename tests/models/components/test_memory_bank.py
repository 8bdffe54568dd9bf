"""The faiss memory bank: exact search, self-exclusion by index, errors, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from adzoo.models.components import MemoryBank
from tests.models.components._mixture import gaussian_mixture

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


# --- bank.*: coreset, approximate search, fp16 storage, the memory check --------------------------------------


def _mixture(n: int, dim: int, seed: int) -> torch.Tensor:
    return gaussian_mixture(n, dim, seed, clusters=64, scale=3.0)


@pytest.mark.parametrize("search", ["ivf", "hnsw"])
@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_approximate_search_is_exact_at_full_probe_and_recalls_at_the_default(search: str, storage: str) -> None:
    bank_x, queries = _mixture(6000, 32, seed=0), _mixture(500, 32, seed=1)
    exact = MemoryBank("l2")
    exact.fit(bank_x)
    truth = exact.search(queries, k=1)[1][:, 0]
    default = MemoryBank("l2", options={"search": search, "storage": storage})
    default.fit(bank_x)
    recall = (default.search(queries, k=1)[1][:, 0] == truth).float().mean().item()
    assert recall >= 0.95, f"{search}/{storage}: recall@1 {recall:.3f} at the default probe"
    full = {"search": search, "storage": storage, "nlist": 64, "nprobe": 64, "ef_search": 6000}
    complete = MemoryBank("l2", options=full)
    complete.fit(bank_x)
    found = complete.search(queries, k=1)[1][:, 0]
    if storage == "float32":  # the exact neighbour; a different index only at a float32 tie (other kernels)
        distances = torch.cdist(queries.double(), bank_x.double())
        rows = torch.arange(len(queries))
        gap = (distances[rows, found] - distances[rows, truth]).abs()
        assert float(gap.max()) <= SCORE_TOL and (found == truth).float().mean().item() >= 0.99
    else:  # fp16 storage moves distances by ~1e-3 relative: only near-ties may swap
        assert (found == truth).float().mean().item() >= 0.99


def test_an_approximate_index_is_kept_with_the_checkpoint() -> None:
    bank_x, queries = _mixture(3000, 16, seed=2), _mixture(200, 16, seed=3)
    for search in ("ivf", "hnsw"):
        bank = MemoryBank("cosine", options={"search": search})
        bank.fit(bank_x)
        state = bank.state_dict()
        assert state["index_blob"].numel() > 0
        other = MemoryBank("cosine", options={"search": search})
        other.load_state_dict(state)
        assert torch.equal(other.search(queries, 3)[1], bank.search(queries, 3)[1])
        rebuilt = MemoryBank("cosine", options={"search": search})
        rebuilt.fit(bank_x)  # built again from the same vectors: the same index (single-threaded build)
        assert torch.equal(rebuilt.state_dict()["index_blob"], state["index_blob"])


def test_coreset_bank_keeps_the_chosen_rows_and_reports_them(caplog) -> None:
    bank_x = _mixture(2000, 40, seed=4)
    bank = MemoryBank("l2", options={"coreset_ratio": 0.05, "projection_dim": 16, "seed": 3})
    with caplog.at_level("INFO", logger="adzoo.models.components.memory_bank"):
        kept = bank.fit(bank_x)
    assert len(bank) == 100 and torch.equal(bank.features, bank_x[kept])
    again = MemoryBank("l2", options={"coreset_ratio": 0.05, "projection_dim": 16, "seed": 3})
    assert torch.equal(again.fit(bank_x), kept)
    line = caplog.records[-1].getMessage()
    assert "100 of 2,000 vectors" in line and "greedy coreset 5.00 %" in line and "peak held by the bank" in line
    assert bank.report["peak_bytes"] > 0 and bank.report["coreset_seconds"] >= 0


def test_streamed_chunks_in_float16_give_the_bank_of_one_fit() -> None:
    bank_x = _mixture(1000, 24, seed=5)
    options = {"storage": "float16", "coreset_ratio": 0.2, "seed": 1}
    whole = MemoryBank("l2", options=options)
    whole.fit(bank_x)
    streamed = MemoryBank("l2", options=options)
    fill = streamed.start_fill()
    for chunk in bank_x.split(128):
        fill.add(chunk)
    assert fill.held_bytes == 1000 * 24 * 2  # held in float16 while the pass runs
    fill.finish()
    assert streamed.features.dtype == torch.float16 and torch.equal(streamed.features, whole.features)


def test_bad_bank_options_name_the_key() -> None:
    from adzoo.errors import ConfigError
    from adzoo.models.components import BankOptions, BankTooLargeError

    for options, key in [
        ({"coreset_ratio": 0.0}, "bank.coreset_ratio"),
        ({"coreset_ratio": 1.5}, "bank.coreset_ratio"),
        ({"search": "annoy"}, "bank.search"),
        ({"storage": "int8"}, "bank.storage"),
        ({"nlist": 4, "nprobe": 8}, "bank.nprobe=8 is above the list count bank.nlist=4"),
        ({"max_size": 0}, "bank.max_size"),
        ({"colour": "red"}, "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            BankOptions.from_config(options)
    with pytest.raises(ConfigError, match=r"bank\.max_size=50 is above the number of vectors to choose from \(20\)"):
        MemoryBank("l2", options={"max_size": 50}).fit(torch.randn(20, 4))
    with pytest.raises(ConfigError, match=r"bank\.nlist=30 is above the bank size \(20"):
        MemoryBank("l2", options={"search": "ivf", "nlist": 30}).fit(torch.randn(20, 4))
    fill = MemoryBank("l2", options={"max_memory_gb": 0.001}).start_fill()
    with pytest.raises(BankTooLargeError, match=r"needs an estimated 1\.13 GiB, but 0\.00 GiB is bank\.max_memory_gb"):
        # 0.57 GiB of float32 chunks and faiss's copy of them: refused before a chunk is held
        fill.expect(rows=1_000_000, dim=152)
    assert fill.held_bytes == 0
