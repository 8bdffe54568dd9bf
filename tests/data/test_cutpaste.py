"""CutPaste: one rectangle of the image's own pixels pasted elsewhere, changed only inside its exact mask."""

from __future__ import annotations

import pytest
import torch

from adzoo.data.cutpaste import CutPasteConfig, cutpaste


def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_the_image_changes_only_inside_one_rectangle_of_the_configured_area() -> None:
    images = _images()
    config = CutPasteConfig()
    out, masks = cutpaste(images, config, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and masks.shape == (4, 1, 32, 32) and masks.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    outside = masks.expand_as(images) == 0
    assert torch.equal(out[outside], images[outside])
    for mask in masks[:, 0]:
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(mask.sum()) == h * w  # one filled axis-aligned rectangle
        # each side is sqrt(area·aspect) or sqrt(area/aspect) rounded to a pixel: h·w is within (h + w)/2 + 1/4
        # pixels of the drawn area
        slack = (h + w) / 2 + 0.25
        assert config.min_area * 1024 - slack <= h * w <= config.max_area * 1024 + slack


def test_the_same_seed_gives_the_same_paste() -> None:
    images = _images()
    a = cutpaste(images, generator=torch.Generator().manual_seed(5))
    b = cutpaste(images, generator=torch.Generator().manual_seed(5))
    c = cutpaste(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="min_area <= max_area"):
        CutPasteConfig(min_area=0.2, max_area=0.1)
    with pytest.raises(ValueError, match="min_aspect <= max_aspect"):
        CutPasteConfig(min_aspect=0)
    with pytest.raises(ValueError, match="jitter"):
        CutPasteConfig(jitter=-1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        cutpaste(torch.rand(3, 8, 8))
