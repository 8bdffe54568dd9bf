"""Synthetic anomalies on validation images: what a threshold needs to see without ever seeing the test set.

A threshold such as F1-max is chosen where anomalous images exist, and the test split must never be used to choose
anything. Real validation defects are rare (MVTec AD 2 ships none), so the held-out normal validation images get a
synthetic-anomaly copy each, from a named generator, with the generator's exact mask: confetti noise (FCDD,
:mod:`adzoo.data.confetti`) or CutPaste (:mod:`adzoo.data.cutpaste`). Each copy is drawn from a generator seeded by
(seed, index) alone, so the validation set is the same in every epoch, run, DataLoader worker and DDP rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from adzoo.data.confetti import confetti_noise
from adzoo.data.cutpaste import cutpaste
from adzoo.data.types import AnomalySample

GENERATORS = ("none", "confetti", "cutpaste")


def check_generator(name: str) -> str:
    """``data.val_anomalies`` checked: one of :data:`GENERATORS`, else a one-line error naming the key."""
    if name not in GENERATORS:
        raise ValueError(f"data.val_anomalies={name!r}: expected one of {', '.join(GENERATORS)}")
    return name


def make_anomalies(name: str, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) images in [0, 1] → (images with anomalies, (B, 1, H, W) exact masks)."""
    if check_generator(name) == "confetti":
        return confetti_noise(images, generator=generator)
    if name == "cutpaste":
        return cutpaste(images, generator=generator)
    raise ValueError("data.val_anomalies=none: no anomalies to make")


def _seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


class SyntheticAnomalyDataset(Dataset[AnomalySample]):
    """The normal validation images (label 0), then one synthetic-anomaly copy of each (label 1, exact mask)."""

    def __init__(self, base: Dataset, generator: str, seed: int = 0) -> None:
        if check_generator(generator) == "none":
            raise ValueError("data.val_anomalies=none: there is nothing to add; use the validation images as they are")
        self.base = base
        self.generator_name = generator
        self.seed = int(seed)

    def __len__(self) -> int:
        return 2 * len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> AnomalySample:
        n = len(self.base)  # type: ignore[arg-type]
        if not 0 <= index < 2 * n:
            raise IndexError(index)
        sample: dict[str, Any] = dict(self.base[index % n])
        if index < n:
            return sample  # type: ignore[return-value]
        rng = torch.Generator().manual_seed(_seed(self.seed, index - n))
        image, mask = make_anomalies(self.generator_name, sample["image"][None], rng)
        if not bool(mask.any()):
            raise RuntimeError(f"{self.generator_name} made an empty mask for {sample['path']}")
        sample.update(
            image=image[0],
            mask=mask[0].to(torch.float32),
            label=1,
            has_mask=True,
            path=f"{sample['path']}#{self.generator_name}",
        )
        return sample  # type: ignore[return-value]
