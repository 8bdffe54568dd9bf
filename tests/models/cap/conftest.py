"""CAP tests run single-threaded: their tensors are tiny, and on a shared 2-core machine a second OpenMP
thread that waits for a busy core made the same forward passes 10-30x slower (measured)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
