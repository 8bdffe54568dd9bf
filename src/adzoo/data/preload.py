"""Decode once: a data set's items read in parallel threads and held in memory, so no epoch waits on decoding.

With the frozen-feature cache warm, a training step of UniAD or ADTR costs tens of milliseconds on the CPU;
decoding and resizing its batch from PNG again every epoch would be a share of that step that buys nothing, as
every adzoo data set returns the same item for the same index (synthetic validation anomalies are seeded by
index too). :class:`PreloadedDataset` reads every item once with a thread pool (PIL and torch release the GIL
while they decode and resize) and serves copies from memory. Images that came from 8-bit files and were not
resized are held as uint8 and masks as bool, both exact; anything else is held as it came (float32).

``data.preload`` decides: ``auto`` preloads the training, validation and test splits, in that order, while their
estimated size fits ``data.preload_max_gb`` and half of the memory still available; ``true`` always; ``false``
never (the loaders read lazily, in ``data.num_workers`` processes).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from adzoo.utils.resources import cpu_cores

log = logging.getLogger(__name__)

PRELOAD_CHOICES = ("auto", True, False)
_GIB = 1024**3


def _pack_image(image: Tensor) -> Tensor:
    """uint8 when that is exact (8-bit source at its own size: values k/255), else the tensor as it is."""
    if image.dtype == torch.float32:
        levels = (image * 255.0).round_()
        if levels.min() >= 0 and levels.max() <= 255:
            packed = levels.to(torch.uint8)
            if torch.equal(packed.float() / 255.0, image):
                return packed
    return image


def _unpack_image(image: Tensor) -> Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.clone()


def _pack_mask(mask: Tensor) -> Tensor:
    binary = mask.bool()
    return binary if torch.equal(binary.to(mask.dtype), mask) else mask


def _unpack_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    return mask.to(dtype) if mask.dtype == torch.bool else mask.clone()


def _pack(item: dict[str, Any]) -> dict[str, Any]:
    packed = dict(item)
    packed["image"] = _pack_image(item["image"])
    packed["mask"] = _pack_mask(item["mask"])
    packed["_mask_dtype"] = item["mask"].dtype
    return packed


def packed_bytes(item: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in item.values() if isinstance(v, Tensor))


class PreloadedDataset(Dataset):
    """Every item of ``base``, decoded once (``threads`` at a time) and served from memory, bit for bit."""

    def __init__(self, base: Dataset, threads: int | None = None, first: dict[str, Any] | None = None) -> None:
        """``first``: item 0 already packed (the budget estimate read it), so it is not decoded twice."""
        n = len(base)  # type: ignore[arg-type]
        self.threads = max(1, threads or cpu_cores())
        started = time.perf_counter()
        head = [first] if first is not None else []
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="adzoo-preload") as pool:
            rest = list(pool.map(lambda i: _pack(base[i]), range(len(head), n)))
        self.items = head + rest
        self.seconds = time.perf_counter() - started
        self.nbytes = sum(packed_bytes(item) for item in self.items)
        self.uint8 = sum(item["image"].dtype == torch.uint8 for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.items[index])
        item["image"] = _unpack_image(item["image"])
        item["mask"] = _unpack_mask(item["mask"], item.pop("_mask_dtype"))
        return item


def preload_splits(
    splits: dict[str, Dataset | None], mode: str | bool, max_gb: float, available: int, threads: int | None = None
) -> dict[str, Dataset | None]:
    """Preload ``splits`` (name → data set, in order) as ``data.preload`` says; returns them, preloaded or not.

    ``auto`` estimates each split from its first item (the rest of a split has the same size and storage) and
    stops at the first that would pass ``max_gb`` or half of ``available``: later splits stay lazy too, so the
    training split, read every epoch, is the one that gets the memory."""
    if mode not in PRELOAD_CHOICES:
        raise ValueError(f"data.preload must be one of auto, true, false; got {mode!r}")
    if mode is False:
        return dict(splits)
    budget = min(max_gb * _GIB, available / 2) if mode == "auto" else math.inf
    out: dict[str, Dataset | None] = {}
    used = 0
    lazy_from: str | None = None
    for name, dataset in splits.items():
        if dataset is None or len(dataset) == 0 or lazy_from is not None:  # type: ignore[arg-type]
            out[name] = dataset
            continue
        first = _pack(dataset[0])
        estimate = packed_bytes(first) * len(dataset)  # type: ignore[arg-type]
        if used + estimate > budget:
            lazy_from = name
            log.info(
                "data.preload=auto: the %s split (~%.2f GB decoded) would pass the budget of %.2f GB "
                "(data.preload_max_gb, or half the available memory); it and later splits are read lazily",
                name,
                estimate / _GIB,
                budget / _GIB,
            )
            out[name] = dataset
            continue
        preloaded = PreloadedDataset(dataset, threads, first=first)
        used += preloaded.nbytes
        out[name] = preloaded
        log.info(
            "data: preloaded the %s split, %d images (%d as exact uint8), %.3f GB, in %.1f s with %d threads",
            name,
            len(preloaded),
            preloaded.uint8,
            preloaded.nbytes / _GIB,
            preloaded.seconds,
            preloaded.threads,
        )
    return out


def default_workers(cores: int | None = None) -> int:
    """``data.num_workers=auto`` for a lazily read split: one core stays with the training process, at most 4
    decode (a 2-core machine gets 1 worker; preloaded splits get none, there is nothing left to decode)."""
    cores = cores if cores is not None else cpu_cores()
    return max(0, min(4, cores - 1))
