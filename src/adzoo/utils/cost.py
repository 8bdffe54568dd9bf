"""What a method costs: floating-point operations per image of its eval forward, and the run's peak memory.

ADer reports FLOPs beside accuracy, and an inspection engineer picks a method by both. FLOPs are counted, not
timed, so they are the same on every machine: :class:`torch.utils.flop_counter.FlopCounterMode` counts the torch
ops (a matmul of (m, k) by (k, n) is 2·m·k·n, convolutions and attention likewise), and a memory-bank search, which
runs in faiss rather than torch, is added by :meth:`~adzoo.models.components.memory_bank.MemoryBank.search_flops`.
Element-wise ops (activations, normalisation, blur) are not counted by torch's counter; they are a small share.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: how results.json says what was counted
FLOPS_COUNTED = "torch matmul/conv/attention ops (FlopCounterMode) + memory-bank searches (2·d per compared vector)"


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs of one call of ``fn`` as torch's flop counter counts them (no grad)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _feature_cache_off(model: nn.Module) -> Iterator[None]:
    """The frozen-feature cache would answer the backbone from memory and hide its FLOPs: count a cold image."""
    cached = [m for m in model.modules() if hasattr(m, "use_feature_cache")]
    before = [m.use_feature_cache for m in cached]
    for m in cached:
        m.use_feature_cache = False
    try:
        yield
    finally:
        for m, value in zip(cached, before):
            m.use_feature_cache = value


def eval_flops_per_image(model: nn.Module, image_size: int, channels: int = 3) -> dict[str, int]:
    """FLOPs of the eval forward (``model(images)``, image score and anomaly map) for one image.

    Returns ``{"total", "torch", "memory_bank"}``. The model is put in eval mode for the count and restored.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    image = torch.zeros(1, channels, image_size, image_size, device=device)
    # Any module that searches outside torch says how much it searched (MemoryBank does); duck-typed, so the
    # utilities need not import the models.
    banks = [
        m for m in model.modules() if callable(getattr(m, "search_flops", None)) and getattr(m, "is_fitted", False)
    ]
    before = [b.queries_searched for b in banks]
    training = model.training
    # Frozen for the count: torch's module tracker hooks every module input that requires grad, and a parameter
    # handed to a submodule (UniAD's query tables) has no gradient function under no_grad.
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        with _feature_cache_off(model):
            torch_flops = count_flops(model, image)
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
        model.train(training)
    bank_flops = sum(b.search_flops(b.queries_searched - n) for b, n in zip(banks, before))
    return {"total": torch_flops + bank_flops, "torch": torch_flops, "memory_bank": bank_flops}


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


@dataclass
class PeakMemory:
    """The peak memory of the block it wraps: CUDA's allocator peak on a GPU, else the process's resident set
    sampled every ``interval_s`` (a process-lifetime ``ru_maxrss`` would carry an earlier sweep job's peak)."""

    interval_s: float = 0.02
    start_bytes: int = 0
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> PeakMemory:
        self.start_bytes = self.peak_bytes = _rss_bytes()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="adzoo-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    def report(self) -> dict[str, Any]:
        """For results.json: the process's peak RSS in the block (and where it started), plus the GPU peak."""
        out: dict[str, Any] = {
            "peak_rss_gib": self.peak_bytes / 2**30,
            "start_rss_gib": self.start_bytes / 2**30,
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_cuda_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out
