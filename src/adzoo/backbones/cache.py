"""Frozen-feature cache: with a frozen backbone and no augmentation, each image's features are computed once.

Most methods in the zoo train a small head on frozen backbone features, so after the first epoch the
backbone forward is pure waste. ``FeatureCache`` keys each image (by a content hash unless the caller
passes keys), keeps per-image features in memory (optionally LRU-bounded) and optionally on disk, and only
sends the misses of a batch through the backbone, in one call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import Tensor

from adzoo.backbones._io import atomic_torch_save, tensors_digest
from adzoo.backbones.extractor import FeatureExtractor

log = logging.getLogger(__name__)

DISK_FORMAT = 1
Entry = tuple[Tensor, ...]


def content_keys(images: Tensor) -> list[str]:
    """One key per image: blake2b of its shape and float32 bytes (~0.2 ms for a 3x128x128 image)."""
    flat = images.detach().to("cpu", torch.float32).contiguous()
    shape = f"{tuple(flat.shape[1:])}|".encode()
    keys = []
    for img in flat.numpy():
        h = hashlib.blake2b(shape, digest_size=16)
        h.update(img)
        keys.append(h.hexdigest())
    return keys


def _require_frozen(extractor: FeatureExtractor) -> None:
    if not getattr(extractor, "frozen", False) or any(p.requires_grad for p in extractor.parameters()):
        raise ValueError(
            "FeatureCache needs a frozen extractor: caching features of a backbone that is being trained "
            "would return stale features. Build it with frozen=True (and do not re-enable requires_grad)."
        )


class FeatureCache:
    """Per-image cache of a frozen ``FeatureExtractor``'s outputs, in memory and optionally on disk.

    The extractor should stay a submodule of the model (so ``.to(device)`` moves it); the cache only holds
    a reference. Stored features are CPU tensors; results come back on the images' device, stacked in batch
    order. ``hits`` counts images served from memory or disk (``disk_hits`` of them from disk), ``misses``
    the images that went through the backbone, ``corrupted`` the disk files rejected and recomputed.
    Keys must identify the exact pixels: pass ``keys`` only when no augmentation changes them.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        disk_dir: str | Path | None = None,
        max_items: int | None = None,
    ) -> None:
        _require_frozen(extractor)
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
        self.extractor = extractor
        self.disk_dir = Path(disk_dir).expanduser() if disk_dir is not None else None
        self.max_items = max_items
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._folders: dict[tuple[int, int], Path] = {}
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.corrupted = 0

    # ---------------------------------------------------------------------------------------------- public
    def __len__(self) -> int:
        return len(self._memory)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for logging (e.g. to check that epoch 2+ is all hits)."""
        return {
            "hits": self.hits,
            "disk_hits": self.disk_hits,
            "misses": self.misses,
            "corrupted": self.corrupted,
            "in_memory": len(self._memory),
        }

    def clear(self) -> None:
        """Drop the in-memory store (disk files stay) and reset the counters."""
        self._memory.clear()
        self.hits = self.disk_hits = self.misses = self.corrupted = 0

    def __call__(self, images: Tensor, keys: Sequence[str] | None = None) -> list[Tensor]:
        """Features of ``images`` (B, 3, H, W), identical to ``extractor(images)``, computing only misses."""
        _require_frozen(self.extractor)
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        batch = images.shape[0]
        raw_keys = list(keys) if keys is not None else content_keys(images)
        if len(raw_keys) != batch:
            raise ValueError(f"got {len(raw_keys)} keys for {batch} images")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        # The same key at another input size is another feature map.
        full_keys = [f"{size[0]}x{size[1]}:{k}" for k in raw_keys]

        found: dict[str, Entry] = {}
        missing: dict[str, int] = {}  # key -> first batch position (duplicates in a batch computed once)
        for pos, key in enumerate(full_keys):
            if key in found or key in missing:
                continue
            entry = self._from_memory(key)
            if entry is None and self.disk_dir is not None:
                entry = self._from_disk(key, size)
                if entry is not None:
                    self.disk_hits += 1
                    self._remember(key, entry)
            if entry is None:
                missing[key] = pos
            else:
                self.hits += 1
                found[key] = entry

        if missing:
            found.update(self._compute(images, missing, size))

        n_levels = len(found[full_keys[0]])
        return [torch.stack([found[k][level] for k in full_keys]).to(images.device) for level in range(n_levels)]

    # --------------------------------------------------------------------------------------------- private
    def _compute(self, images: Tensor, missing: dict[str, int], size: tuple[int, int]) -> dict[str, Entry]:
        positions = list(missing.values())
        subset = images if len(positions) == images.shape[0] else images[positions]
        device = self.extractor.mean.device
        feats = [f.detach().to("cpu") for f in self.extractor(subset.to(device))]
        out: dict[str, Entry] = {}
        for j, key in enumerate(missing):
            # clone: a row view would keep (and torch.save would write) the whole batch's storage.
            entry = tuple(f[j].clone() for f in feats)
            out[key] = entry
            self._remember(key, entry)
            if self.disk_dir is not None:
                self._to_disk(key, size, entry)
        self.misses += len(missing)
        return out

    def _from_memory(self, key: str) -> Entry | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
        return entry

    def _remember(self, key: str, entry: Entry) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        if self.max_items is not None:
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def _folder(self, size: tuple[int, int]) -> Path:
        """Sub-folder per (extractor identity, weights, timm/torch version, input size)."""
        folder = self._folders.get(size)
        if folder is None:
            assert self.disk_dir is not None
            ident = self.extractor.identity()
            parts = [
                f"format={DISK_FORMAT}",
                ident,
                f"weights_fingerprint={self.extractor.weights_fingerprint()}",
                f"timm={timm.__version__}",
                f"torch={torch.__version__}",
                f"size={size[0]}x{size[1]}",
            ]
            digest = hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.extractor.name)
            folder = self.disk_dir / f"{slug}-{size[0]}x{size[1]}-{digest}"
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "meta.json"
            if not meta.exists():  # for humans deciding what to delete; temp + rename as ranks may race
                tmp = folder / f".meta.{os.getpid()}.tmp"
                tmp.write_text(json.dumps({"description": parts}, indent=1))
                tmp.replace(meta)
            self._folders[size] = folder
        return folder

    def _path(self, key: str, size: tuple[int, int]) -> Path:
        name = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return self._folder(size) / f"{name}.pt"

    def _to_disk(self, key: str, size: tuple[int, int], entry: Entry) -> None:
        blob = {"format": DISK_FORMAT, "key": key, "tensors": list(entry), "digest": tensors_digest(entry)}
        try:
            atomic_torch_save(blob, self._path(key, size))
        except OSError as exc:  # a full or read-only disk degrades to memory-only, it does not stop training
            log.warning("FeatureCache could not write %s: %s", self._path(key, size), exc)

    def _from_disk(self, key: str, size: tuple[int, int]) -> Entry | None:
        path = self._path(key, size)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            tensors = tuple(blob["tensors"])
            ok = (
                blob.get("format") == DISK_FORMAT
                and blob.get("key") == key
                and blob.get("digest") == tensors_digest(tensors)
            )
            reason = "checksum or key mismatch"
        except Exception as exc:  # truncated zip, garbage bytes, wrong structure: all mean "recompute"
            ok, tensors, reason = False, (), f"{type(exc).__name__}: {exc}"
        if ok:
            return tensors
        self.corrupted += 1
        log.warning("FeatureCache: discarding corrupted cache file %s (%s); recomputing.", path, reason)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
