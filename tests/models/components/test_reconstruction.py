"""The shared reconstruction stack: one transformer and one scoring path for UniAD and ADTR."""

from __future__ import annotations

import pytest
import torch

from adzoo.backbones import build_backbone
from adzoo.models.adtr.torch_model import ADTRModel
from adzoo.models.components import FeatureReconstructionModel, ReconstructionTransformer, distance_map, image_score
from adzoo.models.uniad.torch_model import UniADModel

SMALL = {"hidden_dim": 32, "num_heads": 4, "ffn_dim": 64, "dropout": 0.0}


class _Shift(FeatureReconstructionModel):
    def perturb(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + 1.0


def _backbone() -> torch.nn.Module:
    return build_backbone("test_efficientnet", out_indices=[0, 1, 2, 3], weights="none")


def test_uniad_and_adtr_share_the_stack_and_differ_only_in_its_switches() -> None:
    uniad = UniADModel(_backbone(), image_size=64, neighbour_mask_size=3, **SMALL)
    adtr = ADTRModel(_backbone(), image_size=64, **SMALL)
    for model in (uniad, adtr):
        assert isinstance(model, FeatureReconstructionModel)
        assert type(model.reconstruction) is ReconstructionTransformer
    assert uniad.reconstruction.layerwise_query and uniad.reconstruction.use_neighbour_mask
    assert not adtr.reconstruction.layerwise_query and not adtr.reconstruction.use_neighbour_mask
    # the same parameter names, except the per-layer query tables of UniAD's LQD
    extra = set(uniad.reconstruction.state_dict()) - set(adtr.reconstruction.state_dict())
    assert extra == {"queries.1", "queries.2", "queries.3"}


def test_perturb_hook_changes_only_what_the_transformer_sees() -> None:
    torch.manual_seed(0)
    plain = FeatureReconstructionModel(_backbone(), image_size=64, neighbour_mask=False, **SMALL).eval()
    shifted = _Shift(_backbone(), image_size=64, neighbour_mask=False, **SMALL).eval()
    shifted.load_state_dict(plain.state_dict())
    aligned = torch.randn(2, plain.in_channels, 4, 4)
    torch.testing.assert_close(shifted.reconstruct(aligned), plain.reconstruct(aligned + 1.0))


def test_map_and_score_are_the_l2_distance_and_its_pooled_max() -> None:
    model = FeatureReconstructionModel(_backbone(), image_size=64, neighbour_mask=False, **SMALL)
    aligned = torch.zeros(1, model.in_channels, 4, 4)
    rebuilt = aligned.clone()
    rebuilt[0, :4, 1, 2] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    distance = distance_map(aligned, rebuilt)
    assert distance[0, 1, 2].item() == pytest.approx(5.0) and distance.sum().item() == pytest.approx(5.0)
    out = model.score(aligned, rebuilt, (64, 64))
    torch.testing.assert_close(out.pred_score, image_score(out.anomaly_map, "max", 16))
    with pytest.raises(ValueError, match="score_mode"):
        FeatureReconstructionModel(_backbone(), image_size=64, score_mode="median", **SMALL)


def test_area_alignment_averages_fine_taps_and_still_upsamples_coarse_ones() -> None:
    from adzoo.models.components.reconstruction import align_features

    fine = torch.arange(64.0).view(1, 1, 8, 8)  # a stride-2 tap seen on a 2x2 grid: each cell is a 4x4 block
    coarse = torch.tensor([[[[0.0]], [[1.0]]]])  # 1x1, two channels: upsampled, never pooled
    area = align_features([fine, coarse], (2, 2), mode="area")
    expected = fine.view(1, 1, 2, 4, 2, 4).mean(dim=(3, 5))
    torch.testing.assert_close(area[:, :1], expected)
    torch.testing.assert_close(area[:, 1:], torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2))
    bilinear = align_features([fine, coarse], (2, 2))
    # the reference neck samples the corners of the tap instead: 0, 7, 56, 63
    assert bilinear[0, 0].flatten().tolist() == [0.0, 7.0, 56.0, 63.0]
    with pytest.raises(ValueError, match=r"model\.align_mode"):
        align_features([fine], (2, 2), mode="nearest")


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_align_mode_reaches_the_model(mode: str) -> None:
    model = UniADModel(_backbone(), image_size=64, neighbour_mask_size=3, align_mode=mode, **SMALL).eval()
    images = torch.rand(2, 3, 64, 64)
    aligned = model.align(model.backbone(images), (64, 64))
    from adzoo.models.components.reconstruction import align_features

    torch.testing.assert_close(aligned, align_features(model.backbone(images), model.grid, mode))
