"""Student init of timm's fused qkv (issue 20): Xavier per d x d q/k/v block as the official separate Linears."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from adzoo.backbones import build_backbone
from adzoo.models.transformaly import TransformalyModel
from adzoo.models.transformaly.teacher import build_teacher
from adzoo.models.transformaly.torch_model import reinitialise


@pytest.fixture(scope="module")
def vit_s_teacher():
    """The ViT-S/14 architecture of the packaged backbone (d = 384), random weights: no download, no conversion."""
    torch.manual_seed(0)
    return build_teacher(build_backbone("vit_small_patch14_dinov2", out_indices=[-1], weights="none", kind="vit"))


def _xavier_var(fan_out: int, fan_in: int) -> float:
    """Variance of U(-b, b) with the Xavier bound b = sqrt(6 / (fan_in + fan_out)): b^2 / 3."""
    return 2.0 / (fan_in + fan_out)


@pytest.mark.parametrize("qkv_init", ["separate", "fused"])
def test_each_qkv_third_has_the_xavier_variance_of_its_setting(vit_s_teacher, qkv_init: str) -> None:
    torch.manual_seed(0)
    model = TransformalyModel(vit_s_teacher, qkv_init=qkv_init)
    d = vit_s_teacher.blocks[0].attn.qkv.in_features
    assert d == 384
    expected = _xavier_var(d, d) if qkv_init == "separate" else _xavier_var(3 * d, d)
    bound = math.sqrt(3 * expected)
    assert len(model.students) == len(vit_s_teacher) == 12
    for b, student in model.students.items():
        weight = student.attn.qkv.weight.detach()
        assert weight.shape == (3 * d, d)
        for part, chunk in zip("qkv", weight.chunk(3, dim=0)):
            var = chunk.var().item()
            assert abs(var / expected - 1) < 0.1, f"block {b} {part}: var {var:.3e}, expected {expected:.3e}"
            assert chunk.abs().max().item() <= bound
        # the other Linears are unchanged by the setting: one matrix each
        proj = student.attn.proj.weight.detach()
        assert abs(proj.var().item() / _xavier_var(d, d) - 1) < 0.1
        assert student.attn.qkv.bias.detach().std().item() < 1e-5


def test_separate_and_fused_differ_by_sqrt2_in_scale(vit_s_teacher) -> None:
    block = vit_s_teacher.blocks[0]
    stds = {}
    for mode in ("separate", "fused"):
        torch.manual_seed(0)
        stds[mode] = reinitialise(copy.deepcopy(block), qkv_init=mode).attn.qkv.weight.std().item()
    assert stds["separate"] / stds["fused"] == pytest.approx(math.sqrt(2), rel=0.02)


def test_unknown_qkv_init_is_refused(vit_s_teacher) -> None:
    with pytest.raises(ValueError, match="qkv_init"):
        TransformalyModel(vit_s_teacher, qkv_init="per_head")
