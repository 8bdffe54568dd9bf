"""In-memory cache of the teacher's per-block states for the training images.

The teacher is frozen and in eval mode and there is no augmentation, so its block inputs/outputs for an image
never change: after the first epoch the teacher forward is pure waste (methods.md §5.9 assumed an online
teacher because 12 x 577 x 768 floats per image are large; at CPU-profile sizes they fit). Unlike the spine's
``FeatureCache`` (LRU), this cache stops *inserting* when its byte budget is full: with reshuffled epochs an
LRU over a set larger than itself would almost never hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from adzoo.backbones.cache import content_keys

States = dict[int, Tensor]


class TeacherStateCache:
    """Per-image states ``{index: tensor}`` keyed by image content, up to ``max_bytes`` stored as ``dtype``.

    ``max_bytes`` counts RAM, or GPU memory with ``on_device``.
    """

    def __init__(
        self, keep: Sequence[int], max_bytes: int, dtype: torch.dtype | None = None, on_device: bool = False
    ) -> None:
        self.keep = sorted(set(int(i) for i in keep))
        self.max_bytes = int(max_bytes)
        self.dtype = dtype
        self.on_device = on_device  # keep entries where the images are (a GPU with room to spare) instead of RAM
        self._store: dict[str, tuple[Tensor, ...]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.full = False

    def __len__(self) -> int:
        return len(self._store)

    @property
    def stats(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "items": len(self), "megabytes": self.bytes / 2**20}

    def clear(self) -> None:
        self._store.clear()
        self.bytes = self.hits = self.misses = 0
        self.full = False

    def __call__(self, images: Tensor, compute: Callable[[Tensor], list[Tensor]]) -> States:
        """The kept states of ``images`` (on their device), running ``compute`` on the misses only, in one call."""
        size = f"{images.shape[-2]}x{images.shape[-1]}:"
        keys = [size + k for k in content_keys(images)]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        computed: dict[str, tuple[Tensor, ...]] = {}
        if missing:
            subset = images if len(missing) == len(keys) else images[missing]
            states = compute(subset)
            for j, i in enumerate(missing):
                computed[keys[i]] = tuple(states[s][j] for s in self.keep)
            self._insert(computed)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = [computed.get(k) or self._store[k] for k in keys]
        return {
            s: torch.stack([row[pos] for row in rows]).to(device=images.device, dtype=images.dtype)
            for pos, s in enumerate(self.keep)
        }

    def _insert(self, entries: dict[str, tuple[Tensor, ...]]) -> None:
        for key, entry in entries.items():
            if self.full or key in self._store:
                continue
            # clone: a row view would pin the whole batch's storage in memory.
            device = entry[0].device if self.on_device else torch.device("cpu")
            stored = tuple(t.detach().to(device, self.dtype or t.dtype).clone() for t in entry)
            size = sum(t.numel() * t.element_size() for t in stored)
            if self.bytes + size > self.max_bytes:
                self.full = True
                continue
            self._store[key] = stored
            self.bytes += size
