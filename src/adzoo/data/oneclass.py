"""One-class classification benchmarks (digits, Fashion-MNIST, CIFAR-10/100) recast as anomaly detection.

A *task* (what the rest of adzoo calls a category) is one normal-vs-anomalous split of a labelled
classification set:

* ``unimodal``: one class is normal (``digit_3``, ``airplane``, ...), every other class is anomalous.
  Train holds only that class's training images; test is the whole test set.
* ``multimodal``: every class but one is normal (``all_but_airplane``); the held-out class is anomalous.
* ``uniad``: UniAD's four CIFAR-10 5-vs-5 splits (``uniad_split_01234``, ``uniad_split_56789``,
  ``uniad_split_02468``, ``uniad_split_13579``), the digits naming the normal classes. Defined for any
  10-class source so it can be exercised offline on digits; the published numbers are for ``cifar10``.

CIFAR-100 is used through its 20 coarse super-classes, as the one-class literature does.

``digits`` (scikit-learn's bundled 8x8 set) needs no files and is the offline default. It has no
official split, so a stratified 70/30 split with a fixed seed is made here (``DIGITS_TEST_FRACTION``,
``DIGITS_SPLIT_SEED``); it is fixed rather than tied to ``seed`` so that runs with different seeds and
different methods are scored on the same test images.

Images stay in memory as uint8 (N, C, H, W) and are converted per item with ``torch`` only, which keeps
item access cheap and avoids PIL round trips. Nothing is ever downloaded: a missing local copy raises
FileNotFoundError that says which files were expected and how to get them.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from adzoo.data.types import AnomalySample

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE_CLASSES",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_ROOT",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "FASHION_MNIST_CLASSES",
    "PROTOCOLS",
    "UNIAD_SPLITS",
    "OneClassDataset",
    "OneClassSource",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "cifar10", "cifar100")
PROTOCOLS: tuple[str, ...] = ("unimodal", "multimodal", "uniad")

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0

# Where Debian's `dataset-fashion-mnist` package installs the four gzipped idx files.
DEBIAN_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

DIGITS_CLASSES: tuple[str, ...] = tuple(f"digit_{d}" for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t_shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Index order of CIFAR-100's `coarse_label_names`, snake-cased ("large_man-made_..." -> "large_man_made_...").
CIFAR100_COARSE_CLASSES: tuple[str, ...] = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man_made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non_insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

# UniAD's CIFAR-10 setting: five normal classes, the other five anomalous.
UNIAD_SPLITS: dict[str, tuple[int, ...]] = {
    "uniad_split_01234": (0, 1, 2, 3, 4),
    "uniad_split_56789": (5, 6, 7, 8, 9),
    "uniad_split_02468": (0, 2, 4, 6, 8),
    "uniad_split_13579": (1, 3, 5, 7, 9),
}

_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": DIGITS_CLASSES,
    "fashion_mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_COARSE_CLASSES,
}

_FASHION_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# name -> (extracted folder, files with the test file last, label key, archive name).
_CIFAR_LAYOUT: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
        "labels",
        "cifar-10-python.tar.gz",
    ),
    "cifar100": ("cifar-100-python", ("train", "test"), "coarse_labels", "cifar-100-python.tar.gz"),
}


# --------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Arrays:
    """A labelled classification set: uint8 images (N, C, H, W) and int64 class ids."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an (optionally gzipped) IDX file, the MNIST/Fashion-MNIST format, without torchvision.

    Reading it ourselves lets a bare folder of ``*-ubyte[.gz]`` files (Debian's package, a copy from
    elsewhere) work without torchvision's ``FashionMNIST/raw`` folder convention.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: expected {count * dtype.itemsize} data bytes for shape {shape}, found {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _missing(what: str, root: Path | None, expected: Sequence[str], where: Sequence[str], how: str) -> NoReturn:
    raise FileNotFoundError(
        f"{what} not found under root={str(root) if root is not None else None!r}: expected "
        f"{', '.join(expected)} in {' or '.join(where)}. Nothing is downloaded here; {how}"
    )


