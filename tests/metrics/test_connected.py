"""Connected components: 8-connectivity, ids unique across the batch, device round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from adzoo.metrics import connected_components

from ._synth import blob_masks


def test_diagonal_neighbours_join_and_background_is_zero() -> None:
    masks = torch.zeros(1, 5, 5, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal: one region with 8-connectivity
    masks[0, 3, 3] = True
    labels, n = connected_components(masks)
    assert n == 2
    assert labels.dtype == torch.int64
    assert labels.shape == (1, 5, 5)
    assert labels[0, 0, 0] == labels[0, 1, 1] != labels[0, 3, 3]
    assert (labels[~masks] == 0).all()
    assert (labels[masks] > 0).all()


def test_regions_never_span_images() -> None:
    masks = torch.ones(3, 4, 4)  # the same full square in every image
    labels, n = connected_components(masks)
    assert n == 3
    assert [set(labels[i].unique().tolist()) for i in range(3)] == [{1}, {2}, {3}]


def test_matches_per_image_scipy() -> None:
    masks = blob_masks(6, 32, 32, seed=1, level=0.8)
    labels, n = connected_components(masks)
    expected = sum(ndimage.label(m, np.ones((3, 3)))[1] for m in masks.numpy())
    assert n == expected
    assert sorted(labels.unique().tolist()) == list(range(n + 1))
    for i, m in enumerate(masks.numpy()):  # same partition as scipy, up to renumbering
        ref, _ = ndimage.label(m, np.ones((3, 3)))
        pairs = {(a, b) for a, b in zip(ref.ravel(), labels[i].numpy().ravel())}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_empty_and_4d_masks() -> None:
    labels, n = connected_components(torch.zeros(2, 1, 3, 3))
    assert n == 0
    assert labels.shape == (2, 3, 3)
    assert not labels.any()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_labels_come_back_on_the_input_device() -> None:
    masks = blob_masks(2, 16, 16, seed=2, level=0.8).cuda()
    labels, n = connected_components(masks)
    assert labels.device == masks.device
    expected, n_cpu = connected_components(masks.cpu())
    assert n == n_cpu
    assert torch.equal(labels.cpu(), expected)
