"""FLOPs per image and peak memory: hand counts on tiny models, and what a real run writes to results.json."""

from __future__ import annotations

import json
import mmap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from adzoo.models.components.memory_bank import MemoryBank
from adzoo.utils.cost import PeakMemory, _rss_bytes, count_flops, eval_flops_per_image
from tests.conftest import TINY_DATA, TINY_METHOD


def test_flops_of_a_tiny_model_match_a_hand_count() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    linear = nn.Linear(8, 5)
    # conv: 8·8 outputs × 8 channels, each 3·3·3 multiply-adds; linear: 8 × 5 multiply-adds; 2 FLOPs per pair
    assert count_flops(conv, torch.zeros(1, 3, 8, 8)) == 2 * (8 * 8 * 8) * (3 * 3 * 3)
    assert count_flops(linear, torch.zeros(1, 8)) == 2 * 8 * 5


class _BankModel(nn.Module):
    """A conv, then each of its 16 output positions (8 channels) searched in a bank of 50 vectors."""

    def __init__(self, search: str = "exact") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.bank = MemoryBank(metric="l2", options={"search": search, "nlist": 5, "nprobe": 2})
        self.bank.fit(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)))
        self.use_feature_cache = True
        self.cache_was_off = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.cache_was_off = not self.use_feature_cache
        patches = self.conv(images).flatten(2).transpose(1, 2).reshape(-1, 8)
        distances, _ = self.bank.search(patches, k=1)
        return distances


def test_the_eval_forward_counts_the_bank_search_and_a_cold_backbone() -> None:
    model = _BankModel()
    model.train()
    flops = eval_flops_per_image(model, image_size=4)
    assert flops["torch"] == 2 * (4 * 4 * 8) * 3  # the 1×1 conv
    assert flops["memory_bank"] == 2 * 8 * 50 * 16  # 16 queries, each compared with 50 vectors of 8
    assert flops["total"] == flops["torch"] + flops["memory_bank"]
    assert model.cache_was_off and model.use_feature_cache and model.training  # counted cold, then restored
    assert all(p.requires_grad for p in model.parameters())
    ivf = eval_flops_per_image(_BankModel("ivf"), image_size=4)
    assert ivf["memory_bank"] == 2 * 8 * (5 + 2 * 50 / 5) * 16  # 5 centroids, then 2 lists of 10 on average


@pytest.mark.parametrize("method", ["uniad", "adtr"])
def test_trained_transformers_are_counted_and_stay_trainable(method: str, compose_cfg) -> None:
    """Their learned query tables enter submodules as inputs, which torch's module tracker cannot hook under
    no_grad while they require grad (a real UniAD search trial failed on it)."""
    from hydra.utils import instantiate

    cfg = compose_cfg(f"method={method}", *TINY_DATA, *TINY_METHOD[method])
    model = instantiate(cfg.model)
    trainable = [p.requires_grad for p in model.parameters()]
    flops = eval_flops_per_image(model, cfg.data.image_size)
    assert flops["total"] == flops["torch"] > 0 and flops["memory_bank"] == 0
    assert [p.requires_grad for p in model.parameters()] == trainable


def test_peak_memory_sees_a_transient_allocation() -> None:
    size = 64 * 2**20
    with PeakMemory(interval_s=0.005) as memory:
        # An anonymous mapping is always fresh pages: a malloc'd tensor may reuse memory that an earlier test freed
        # but the allocator kept resident, and then the resident set does not grow (seen in CI).
        block = mmap.mmap(-1, size)
        before = _rss_bytes()
        block.write(b"\x01" * size)  # touched, so resident
        inside = _rss_bytes()
        # Wait for the sampler (on a loaded machine a fixed sleep can pass without one sample), then free.
        deadline = time.monotonic() + 10.0
        while memory.peak_bytes < inside and time.monotonic() < deadline:
            time.sleep(0.01)
        block.close()
    assert inside - before > 48 * 2**20  # the block was real, resident memory
    assert memory.peak_bytes >= inside  # and the sampler saw it while it was alive


def test_results_json_carries_the_cost(compose_cfg, tmp_path: Path) -> None:
    from adzoo.engine import run

    cfg = compose_cfg("method=patchknn", *TINY_DATA, *TINY_METHOD["patchknn"], "data.categories=[fabric]")
    payload = run(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    cost = written["cost"]
    assert cost == payload["cost"]
    assert cost["flops_per_image"] == cost["flops_torch"] + cost["flops_memory_bank"]
    assert cost["flops_torch"] > 0 and cost["flops_memory_bank"] > 0  # the backbone and the kNN search
    assert cost["peak_rss_gib"] >= cost["start_rss_gib"] > 0


def test_a_failed_count_is_recorded_and_the_run_finishes(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import adzoo.engine
    from adzoo.engine import run

    def broken(model: nn.Module, image_size: int) -> dict[str, int]:
        raise RuntimeError("an op the counter cannot follow")

    monkeypatch.setattr(adzoo.engine, "eval_flops_per_image", broken)
    cfg = compose_cfg("method=patchknn", *TINY_DATA, *TINY_METHOD["patchknn"], "data.categories=[fabric]")
    payload = run(cfg)
    assert payload["status"] == "complete" and "image_auroc" in payload["metrics"]["mean"]
    assert payload["cost"]["flops_error"] == "RuntimeError: an op the counter cannot follow"
    assert "flops_per_image" not in payload["cost"] and payload["cost"]["peak_rss_gib"] > 0
