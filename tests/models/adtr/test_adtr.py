"""ADTR: taps 1-5, the query-table decoder, the losses of ADTR and ADTR+, the training step and the contract."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from adzoo.backbones import build_backbone
from adzoo.models.adtr import ADTR
from adzoo.models.adtr.anomalies import AnomalySource
from adzoo.models.adtr.lightning_model import resolve_finetune_checkpoint
from adzoo.models.adtr.losses import downsample_labels, image_loss, normal_loss, pixel_loss, pseudo_huber
from adzoo.models.adtr.torch_model import ADTRModel

SMALL = {"hidden_dim": 32, "num_heads": 4, "ffn_dim": 64, "dropout": 0.0}


def _backbone() -> torch.nn.Module:
    return build_backbone("test_efficientnet", out_indices=[0, 1, 2, 3, 4], weights="none")


def _model(**overrides) -> ADTRModel:
    torch.manual_seed(0)
    return ADTRModel(_backbone(), **{"image_size": 64, **SMALL, **overrides}).eval()


def _module(**overrides) -> ADTR:
    torch.manual_seed(0)
    return ADTR(_backbone(), **{"image_size": 64, **SMALL, **overrides})


def test_taps_1_to_5_of_b4_give_720_channels_and_a_16x16_grid_at_256() -> None:
    backbone = build_backbone("tf_efficientnet_b4", out_indices=[0, 1, 2, 3, 4], weights="none")
    assert backbone.channels == [24, 32, 56, 160, 448] and backbone.strides == [2, 4, 8, 16, 32]
    model = ADTRModel(backbone, image_size=256)
    recon = model.reconstruction
    assert model.in_channels == 720 and model.grid == (16, 16) and recon.num_tokens == 256
    assert recon.input_proj.weight.shape == (256, 720) and recon.output_proj.weight.shape == (720, 256)
    assert len(recon.encoder.layers) == 4 and len(recon.decoder) == 4
    assert recon.decoder[0].attn1.attn.num_heads == 8 and recon.decoder[0].ffn.net[0].out_features == 1024
    taps = [torch.randn(1, c, 256 // s, 256 // s) for c, s in zip(backbone.channels, backbone.strides)]
    aligned = model.align(taps, (256, 256))
    assert aligned.shape == (1, 720, 16, 16)
    assert torch.equal(aligned[:, 112:272], taps[3])  # the stride-16 tap is untouched, the others resized


def test_no_neighbour_mask_and_a_single_query_table() -> None:
    recon = _model().reconstruction
    assert not recon.use_neighbour_mask and not recon.mask.any()
    assert not recon.layerwise_query and len(recon.queries) == 1
    assert recon.queries[0].shape == (recon.num_tokens, 32)


def test_the_decoder_first_input_is_the_query_table_not_the_encoder_features() -> None:
    recon = _model().reconstruction
    seen: dict[str, torch.Tensor] = {}
    recon.encoder.register_forward_hook(lambda m, args, out: seen.__setitem__("encoded", out))
    for i, layer in enumerate(recon.decoder):
        layer.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(f"tgt{i}", args[0]))
        layer.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(f"memory{i}", args[1]))
        layer.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(f"out{i}", out))
    with torch.no_grad():
        recon(torch.randn(2, recon.num_tokens, recon.input_proj.in_features))
    assert torch.equal(seen["tgt0"], recon.queries[0].expand(2, -1, -1))  # queries, the same for every image
    assert not torch.allclose(seen["tgt0"], seen["encoded"])
    for i in range(len(recon.decoder)):
        assert seen[f"memory{i}"] is seen["encoded"]  # every layer cross-attends to the encoder output
        if i:
            assert seen[f"tgt{i}"] is seen[f"out{i - 1}"]  # and self-attends on the running decoder output


def test_the_query_table_is_used_and_trained() -> None:
    model = _model()
    recon = model.reconstruction
    tokens = torch.randn(2, recon.num_tokens, model.in_channels)
    with torch.no_grad():
        before = recon(tokens)
        recon.queries[0].add_(0.5 * torch.randn_like(recon.queries[0]))
        assert not torch.allclose(recon(tokens), before, atol=1e-4)
    recon(tokens).pow(2).mean().backward()
    assert recon.queries[0].grad is not None and recon.queries[0].grad.abs().sum() > 0


def test_decoder_final_norm_is_a_switch() -> None:
    on, off = _model(), _model(decoder_final_norm=False)
    assert isinstance(on.reconstruction.decoder_norm, torch.nn.LayerNorm)
    assert isinstance(off.reconstruction.decoder_norm, torch.nn.Identity)
    missing = off.reconstruction.load_state_dict(on.reconstruction.state_dict(), strict=False)
    assert set(missing.unexpected_keys) == {"decoder_norm.weight", "decoder_norm.bias"}
    tokens = torch.randn(1, on.reconstruction.num_tokens, on.in_channels)
    assert not torch.allclose(on.reconstruction(tokens), off.reconstruction(tokens))


def test_normal_loss_is_squared_l2_over_channels_averaged_over_positions() -> None:
    d = torch.tensor([[[[1.0, 0.0]], [[2.0, 3.0]]]])  # (B=1, C=2, H=1, W=2)
    # position 0: 1² + 2² = 5; position 1: 0² + 3² = 9 → mean 7
    assert normal_loss(d).item() == pytest.approx(7.0)


def test_pseudo_huber_and_pixel_loss_match_hand_computed_values() -> None:
    d = torch.tensor([[[[2.0, -1.0]], [[0.0, 3.0]]], [[[1.0, 1.0]], [[-1.0, 1.0]]]])  # (2, 2, 1, 2)
    phi = pseudo_huber(d)
    # mean |d| over channels: image 0 → (1, 2), image 1 → (1, 1); φ = sqrt(m² + 1) − 1
    r2, r5 = math.sqrt(2) - 1, math.sqrt(5) - 1
    torch.testing.assert_close(phi, torch.tensor([[[r2, r5]], [[r2, r2]]]))
    labels = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]])
    alpha = 0.5
    # image 0: pull = (r2 + 0)/2, push = −α·log(1 − exp(−(0 + r5)/2)); image 1: only pull = (r2 + r2)/2
    image0 = r2 / 2 - alpha * math.log(1 - math.exp(-r5 / 2))
    image1 = r2
    assert pixel_loss(phi, labels, alpha).item() == pytest.approx((image0 + image1) / 2, rel=1e-6)
    assert pixel_loss(phi, torch.zeros_like(phi), alpha).item() == pytest.approx(phi.mean().item())


def test_pixel_loss_pushes_anomalous_positions_up() -> None:
    phi = torch.full((1, 2, 2), 0.1, requires_grad=True)
    labels = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    pixel_loss(phi, labels, alpha=0.003).backward()
    assert phi.grad[0, 0, 0] < 0 and (phi.grad[0].flatten()[1:] > 0).all()  # push up the anomaly, pull the rest


def test_image_loss_top_k_matches_hand_computed_values() -> None:
    phi = torch.tensor([[[0.1, 0.4], [0.3, 0.2]], [[1.0, 0.0], [0.5, 2.0]]])
    labels = torch.tensor([0.0, 1.0])
    alpha = 0.003
    q0, q1 = (0.4 + 0.3) / 2, (2.0 + 1.0) / 2  # top-2 means
    expected = (q0 + (-alpha * math.log(1 - math.exp(-q1)))) / 2
    assert image_loss(phi, labels, alpha, top_k=2).item() == pytest.approx(expected, rel=1e-6)
    # k larger than the grid: the mean of every position
    assert image_loss(phi[:1], labels[:1], alpha, top_k=20).item() == pytest.approx(0.25, rel=1e-6)


def test_pixel_labels_on_the_token_grid() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 0, 0] = 1.0  # one pixel of the top-left 4x4 cell
    mask[0, 0, 4:, 4:] = 1.0  # the whole bottom-right cell
    torch.testing.assert_close(downsample_labels(mask, (2, 2), "max"), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    torch.testing.assert_close(downsample_labels(mask, (2, 2), "area"), torch.tensor([[[1 / 16, 0.0], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="label_downsampling"):
        downsample_labels(mask, (2, 2), "nearest")


@pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")
@pytest.mark.parametrize("supervision", ["pixel", "image"])
def test_adtr_plus_caches_only_the_clean_normals(supervision: str) -> None:
    module = _module(anomaly_supervision=supervision, supervised_start=0.0, anomaly_ratio=0.5)
    calls: list[int] = []
    module.model.backbone.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    images = torch.rand(4, 3, 64, 64)
    batch = {"image": images}
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss) and loss.requires_grad
    assert calls == [4, 2]  # the 4 normals (cache misses), then 2 anomalies straight to the backbone
    loss = module.training_step(batch, 1)
    assert calls == [4, 2, 2]  # normals now come from the cache; new anomalies are never cached
    assert len(module._feature_cache) == 4


@pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")
def test_normal_only_training_is_l_norm_on_cached_features() -> None:
    module = _module()
    images = torch.rand(2, 3, 64, 64)
    module.model.eval()  # no dropout: the step's loss is L_norm of this module's own reconstruction
    loss = module.training_step({"image": images}, 0)
    with torch.no_grad():
        aligned = module.model.align(module.model.backbone(images), (64, 64))
        expected = (aligned - module.model.reconstruct(aligned)).pow(2).sum(dim=1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and len(module._feature_cache) == 2
    assert not module.supervised_now()


def test_within_run_schedule_and_fine_tuning(tmp_path: Path) -> None:
    module = _module(anomaly_supervision="pixel", supervised_start=0.625)
    assert [module.supervised_at(epoch, 8) for epoch in range(8)] == [False] * 5 + [True] * 3  # 5 of 8 normal-only
    assert not _module().supervised_at(7, 8)  # plain ADTR is never supervised
    normal_only = _module()
    normal_only.model.reconstruction.queries[0].data.fill_(0.25)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": normal_only.state_dict()}, ckpt)
    assert resolve_finetune_checkpoint(tmp_path / "run") == ckpt
    per_category = tmp_path / "run" / "categories" / "pill" / "checkpoints" / "last.ckpt"
    per_category.parent.mkdir(parents=True)
    torch.save({"state_dict": normal_only.state_dict()}, per_category)
    assert resolve_finetune_checkpoint(tmp_path / "run", ["pill"]) == per_category
    with pytest.raises(FileNotFoundError, match="finetune_from"):
        resolve_finetune_checkpoint(tmp_path / "nowhere")
    tuned = _module(anomaly_supervision="pixel", finetune_from=str(ckpt))
    tuned.setup("fit")
    assert torch.equal(tuned.model.reconstruction.queries[0], normal_only.model.reconstruction.queries[0])
    assert tuned.supervised_at(0, 8)  # fine-tuning: supervised from the first epoch


def test_outlier_sources() -> None:
    normals = torch.rand(3, 3, 32, 32)
    images, masks = AnomalySource("confetti")(normals, 5)
    assert images.shape == (5, 3, 32, 32) and masks.shape == (5, 1, 32, 32) and (masks.flatten(1).sum(1) > 0).all()
    images, masks = AnomalySource("digits")(normals, 2)
    assert images.shape == (2, 3, 32, 32) and masks.min() == 1.0 and 0.0 <= images.min() <= images.max() <= 1.0
    with pytest.raises(ValueError, match="outlier_source"):
        AnomalySource("cifar100")


def test_output_contract_and_bad_values() -> None:
    module = _module().eval()
    images = torch.rand(3, 3, 64, 64)
    out = module(images)
    assert out.pred_score.shape == (3,) and out.anomaly_map.shape == (3, 1, 64, 64)
    assert torch.isfinite(out.anomaly_map).all() and (out.anomaly_map >= 0).all()
    torch.testing.assert_close(module(images).anomaly_map, out.anomaly_map)
    with pytest.raises(ValueError, match="image_size"):
        module(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="anomaly_supervision"):
        _module(anomaly_supervision="weak")
    with pytest.raises(ValueError, match="supervised_start"):
        _module(supervised_start=1.0)
    with pytest.raises(ValueError, match="label_downsampling"):
        _module(label_downsampling="nearest")
