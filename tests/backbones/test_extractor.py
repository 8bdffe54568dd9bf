"""FeatureExtractor: reported channels/strides match real outputs; frozen means frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adzoo.backbones import FeatureExtractor, build_backbone, resolve_kind


def _check_shapes(ext: FeatureExtractor, h: int, w: int, batch: int = 2) -> None:
    feats = ext(torch.rand(batch, 3, h, w))
    assert len(feats) == len(ext.channels) == len(ext.strides)
    for f, c, s in zip(feats, ext.channels, ext.strides, strict=True):
        assert f.shape == (batch, c, h // s, w // s)


@pytest.mark.parametrize(("h", "w"), [(64, 64), (96, 128)])
def test_cnn_test_efficientnet_shapes(h: int, w: int) -> None:
    ext = FeatureExtractor("test_efficientnet", out_indices=(1, 2, 3), weights="none")
    assert ext.kind == "cnn"
    _check_shapes(ext, h, w)


@pytest.mark.parametrize(("h", "w"), [(64, 64), (48, 112), (160, 160)])
def test_vit_test_vit_shapes(h: int, w: int) -> None:
    ext = FeatureExtractor("test_vit", out_indices=(0, 2, -1), weights="none")
    assert ext.kind == "vit"
    assert ext.out_indices == (0, 2, 5)  # negative taps resolve against the block count
    assert ext.channels == [ext.model.embed_dim] * 3
    assert ext.strides == [ext.model.patch_embed.patch_size[0]] * 3
    _check_shapes(ext, h, w)


def test_vit_pruned_blocks_and_bad_size() -> None:
    ext = FeatureExtractor("test_vit", out_indices=(1,), weights="none")
    assert len(ext.model.blocks) == 2  # blocks after the last tap are dropped
    with pytest.raises(ValueError, match="divisible"):
        ext(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match="out of range"):
        FeatureExtractor("test_vit", out_indices=(6,), weights="none")


def test_lite0_packaged_shapes_and_identity() -> None:
    ext = build_backbone("tf_efficientnet_lite0", out_indices=(1, 2, 3, 4), weights="packaged")
    assert ext.channels == [24, 40, 112, 320]
    assert ext.strides == [4, 8, 16, 32]
    _check_shapes(ext, 128, 96)
    assert ext.identity() == "tf_efficientnet_lite0|weights=packaged|out_indices=1,2,3,4|kind=cnn"
    # timm's lite0 preprocessing is mean = std = 0.5, read from its pretrained_cfg.
    assert torch.allclose(ext.mean.flatten(), torch.full((3,), 0.5))
    assert torch.allclose(ext.std.flatten(), torch.full((3,), 0.5))


def test_normalisation_uses_model_mean_std() -> None:
    ext = FeatureExtractor("test_efficientnet", out_indices=(0,), weights="none")
    assert torch.allclose(ext.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    x = torch.rand(1, 3, 32, 32)
    expected = ext.model((x - ext.mean) / ext.std)[0]
    assert torch.equal(ext(x)[0], expected)  # bitwise: the same ops on the same one-image batch, one process


def test_kind_detection_and_validation() -> None:
    assert resolve_kind("test_vit") == "vit"
    assert resolve_kind("vit_small_patch14_dinov2") == "vit"
    assert resolve_kind("tf_efficientnet_lite0") == "cnn"
    with pytest.raises(ValueError, match="kind"):
        resolve_kind("test_vit", "transformer")
    with pytest.raises(ValueError, match="Unknown timm model"):
        FeatureExtractor("no_such_model", weights="none")
    with pytest.raises(ValueError, match="weights"):
        FeatureExtractor("test_efficientnet", weights="imagenet")


class _Parent(nn.Module):
    def __init__(self, ext: FeatureExtractor) -> None:
        super().__init__()
        self.backbone = ext
        self.head = nn.Conv2d(ext.channels[-1], 1, 1)


def test_frozen_stays_frozen() -> None:
    ext = FeatureExtractor("test_efficientnet", out_indices=(0, 1), weights="none", frozen=True)
    parent = _Parent(ext).train()
    assert parent.training
    assert parent.head.training
    assert not any(m.training for m in ext.modules())
    assert not any(p.requires_grad for p in ext.parameters())
    bns = [m for m in ext.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns
    before = [bn.running_mean.clone() for bn in bns]
    feats = ext(torch.rand(4, 3, 32, 32) * 3)
    assert not feats[-1].requires_grad
    for bn, old in zip(bns, before, strict=True):
        assert torch.equal(bn.running_mean, old)
    # The head still trains on top of frozen features.
    parent.head(feats[-1]).mean().backward()
    assert parent.head.weight.grad is not None


def test_unfrozen_trains() -> None:
    ext = FeatureExtractor("test_efficientnet", out_indices=(0,), weights="none", frozen=False)
    ext.train()
    assert ext.training
    assert all(p.requires_grad for p in ext.parameters())
    ext(torch.rand(2, 3, 32, 32))[0].mean().backward()
    assert ext.model.conv_stem.weight.grad is not None
