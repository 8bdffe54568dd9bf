"""The one LightningDataModule every method trains and is tested on."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler, Subset

from adzoo.data.preload import PRELOAD_CHOICES, PreloadedDataset, default_workers, preload_splits
from adzoo.data.types import select_categories
from adzoo.utils.io import file_digest
from adzoo.utils.resources import available_bytes

log = logging.getLogger(__name__)

SETTINGS = ("unified", "separate")


class DataSource(Protocol):
    """What the datamodule needs from a data set: its categories and a train/test Dataset for some of them."""

    def categories(self) -> list[str]: ...
    def has_masks(self, category: str) -> bool: ...
    def train_dataset(self, categories: Sequence[str], image_size: int) -> Dataset: ...
    def test_dataset(self, categories: Sequence[str], image_size: int) -> Dataset: ...

    # optional: ``val_dataset(categories, image_size) -> Dataset | None``, a validation split the data set ships
    # (MVTec AD 2 ``validation/good``); None where a category has none


class ValidationSplitError(ValueError):
    """``data.val_fraction`` cannot be honoured: a category has too few training images to hold some out."""


def split_indices(n: int, fraction: float, seed: int, category: str) -> tuple[list[int], list[int]]:
    """(train, validation) indices of one category's ``n`` training images: ``round(fraction * n)`` of them, at
    least one, drawn by a permutation seeded from (seed, category) alone, so adding a category never moves another
    one's split. Both lists keep the original order."""
    held = max(1, round(fraction * n))
    if held >= n:
        raise ValidationSplitError(
            f"data.val_fraction={fraction}: category {category!r} has {n} training image(s); holding out {held} "
            f"would leave {n - held} to fit on (lower data.val_fraction, or 0 for no validation split)"
        )
    key = int.from_bytes(hashlib.sha256(category.encode()).digest()[:4], "little")
    order = np.random.default_rng([int(seed), key]).permutation(n)
    val = sorted(int(i) for i in order[:held])
    chosen = set(val)
    return [i for i in range(n) if i not in chosen], val


