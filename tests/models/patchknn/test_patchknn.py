"""Patch kNN: the bank holds normal patches, and an unseen patch pattern scores higher than a seen one."""

from __future__ import annotations

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


def test_bank_subsampling_is_seeded() -> None:
    model = _model()
    model.bank_size = 10
    x = torch.randn(100, 8)
    model.fit(x, generator=torch.Generator().manual_seed(1))
    first = model.memory_bank.features.clone()
    model.fit(x, generator=torch.Generator().manual_seed(1))
    assert len(model.memory_bank) == 10 and torch.equal(first, model.memory_bank.features)
