"""Synthetic validation anomalies: the normal images, then one anomalous copy each, deterministic per index."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from adzoo.data.synthetic_anomalies import SyntheticAnomalyDataset, check_generator


class _Normals(Dataset):
    def __init__(self, n: int = 3) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 24, 24, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": torch.zeros(1, 24, 24), "label": 0, "category": "c",
                "path": f"c/train/good/{i}.png", "has_mask": False}  # fmt: skip


@pytest.mark.parametrize("generator", ["confetti", "cutpaste"])
def test_normal_images_then_anomalous_copies_with_exact_masks(generator: str) -> None:
    base = _Normals()
    ds = SyntheticAnomalyDataset(base, generator, seed=0)
    assert len(ds) == 6
    for i in range(3):
        assert torch.equal(ds[i]["image"], base[i]["image"]) and ds[i]["label"] == 0
        item = ds[3 + i]
        assert item["label"] == 1 and item["has_mask"] and item["mask"].any()
        assert item["path"] == f"c/train/good/{i}.png#{generator}"
        outside = item["mask"].expand(3, -1, -1) == 0
        assert torch.equal(item["image"][outside], base[i]["image"][outside])


def test_each_copy_depends_on_the_seed_and_its_index_only() -> None:
    a, b = SyntheticAnomalyDataset(_Normals(), "cutpaste", 0), SyntheticAnomalyDataset(_Normals(), "cutpaste", 0)
    forward = [a[i]["mask"] for i in range(3, 6)]
    backward = [b[i]["mask"] for i in (5, 4, 3)][::-1]  # read in another order
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in (5, 3, 4))
    other = SyntheticAnomalyDataset(_Normals(), "cutpaste", 1)
    assert not all(torch.equal(x, other[i]["mask"]) for i, x in zip(range(3, 6), forward))


def test_bad_generators_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"data\.val_anomalies='bogus'"):
        check_generator("bogus")
    with pytest.raises(ValueError, match="nothing to add"):
        SyntheticAnomalyDataset(_Normals(), "none")