class UnrepeatedDistributedSampler(Sampler[int]):
    """Splits indices across ranks without padding, so no test image is counted twice under DDP."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed drawn from (seed, epoch) alone: epoch 3 of seed 0 and epoch 0 of seed 3 do not collide."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a permutation that depends on (seed, epoch) only, like DistributedSampler on one process.

    A RandomSampler's generator restarts when a killed run resumes, so epoch k would replay epoch 0's order;
    Lightning calls :meth:`set_epoch` before every epoch, so the resumed run sees the uninterrupted run's order.
    ``set_epoch`` also reseeds :attr:`loader_generator`, which the DataLoader draws its worker seeds from: without
    it the loader would draw them from the global RNG, at a moment that differs between a fresh and a resumed run.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.loader_generator = torch.Generator().manual_seed(epoch_seed(seed, 0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader_generator.manual_seed(epoch_seed(self.seed, epoch))

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AnomalyDataModule(pl.LightningDataModule):
    """Wraps a :class:`DataSource` with the unified/separate setting, image size and loaders.

    In ``unified`` mode one model sees every category (categories are never given to the model, only carried
    in batches for per-category metrics). In ``separate`` mode the app builds one datamodule per category via
    :meth:`for_category`.
    """

    def __init__(
        self,
        source: DataSource,
        name: str = "data",
        root: str | None = None,
        image_size: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        setting: str = "unified",
        categories: Sequence[str] | str = "all",
        pin_memory: bool = False,
        seed: int = 0,
        val_fraction: float = 0.1,
        val_anomalies: str = "none",
        preload: str | bool = "auto",
        preload_max_gb: float = 4.0,
    ) -> None:
        super().__init__()
        from adzoo.data.synthetic_anomalies import check_generator

        if setting not in SETTINGS:
            raise ValueError(f"data.setting must be one of {SETTINGS}, got {setting!r}")
        if image_size <= 0:
            raise ValueError(f"data.image_size must be a positive integer, got {image_size}")
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size}")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValidationSplitError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.val_fraction = float(val_fraction)
        self.val_anomalies = check_generator(val_anomalies)
        self.source = source
        self.name = name
        self.root = root  # where the data lives (sources read it through interpolation); kept for results
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        counted = isinstance(num_workers, int) and not isinstance(num_workers, bool) and num_workers >= 0
        if not (num_workers == "auto" or counted):
            raise ValueError(f"data.num_workers must be auto or an integer >= 0, got {num_workers!r}")
        if preload not in PRELOAD_CHOICES:
            raise ValueError(f"data.preload must be one of auto, true, false; got {preload!r}")
        if float(preload_max_gb) < 0:
            raise ValueError(f"data.preload_max_gb must be >= 0, got {preload_max_gb}")
        #: ``auto``: none for a preloaded split, :func:`default_workers` for a lazy one
        self.num_workers = num_workers
        self.preload = preload
        self.preload_max_gb = float(preload_max_gb)
        self.setting = setting
        self.pin_memory = pin_memory
        self.seed = seed
        self.categories = select_categories(categories, source.categories(), "data.categories")
        if not self.categories:
            raise ValueError(f"data source {name!r} has no categories")
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._test: Dataset | None = None
        self.val_source: dict[str, str] = {}  # category -> where its validation images come from
        #: a hyper-parameter search trial (adzoo.search): the test split is never built, checked or read
        self.test_withheld = False

    def withhold_test(self) -> None:
        """Build no test split: what a search trial chooses can then depend on validation data alone."""
        if self._test is not None:
            raise RuntimeError("withhold_test() after setup: the test split is built already")
        self.test_withheld = True

    def for_category(self, category: str) -> AnomalyDataModule:
        """A datamodule over one category (the separate setting), sharing the indexed source."""
        dm = AnomalyDataModule(
            self.source,
            name=self.name,
            root=self.root,
            image_size=self.image_size,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            setting=self.setting,
            categories=[category],
            pin_memory=self.pin_memory,
            seed=self.seed,
            val_fraction=self.val_fraction,
            val_anomalies=self.val_anomalies,
            preload=self.preload,
            preload_max_gb=self.preload_max_gb,
        )
        if self.test_withheld:
            dm.withhold_test()
        return dm

    def has_masks(self, category: str) -> bool:
        return self.source.has_masks(category)

    def validate(self) -> None:
        """Check every file of the selected categories before any work, where the source can (file-backed sources
        have ``validate``; in-memory ones hold nothing that can be unreadable), so bad data fails in one error."""
        check = getattr(self.source, "validate", None)
        if callable(check):
            check(self.categories, **self._test_choice())

    def _test_choice(self) -> dict[str, bool]:
        """``include_test=False`` for a source's ``validate``/``files`` in a search trial (sources without test-free
        variants are then refused by their signature, never silently read)."""
        return {"include_test": False} if self.test_withheld else {}

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            self._train, self._val = self._train_and_validation()
            if not self.test_withheld:
                self._test = self.source.test_dataset(self.categories, self.image_size)
            if len(self._train) == 0:
                raise ValueError(f"no training images for categories {self.categories} in {self.name!r}")
            splits = {"train": self._train, "validation": self._val, "test": self._test}
            splits = preload_splits(splits, self.preload, self.preload_max_gb, available_bytes())
            self._train, self._val, self._test = splits["train"], splits["validation"], splits["test"]

    def _train_and_validation(self) -> tuple[Dataset, Dataset | None]:
        """The training images and the validation split, which is never fitted on.

        Per category: the data set's own validation split where it ships one, else ``val_fraction`` of its
        training images, held out by a seeded draw (stratified by category). With ``val_fraction=0`` and no shipped
        split, the training set is the source's as it is and there is no validation split.
        """
        native = getattr(self.source, "val_dataset", None)
        shipped = {c: native([c], self.image_size) if callable(native) else None for c in self.categories}
        if self.val_fraction == 0 and all(v is None for v in shipped.values()):
            return self.source.train_dataset(self.categories, self.image_size), None
        train_parts: list[Dataset] = []
        val_parts: list[Dataset] = []
        for category in self.categories:
            train = self.source.train_dataset([category], self.image_size)
            if shipped[category] is not None and len(shipped[category]) > 0:
                train_parts.append(train)
                val_parts.append(shipped[category])
                self.val_source[category] = "shipped"
                continue
            if self.val_fraction == 0:
                train_parts.append(train)
                continue
            keep, held = split_indices(len(train), self.val_fraction, self.seed, category)
            train_parts.append(Subset(train, keep))
            val_parts.append(Subset(train, held))
            self.val_source[category] = f"held out from train ({len(held)} of {len(train)})"
        train_set: Dataset = train_parts[0] if len(train_parts) == 1 else ConcatDataset(train_parts)
        if not val_parts:
            return train_set, None
        val_set: Dataset = val_parts[0] if len(val_parts) == 1 else ConcatDataset(val_parts)
        if self.val_anomalies != "none":
            from adzoo.data.synthetic_anomalies import SyntheticAnomalyDataset

            val_set = SyntheticAnomalyDataset(val_set, self.val_anomalies, seed=self.seed)
        return train_set, val_set

    @property
    def train_set(self) -> Dataset:
        self.setup()
        assert self._train is not None
        return self._train

    @property
    def val_set(self) -> Dataset | None:
        """The validation split (normal held-out images, then their synthetic-anomaly copies), or None."""
        self.setup()
        return self._val

    @property
    def test_set(self) -> Dataset:
        self.setup()
        if self.test_withheld:
            raise RuntimeError(f"{self.name!r}: the test split is withheld (a hyper-parameter search trial)")
        assert self._test is not None
        return self._test

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        rank, world = _distributed()
        # We shard ourselves (trainer.use_distributed_sampler=false in the DDP configs): training pads like
        # DistributedSampler, evaluation never repeats an image, so metrics match one process. Every training
        # order is a function of (seed, epoch), so a resumed run replays the uninterrupted run's batches.
        sampler: Sampler[int] | None = None
        if train and world > 1:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        elif train:
            sampler = EpochShuffleSampler(len(dataset), self.seed)
        elif world > 1:
            sampler = UnrepeatedDistributedSampler(len(dataset), rank, world)
        workers = self.workers_for(dataset)
        # A private generator: iterating a loader never draws from (and so never shifts) the global RNG.
        generator = getattr(sampler, "loader_generator", None) or torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=generator,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
        )

    def workers_for(self, dataset: Dataset) -> int:
        """Loader processes for ``dataset``: ``data.num_workers``, or with ``auto`` none for a preloaded split (it
        is in memory) and :func:`~adzoo.data.preload.default_workers` for a lazy one."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        return 0 if isinstance(dataset, PreloadedDataset) else default_workers()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def fit_once_dataloader(self) -> DataLoader:
        """Training images in a fixed order, unsharded padding-free: for memory banks and feature statistics."""
        return self._loader(self.train_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def val_dataloader(self) -> DataLoader:
        """The validation split: never the test set, so nothing chosen on it has seen a test image."""
        if self.val_set is None:
            raise ValidationSplitError(f"{self.name!r} has no validation split (data.val_fraction=0)")
        return self._loader(self.val_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def fingerprint(self) -> dict[str, Any]:
        """What exactly was read, for results.json: a hash over every file's name (relative to the data root, so
        a moved copy matches) and content hash. A changed pixel or a renamed file changes it; size and mtime
        would miss an edited image of the same size and flag a mere copy. A search trial hashes no test file."""
        files = getattr(self.source, "files", None)
        digest = hashlib.sha256()
        count = 0
        if callable(files):
            root = getattr(self.source, "root", None)
            for path in sorted(files(**self._test_choice())):
                name = os.path.relpath(path, root) if root is not None else str(path)
                digest.update(f"{Path(name).as_posix()}\0{file_digest(path)}\n".encode())
                count += 1
            kind = "content"
        else:
            digest.update(repr((type(self.source).__name__, self.categories)).encode())
            kind = "source"
        return {"files": count, "sha256": digest.hexdigest(), "kind": kind}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": None if self.root is None else str(self.root),
            "setting": self.setting,
            "categories": self.categories,
            "image_size": self.image_size,
            "train_images": len(self.train_set),
            "val_images": 0 if self.val_set is None else len(self.val_set),
            "val_anomalies": self.val_anomalies,
            "val_source": dict(self.val_source),
            "test_images": None if self.test_withheld else len(self.test_set),
            "test_withheld": self.test_withheld,
            "batches_per_epoch": math.ceil(len(self.train_set) / self.batch_size),
            "preloaded": [name for name, split in self._splits() if isinstance(split, PreloadedDataset)],
            "loader_workers": {name: self.workers_for(split) for name, split in self._splits()},
        }

    def _splits(self) -> list[tuple[str, Dataset]]:
        self.setup()
        splits = [("train", self._train), ("validation", self._val), ("test", self._test)]
        return [(name, split) for name, split in splits if split is not None]
