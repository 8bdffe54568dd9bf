"""Patch kNN: the bank holds normal patches, and an unseen patch pattern scores higher than a seen one."""

from __future__ import annotations

import pytest
import torch

from adzoo.backbones import build_backbone
from adzoo.models.patchknn.torch_model import PatchKNNModel


def _model() -> PatchKNNModel:
    torch.manual_seed(0)
    return PatchKNNModel(build_backbone("test_efficientnet", out_indices=[1, 2], weights="none"))


def test_normal_images_score_below_an_anomalous_one() -> None:
    model = _model()
    normal = torch.full((4, 3, 32, 32), 0.5) + 0.01 * torch.randn(4, 3, 32, 32)
    embedding = model.embed(model.backbone(normal))
    model.fit(embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]))
    anomalous = normal[:1].clone()
    anomalous[:, :, 8:16, 8:16] = torch.rand(1, 3, 8, 8)
    out_normal, out_anomalous = model(normal[:1]), model(anomalous)
    assert out_anomalous.anomaly_map.shape == (1, 1, 32, 32)
    assert out_anomalous.pred_score.item() > out_normal.pred_score.item() + 1e-3
    # the anomaly map peaks inside the pasted square
    peak = out_anomalous.anomaly_map[0, 0].flatten().argmax().item()
    assert 4 <= peak // 32 <= 20 and 4 <= peak % 32 <= 20


def test_patchcore_reweighting_follows_eq7() -> None:
    """Eq. 7 by hand: s = (1 − exp‖m* − m_b*‖ / Σ_{N_b(m_b*)} exp‖m* − m‖) · s*, with m_b* among its own N_b."""
    model = _model()
    model.reweight_neighbours = 3
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    model.fit(bank)
    patches = torch.tensor([[0.5, 0.1], [0.2, 0.0], [4.0, 4.5], [0.0, 1.9]])  # one image of 2×2 patches (D=2)
    out = model.score_embeddings(patches.T.reshape(1, 2, 2, 2), (4, 4))
    distances = torch.cdist(patches, bank)
    star, nearest = (
        distances.min(dim=1).values.max(),
        distances.min(dim=1).indices[distances.min(dim=1).values.argmax()],
    )
    worst = patches[distances.min(dim=1).values.argmax()]
    support = torch.cdist(bank[nearest][None], bank)[0].topk(3, largest=False).indices
    expected = (1 - torch.exp(star) / torch.exp(torch.linalg.vector_norm(worst - bank[support], dim=1)).sum()) * star
    assert out.pred_score.item() == pytest.approx(expected.item(), rel=1e-5)
    model.reweight_neighbours = 0
    assert model.score_embeddings(patches.T.reshape(1, 2, 2, 2), (4, 4)).pred_score.item() == pytest.approx(star.item())


def test_blur_smooths_the_map_and_keeps_its_size() -> None:
    model = _model()
    model.fit(torch.zeros(4, 2))
    embedding = torch.zeros(1, 2, 8, 8)
    embedding[0, :, 4, 4] = 3.0
    sharp = model.score_embeddings(embedding, (32, 32)).anomaly_map
    model.blur_sigma = 4.0
    smooth = model.score_embeddings(embedding, (32, 32)).anomaly_map
    assert smooth.shape == sharp.shape == (1, 1, 32, 32)
    assert smooth.max() < sharp.max() and smooth.sum().item() == pytest.approx(sharp.sum().item(), rel=0.05)
