"""UniAD: taps, jitter, per-layer queries, masked reconstruction, ablation switches, score and output contract."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from adzoo.backbones import build_backbone
from adzoo.metrics import avgpool_max_score
from adzoo.models.uniad import UniAD
from adzoo.models.uniad.torch_model import UniADModel, UniADReconstruction, align_features, feature_jitter, image_score

SMALL = {"hidden_dim": 32, "num_heads": 4, "ffn_dim": 64, "dropout": 0.0}


def _reconstruction(**overrides) -> UniADReconstruction:
    torch.manual_seed(0)
    kwargs = {"in_channels": 12, "grid": (5, 5), "neighbour_mask_size": 3, **SMALL, **overrides}
    return UniADReconstruction(**kwargs).eval()


def _model(**overrides) -> UniADModel:
    torch.manual_seed(0)
    backbone = build_backbone("test_efficientnet", out_indices=[0, 1, 2, 3], weights="none")
    kwargs = {"image_size": 64, "neighbour_mask_size": 3, **SMALL, **overrides}
    return UniADModel(backbone, **kwargs).eval()


def test_taps_of_b4_give_272_channels_on_the_stride16_grid() -> None:
    backbone = build_backbone("tf_efficientnet_b4", out_indices=[0, 1, 2, 3], weights="none")
    assert backbone.channels == [24, 32, 56, 160] and backbone.strides == [2, 4, 8, 16]
    taps = [torch.randn(1, c, 224 // s, 224 // s) for c, s in zip(backbone.channels, backbone.strides)]
    aligned = align_features(taps, (14, 14))
    assert aligned.shape == (1, 272, 14, 14)
    # bilinear with align_corners=True keeps the corner samples exactly (align_corners=False would not)
    torch.testing.assert_close(aligned[:, :24, 0, 0], taps[0][:, :, 0, 0])
    torch.testing.assert_close(aligned[:, :24, -1, -1], taps[0][:, :, -1, -1])
    expected = F.interpolate(taps[1], size=(14, 14), mode="bilinear", align_corners=True)
    torch.testing.assert_close(aligned[:, 24:56], expected)
    assert torch.equal(aligned[:, 112:], taps[3])  # the stride-16 tap is untouched


def test_jitter_std_is_alpha_times_token_norm_over_channels() -> None:
    torch.manual_seed(0)
    channels = 64
    tokens = torch.randn(8, 512, channels) * torch.linspace(0.1, 10.0, 512)[None, :, None]
    noise = feature_jitter(tokens, scale=20.0) - tokens
    sigma = 20.0 * tokens.norm(dim=-1, keepdim=True) / channels
    z = noise / sigma  # standardised noise must be N(0, 1), whatever the token norm
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1.0) < 0.01
    small, large = z[:, :256].std().item(), z[:, 256:].std().item()
    assert abs(small - large) < 0.02  # scale follows the token's own norm, token by token
    ratio = noise[:, -1].std() / noise[:, 0].std()
    assert ratio.item() == pytest.approx(sigma[:, -1].mean().item() / sigma[:, 0].mean().item(), rel=0.1)


def test_jitter_only_in_training_and_with_its_probability() -> None:
    model = _model(jitter_prob=1.0)
    aligned = torch.randn(2, sum(model.backbone.channels), 4, 4)
    clean = model.reconstruct(aligned)
    model.train()
    assert not torch.allclose(model.reconstruct(aligned), clean)  # dropout is 0: only the jitter differs
    model.jitter_prob = 0.0
    torch.testing.assert_close(model.reconstruct(aligned), clean)
    model.jitter_prob, model.feature_jitter = 1.0, False
    torch.testing.assert_close(model.reconstruct(aligned), clean)


def test_every_decoder_layer_owns_a_distinct_trained_query_table() -> None:
    recon = _reconstruction(num_decoder_layers=4)
    tables = list(recon.queries)
    assert len(tables) == 4 and len({id(t) for t in tables}) == 4
    assert len({t.data_ptr() for t in tables}) == 4
    assert all(not torch.equal(tables[0], t) for t in tables[1:])
    assert all(t.shape == (25, 32) for t in tables)
    params = {id(p) for p in recon.parameters()}
    assert all(id(t) in params for t in tables)  # the optimiser sees them
    recon(torch.randn(2, 25, 12)).pow(2).mean().backward()
    grads = [t.grad for t in tables]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(not torch.allclose(grads[0], g) for g in grads[1:])
    assert len(_reconstruction(layerwise_query=False).queries) == 1


def _perturbation_reaches(recon: UniADReconstruction, token: int) -> torch.Tensor:
    """Per output token: how much it moves when one input token is changed."""
    torch.manual_seed(1)
    x = torch.randn(1, recon.num_tokens, 12)
    y = x.clone()
    y[0, token] += 10.0 * torch.randn(12)
    with torch.no_grad():
        return (recon(x) - recon(y)).abs().amax(dim=-1)[0]


def test_a_token_is_not_rebuilt_from_its_own_feature_through_the_masked_attention() -> None:
    """Perturb one input token: its own output (and its window's) cannot change. No identity copy."""
    centre = 12  # token (2, 2) of the 5x5 grid; its 3x3 window holds tokens (1..3, 1..3)
    recon = _reconstruction(num_encoder_layers=0, num_decoder_layers=1)
    moved = _perturbation_reaches(recon, centre)
    window = recon.mask[centre]
    assert moved[centre].item() < 1e-5
    assert moved[window].max().item() < 1e-5
    assert moved[~window].min().item() > 1e-3  # far tokens do read it
    unmasked = _reconstruction(num_encoder_layers=0, num_decoder_layers=1, neighbour_mask=False)
    unmasked.load_state_dict(recon.state_dict())
    assert _perturbation_reaches(unmasked, centre)[centre].item() > 1e-3


def test_neighbour_mask_switch_changes_the_computation() -> None:
    masked = _reconstruction()
    unmasked = _reconstruction(neighbour_mask=False)
    unmasked.load_state_dict(masked.state_dict())  # same weights: only the mask differs
    x = torch.randn(2, 25, 12)
    assert masked.mask.sum() > 0 and not unmasked.mask.any()
    assert not torch.allclose(masked(x), unmasked(x))
    sites = _reconstruction(neighbour_mask_sites=[True, False, True])
    sites.load_state_dict(masked.state_dict())
    assert not torch.allclose(masked(x), sites(x))


def test_layerwise_query_switch_changes_the_computation() -> None:
    lqd = _reconstruction()
    vanilla = _reconstruction(layerwise_query=False)
    missing = vanilla.load_state_dict(lqd.state_dict(), strict=False)
    assert missing.unexpected_keys == ["queries.1", "queries.2", "queries.3"] and not missing.missing_keys
    x = torch.randn(2, 25, 12)
    assert not torch.allclose(lqd(x), vanilla(x))
    # with LQD a later layer's table feeds the output; without it only the first table exists
    lqd.queries[3].data += 1.0
    assert not torch.allclose(lqd(x), _reconstruction()(x))


def test_feature_jitter_switch_changes_the_computation() -> None:
    on, off = _model(feature_jitter=True).train(), _model(feature_jitter=False).train()
    aligned = torch.randn(2, sum(on.backbone.channels), 4, 4)
    reference = copy.deepcopy(off).eval().reconstruct(aligned)
    torch.testing.assert_close(off.reconstruct(aligned), reference)
    assert not torch.allclose(on.reconstruct(aligned), reference)


def test_image_score_convention() -> None:
    spot = torch.zeros(2, 1, 64, 64)
    spot[0, 0, 10, 10] = 256.0  # one hot pixel
    spot[1, 0, 20:36, 20:36] = 2.0  # a 16x16 patch of a lower value
    pooled = image_score(spot, "max", 16)
    torch.testing.assert_close(pooled, torch.tensor([1.0, 2.0]))  # the pool favours the extended region
    torch.testing.assert_close(pooled, avgpool_max_score(spot, 16))
    torch.testing.assert_close(image_score(spot, "mean"), spot.flatten(1).mean(1))
    with pytest.raises(ValueError, match="score_mode"):
        image_score(spot, "median")


def test_worse_reconstruction_scores_higher_and_the_map_points_at_it() -> None:
    model = _model()
    aligned = torch.randn(2, sum(model.backbone.channels), 4, 4)
    rebuilt = aligned.clone()
    rebuilt[1, :, 3, 0] += 1.0  # image 1 is badly rebuilt at token (3, 0)
    out = model.score(aligned, rebuilt, (64, 64))
    assert out.pred_score[0].item() == 0.0 and out.pred_score[1].item() > 0
    assert out.anomaly_map[0].abs().max().item() == 0.0
    peak = out.anomaly_map[1, 0].flatten().argmax().item()
    assert (peak // 64, peak % 64) == (63, 0)  # align_corners=True puts the token's value at the corner pixel
    assert out.anomaly_map[1, 0, 63, 0].item() == pytest.approx(aligned.shape[1] ** 0.5)  # ‖1 over C channels‖₂


def test_output_contract_score_and_map_at_input_size() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("test_efficientnet", out_indices=[0, 1, 2, 3], weights="none")
    module = UniAD(backbone, image_size=64, neighbour_mask_size=3, **SMALL).eval()
    images = torch.rand(3, 3, 64, 64)
    out = module(images)
    assert out.pred_score.shape == (3,) and out.anomaly_map.shape == (3, 1, 64, 64)
    assert torch.isfinite(out.anomaly_map).all() and (out.anomaly_map >= 0).all()
    torch.testing.assert_close(module(images).anomaly_map, out.anomaly_map)  # eval is deterministic
    with pytest.raises(ValueError, match="image_size"):
        module(torch.rand(1, 3, 96, 96))
    hparams = dict(module.hparams)
    assert "backbone" not in hparams and hparams["neighbour_mask_sites"] == [True, True, True]


def test_bad_sizes_are_refused_with_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"model\.neighbour_mask_size=7 .*4x4"):
        _model(neighbour_mask_size=7)
    _model(neighbour_mask_size=7, neighbour_mask=False)  # no mask, no constraint
    with pytest.raises(ValueError, match=r"multiple of model\.feature_stride"):
        _model(image_size=72)
    with pytest.raises(ValueError, match="score_mode"):
        _model(score_mode="std")