def _load_digits() -> _Arrays:
    """scikit-learn's digits with the fixed stratified 70/30 split described in the module docstring."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_parts = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[: round(DIGITS_TEST_FRACTION * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    return _Arrays(images[~is_test], labels[~is_test], images[is_test], labels[is_test])


def _load_fashion_mnist(root: Path | None) -> _Arrays:
    """Accept a folder holding the four idx files directly (Debian layout) or torchvision's layout."""
    base = root if root is not None else Path(DEBIAN_FASHION_MNIST_ROOT)
    folders = [base, base / "FashionMNIST" / "raw"]
    for folder in folders:
        found: dict[str, Path] = {}
        for key, stem in _FASHION_FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FASHION_FILES):
            break
    else:
        _missing(
            "Fashion-MNIST",
            base,
            [f"{stem}[.gz]" for stem in _FASHION_FILES.values()],
            [str(f) for f in folders],
            "get the files elsewhere (torchvision FashionMNIST(download=True) on a connected machine, or "
            f"Debian's dataset-fashion-mnist package, which installs them in {DEBIAN_FASHION_MNIST_ROOT}) "
            "and pass root=<folder>.",
        )
    arrays = {key: read_idx(path) for key, path in found.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"Fashion-MNIST {split}: inconsistent shapes {images.shape} / {labels.shape}")
    return _Arrays(
        arrays["train_images"].astype(np.uint8)[:, None],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"].astype(np.uint8)[:, None],
        arrays["test_labels"].astype(np.int64),
    )


