"""Confetti noise: masks are exactly the pasted pixels, blobs respect the configured counts and sizes."""

from __future__ import annotations

import pytest
import torch

from adzoo.data.confetti import ConfettiConfig, confetti_noise


def test_masks_match_the_pasted_pixels_exactly() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 40, 48)
    noised, masks = confetti_noise(images)
    assert noised.shape == images.shape and masks.shape == (6, 1, 40, 48)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    changed = (noised != images).any(dim=1, keepdim=True)
    assert torch.equal(changed, masks.bool())  # changed ⇔ masked, pixel by pixel
    assert (masks.flatten(1).sum(1) > 0).all()  # every image got at least one blob
    assert torch.equal(images, images.clone())  # the input is not modified in place
    for b in range(6):  # inside the mask every pixel carries one of the blob colours, one colour per blob
        colours = noised[b].permute(1, 2, 0)[masks[b, 0].bool()].unique(dim=0)
        assert 1 <= colours.shape[0] <= ConfettiConfig().max_blobs


def test_one_unrotated_blob_is_a_rectangle_of_the_configured_size() -> None:
    config = ConfettiConfig(min_blobs=1, max_blobs=1, min_size=0.25, max_size=0.25, max_rotation=0.0)
    images = torch.full((20, 3, 64, 64), 0.5)
    _, masks = confetti_noise(images, config, torch.Generator().manual_seed(3))
    for mask in masks[:, 0]:
        rows, cols = mask.nonzero().unbind(1)
        assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a filled rectangle
        assert rows.max() - rows.min() + 1 <= 17 and cols.max() - cols.min() + 1 <= 17  # 0.25·64 = 16 (+1 border)
    full = masks[:, 0].flatten(1).sum(1)
    assert full.max() == 17 * 17  # an unclipped blob (the centre is a pixel, the side 16 spans 17 pixels)


def test_generator_makes_it_reproducible_and_bad_configs_are_refused() -> None:
    images = torch.rand(3, 3, 32, 32)
    a = confetti_noise(images, generator=torch.Generator().manual_seed(7))
    b = confetti_noise(images, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="min_blobs"):
        ConfettiConfig(min_blobs=3, max_blobs=2)
    with pytest.raises(ValueError, match="min_size"):
        ConfettiConfig(min_size=0.0)