def _read_cifar_batches(files: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR python pickles (the format torchvision reads too); only open files you trust."""
    images, labels = [], []
    for path in files:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        images.append(data.reshape(len(data), 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _load_cifar(name: str, root: Path | None) -> _Arrays:
    """CIFAR-10, or CIFAR-100 with coarse labels, from the extracted python archive."""
    subdir, files, label_key, archive = _CIFAR_LAYOUT[name]
    folders = [root, root / subdir] if root is not None else []
    folder = next((f for f in folders if all((f / n).is_file() for n in files)), None)
    if folder is None:
        _missing(
            name.upper().replace("CIFAR", "CIFAR-"),
            root,
            list(files),
            [str(f) for f in folders] or ["<root> or <root>/" + subdir + " (no root was given)"],
            f"get {archive} elsewhere (torchvision's CIFAR datasets with download=True on a connected "
            f"machine), extract it and pass root=<folder containing {subdir}>.",
        )
    train_x, train_y = _read_cifar_batches([folder / n for n in files[:-1]], label_key)
    test_x, test_y = _read_cifar_batches([folder / files[-1]], label_key)
    return _Arrays(train_x, train_y, test_x, test_y)


# -------------------------------------------------------------------------------------------- datasets


class OneClassDataset(Dataset[AnomalySample]):
    """A view of shared uint8 images through (index, label, task) rows, so tasks never copy pixels."""

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        index: np.ndarray,
        labels: np.ndarray,
        task_ids: np.ndarray,
        task_names: Sequence[str],
        path_prefix: str,
        image_size: int,
    ) -> None:
        if not (len(index) == len(labels) == len(task_ids)):
            raise ValueError("index, labels and task_ids must have the same length")
        self._images = images
        self._targets = targets
        self._index = np.asarray(index, dtype=np.int64)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._task_ids = np.asarray(task_ids, dtype=np.int64)
        self._task_names = list(task_names)
        self._prefix = path_prefix
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self._index)

    @property
    def labels(self) -> np.ndarray:
        """Per-item labels (0 normal, 1 anomalous), for samplers and sanity checks without loading images."""
        return self._labels.copy()

    @property
    def source_classes(self) -> np.ndarray:
        """Per-item class id in the source set, e.g. to break multimodal scores down by class."""
        return self._targets[self._index].copy()

    @property
    def item_categories(self) -> list[str]:
        """Per-item task names, without loading images."""
        return [self._task_names[t] for t in self._task_ids]

    def __getitem__(self, i: int) -> AnomalySample:
        n = len(self._index)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        src = int(self._index[i])
        size = self.image_size
        image = torch.from_numpy(np.ascontiguousarray(self._images[src])).to(torch.float32).div_(255.0)
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[
                0
            ].clamp_(0.0, 1.0)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1).contiguous()
        return AnomalySample(
            image=image,
            mask=torch.zeros(1, size, size, dtype=torch.float32),
            label=int(self._labels[i]),
            category=self._task_names[int(self._task_ids[i])],
            path=f"{self._prefix}/{src:05d}",
            has_mask=False,
        )


def _stratified_pick(strata: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of a size-``n`` subsample keeping each stratum's share, and every stratum when ``n`` allows.

    Largest-remainder allocation with a floor of one per stratum, so a 10%-normal test set cut to a few
    items still holds both labels.
    """
    total = len(strata)
    if n >= total:
        return np.arange(total)
    keys, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = n * counts / total
    alloc = np.floor(quota).astype(np.int64)
    if n >= len(keys):
        alloc = np.maximum(alloc, 1)
    while alloc.sum() > n:  # only after the floor of one; shrink the biggest share
        alloc[np.argmax(alloc)] -= 1
    for k in np.argsort(-(quota - np.floor(quota)), kind="stable"):
        if alloc.sum() >= n:
            break
        if alloc[k] < counts[k]:
            alloc[k] += 1
    while alloc.sum() < n:  # remainder left by capped strata
        alloc[np.argmax(counts - alloc)] += 1
    picks = [rng.choice(np.flatnonzero(inverse == k), size=int(a), replace=False) for k, a in enumerate(alloc)]
    return np.sort(np.concatenate(picks))


@dataclass(frozen=True)
class _Task:
    name: str
    normal: frozenset[int]


class OneClassSource:
    """One-class classification sets as adzoo anomaly-detection tasks; see the module docstring.

    ``seed`` drives only the ``max_*_per_task`` subsampling, per task and independently of which other
    tasks are selected, so a task's items do not change when the selection does.
    """

    def __init__(
        self,
        name: str,
        root: str | None = None,
        protocol: str = "unimodal",
        categories: Sequence[str] | str = "all",
        seed: int = 0,
        max_train_per_task: int | None = None,
        max_test_per_task: int | None = None,
    ) -> None:
        if name not in DATASETS:
            raise ValueError(f"unknown one-class dataset {name!r}; valid choices: {', '.join(DATASETS)}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; valid choices: {', '.join(PROTOCOLS)}")
        for label, value in (
            ("max_train_per_task", max_train_per_task),
            ("max_test_per_task", max_test_per_task),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be a positive integer or None, got {value!r}")
        self.name = name
        self.protocol = protocol
        self.seed = seed
        self.max_train_per_task = max_train_per_task
        self.max_test_per_task = max_test_per_task
        self.class_names: tuple[str, ...] = _CLASS_NAMES[name]
        self._tasks = self._build_tasks()
        self._selected = self._select(categories)
        root_path = Path(root).expanduser() if root is not None else None
        if name == "digits":
            self._data = _load_digits()
        elif name == "fashion_mnist":
            self._data = _load_fashion_mnist(root_path)
        else:
            self._data = _load_cifar(name, root_path)

    def _build_tasks(self) -> dict[str, _Task]:
        every = frozenset(range(len(self.class_names)))
        if self.protocol == "unimodal":
            tasks = [_Task(c, frozenset({i})) for i, c in enumerate(self.class_names)]
        elif self.protocol == "multimodal":
            tasks = [_Task(f"all_but_{c}", every - {i}) for i, c in enumerate(self.class_names)]
        else:
            if len(self.class_names) != 10:
                raise ValueError(
                    f"protocol 'uniad' needs a 10-class source, {self.name!r} has {len(self.class_names)}; "
                    "valid choices: digits, fashion_mnist, cifar10"
                )
            tasks = [_Task(n, frozenset(normal)) for n, normal in UNIAD_SPLITS.items()]
        return {t.name: t for t in tasks}

    def _check(self, categories: Sequence[str] | str) -> list[str]:
        names = [categories] if isinstance(categories, str) else list(categories)
        if not names:
            raise ValueError("no categories given")
        unknown = [c for c in names if c not in self._tasks]
        if unknown:
            raise ValueError(
                f"unknown categories {unknown} for {self.name}/{self.protocol}; valid choices: {', '.join(self._tasks)}"
            )
        return list(dict.fromkeys(names))

    def _select(self, categories: Sequence[str] | str) -> list[str]:
        if isinstance(categories, str) and categories == "all":
            return list(self._tasks)
        return self._check(categories)

    def categories(self) -> list[str]:
        """The task names selected at construction."""
        return list(self._selected)

    def has_masks(self, category: str) -> bool:
        """Always False: class labels only, so pixel metrics must be skipped for these tasks."""
        self._check([category])
        return False

    def normal_classes(self, category: str) -> list[str]:
        """Source class names counted as normal in this task (for logs and tests)."""
        (name,) = self._check([category])
        return [self.class_names[i] for i in sorted(self._tasks[name].normal)]

    def _rng(self, task: str, split: str) -> np.random.Generator:
        # crc32 rather than hash(): stable across processes regardless of PYTHONHASHSEED.
        return np.random.default_rng([self.seed, zlib.crc32(f"{task}/{split}".encode())])

    def _train_rows(self, task: _Task) -> np.ndarray:
        y = self._data.train_y
        rows = np.flatnonzero(np.isin(y, list(task.normal)))
        if self.max_train_per_task is not None:
            rows = rows[_stratified_pick(y[rows], self.max_train_per_task, self._rng(task.name, "train"))]
        return rows

    def _test_rows(self, task: _Task) -> tuple[np.ndarray, np.ndarray]:
        y = self._data.test_y
        rows = np.arange(len(y))
        labels = (~np.isin(y, list(task.normal))).astype(np.int64)
        if self.max_test_per_task is not None:
            keep = _stratified_pick(labels, self.max_test_per_task, self._rng(task.name, "test"))
            rows, labels = rows[keep], labels[keep]
        return rows, labels

    @staticmethod
    def _check_size(image_size: int) -> None:
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")

    def train_dataset(self, categories: Sequence[str], image_size: int) -> OneClassDataset:
        """Union of these tasks' normal training images (label 0), each tagged with its task's name."""
        self._check_size(image_size)
        names = self._check(categories)
        parts = [self._train_rows(self._tasks[n]) for n in names]
        index = np.concatenate(parts)
        task_ids = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(parts)])
        return OneClassDataset(
            self._data.train_x,
            self._data.train_y,
            index,
            np.zeros(len(index), dtype=np.int64),
            task_ids,
            names,
            f"{self.name}/train",
            int(image_size),
        )

    def test_dataset(self, categories: Sequence[str], image_size: int) -> OneClassDataset:
        """For each task, the test set labelled normal (0) / anomalous (1) for that task, tagged with it."""
        self._check_size(image_size)
        names = self._check(categories)
        parts = [self._test_rows(self._tasks[n]) for n in names]
        index = np.concatenate([rows for rows, _ in parts])
        labels = np.concatenate([lab for _, lab in parts])
        task_ids = np.concatenate([np.full(len(rows), k, dtype=np.int64) for k, (rows, _) in enumerate(parts)])
        return OneClassDataset(
            self._data.test_x,
            self._data.test_y,
            index,
            labels,
            task_ids,
            names,
            f"{self.name}/test",
            int(image_size),
        )
