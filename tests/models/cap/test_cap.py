"""CAP's pieces against hand computations, and the paper's Proposition (λ=0 collapses the projection)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adzoo.backbones import build_backbone
from adzoo.models.cap import CAP, CAPHead, CAPModel, ReformedSelfAttention, cap_loss


def _backbone():
    return build_backbone("test_efficientnet", out_indices=[3], weights="none")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _matvec(m: list[list[float]], v: list[float]) -> list[float]:
    return [sum(m[i][j] * v[j] for j in range(len(v))) for i in range(len(m))]


# -- memory bank and neighbours -----------------------------------------------------------------------
def test_training_excludes_self_by_index_and_keeps_a_duplicate_as_neighbour() -> None:
    torch.manual_seed(0)
    module = CAP(_backbone(), k=3)
    images = torch.rand(8, 3, 32, 32)
    images[5] = images[2]  # a duplicated image under another path
    paths = [f"train/{i:03d}.png" for i in range(8)]
    loader = [{"image": images[:4], "path": paths[:4]}, {"image": images[4:], "path": paths[4:]}]
    features, got_paths = module.pooled_features(loader)
    assert got_paths == paths
    # the twins went through the backbone in different batches, at different positions: equal to float32
    # rounding, not necessarily bit for bit (kernels may block the batch dimension differently)
    torch.testing.assert_close(features[5], features[2], rtol=1e-5, atol=1e-6)
    module.fit_bank(features, got_paths)
    table = module._train_neighbours
    assert table.shape == (8, 3)
    for row in range(8):
        assert row not in table[row].tolist()  # never its own entry
    assert 5 in table[2].tolist() and 2 in table[5].tolist()  # the twin is the nearest neighbour, kept
    # a batch's paths name its rows, in any order
    assert module.rows_of(["train/005.png", "train/000.png"]).tolist() == [5, 0]
    with pytest.raises(KeyError, match="not in the memory bank"):
        module.rows_of(["elsewhere.png"])


def test_a_coreset_bank_keeps_every_training_image_as_a_query() -> None:
    """bank.coreset_ratio < 1: the bank keeps a coreset, yet every training image trains against its neighbours
    in it, its own entry excluded only where it was kept."""
    torch.manual_seed(0)
    module = CAP(_backbone(), k=2, bank={"coreset_ratio": 0.5, "seed": 1})
    features = torch.randn(12, module.model.feature_dim)
    module.fit_bank(features, [f"train/{i:03d}.png" for i in range(12)])
    kept = module.model.memory_bank.options.kept(12)
    assert len(module.model.bank) == len(module.model.memory_bank) == kept == 6
    table = module._train_neighbours
    assert table.shape == (12, 2) and int(table.max()) < 6
    rows = {tuple(r) for r in module.model.bank.tolist()}
    for image in range(12):
        own = [j for j in range(6) if torch.equal(module.model.bank[j], features[image])]
        assert not set(own) & set(table[image].tolist())  # never its own entry
        assert (tuple(features[image].tolist()) in rows) == bool(own)
    assert torch.equal(module._train_features, features)


def test_test_time_neighbours_are_the_plain_top_k() -> None:
    model = CAPModel(_backbone(), k=2)
    bank = torch.randn(10, model.feature_dim)
    model.fit(bank)
    indices = model.neighbours(bank[[4, 7]])
    assert indices[:, 0].tolist() == [4, 7]  # at test time an identical bank entry counts


def test_bank_must_be_larger_than_k() -> None:
    model = CAPModel(_backbone(), k=4)
    with pytest.raises(ValueError, match="more than k=4"):
        model.fit(torch.randn(4, model.feature_dim))


# -- head structure ---------------------------------------------------------------------------------
def test_one_projection_shared_by_sample_and_neighbours() -> None:
    torch.manual_seed(0)
    head = CAPHead(6)
    params = dict(head.named_parameters())
    assert set(params) == {"projection.weight", "attention.query.weight", "attention.key.weight"}
    assert all(p.shape == (6, 6) for p in params.values())  # bias-free D×D matrices, no W_V anywhere
    z, neighbours = torch.randn(2, 6), torch.randn(2, 3, 6)
    out = head(z, neighbours)
    W = head.projection.weight
    assert torch.allclose(out.z_hat, z @ W.T, atol=1e-6)
    # ẑⁿ is built from the same W applied to the neighbours: zeroing W zeroes both
    with torch.no_grad():
        W.zero_()
    out = head(z, neighbours)
    assert out.z_hat.abs().max() == 0 and out.normal_hat.abs().max() == 0
    # one parameter receives the gradient of both paths
    torch.manual_seed(0)
    head = CAPHead(6)
    head(z, neighbours).normal_hat.sum().backward()
    assert head.projection.weight.grad.abs().sum() > 0


def test_attention_has_no_value_projection() -> None:
    torch.manual_seed(0)
    attention = ReformedSelfAttention(5)
    assert {name for name, _ in attention.named_parameters()} == {"query.weight", "key.weight"}
    projected = torch.randn(2, 4, 5)
    mixed, weights = attention(projected)
    q, k = projected @ attention.query.weight.T, projected @ attention.key.weight.T
    expected = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(5), dim=-1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4))
    assert torch.allclose(mixed, expected @ projected, atol=1e-6)  # the values are the inputs themselves


def test_head_output_and_loss_match_a_hand_computation() -> None:
    """D=2, K=2, every step written out in plain Python (Eq. 1-7)."""
    W = [[1.0, 0.5], [-0.2, 0.8]]
    Wq = [[0.3, -0.1], [0.2, 0.4]]
    Wk = [[0.5, 0.2], [-0.3, 0.1]]
    z = [1.0, 2.0]
    m = [[0.9, 2.1], [1.5, 0.5]]
    lam = 2.0
    # by hand
    z_hat = _matvec(W, z)
    p = [_matvec(W, row) for row in m]
    q = [_matvec(Wq, row) for row in p]
    k = [_matvec(Wk, row) for row in p]
    logits = [[sum(a * b for a, b in zip(q[i], k[j])) / math.sqrt(2) for j in range(2)] for i in range(2)]
    att = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits]
    rows = [[p[i][d] + sum(att[i][j] * p[j][d] for j in range(2)) for d in range(2)] for i in range(2)]
    normal_hat = [(rows[0][d] + rows[1][d]) / 2 for d in range(2)]
    l_s = 1 - _cosine(z_hat, normal_hat)
    mse = sum((a - b) ** 2 for a, b in zip(z, z_hat)) / 2
    omega = mse + 1 - _cosine(z, z_hat)
    # by the module
    head = CAPHead(2)
    with torch.no_grad():
        head.projection.weight.copy_(torch.tensor(W))
        head.attention.query.weight.copy_(torch.tensor(Wq))
        head.attention.key.weight.copy_(torch.tensor(Wk))
    zt = torch.tensor([z])
    out = head(zt, torch.tensor([m]))
    assert out.z_hat[0].tolist() == pytest.approx(z_hat, abs=1e-6)
    assert out.normal_hat[0].tolist() == pytest.approx(normal_hat, abs=1e-6)
    losses = cap_loss(zt, out.z_hat, out.normal_hat, lam)
    assert losses["similarity"].item() == pytest.approx(l_s, abs=1e-6)
    assert losses["constraint"].item() == pytest.approx(omega, abs=1e-6)
    assert losses["loss"].item() == pytest.approx(l_s + lam * omega, abs=1e-5)
    squared = cap_loss(zt, out.z_hat, out.normal_hat, lam, distance="squared_l2")  # paper Eq. 6
    assert squared["constraint"].item() == pytest.approx(2 * mse + 1 - _cosine(z, z_hat), abs=1e-6)
    # score (Eq. 8) and the pretrained-space normal vector, whose projection is ẑⁿ
    model = CAPModel(_backbone(), k=2)
    model.head = head
    score, out = model.score(zt, torch.tensor([m]))
    assert score.item() == pytest.approx(l_s, abs=1e-6)
    back = model.normal_vector(torch.tensor([m]), out)
    assert torch.allclose(head.projection(back), out.normal_hat, atol=1e-6)


def test_ablation_heads() -> None:
    z, neighbours = torch.randn(3, 4), torch.randn(3, 5, 4)
    plain = CAPHead(4, adaptation=False)
    assert not list(plain.parameters())
    out = plain(z, neighbours)  # "no adaptation": z against the mean of its pretrained neighbours
    assert torch.equal(out.z_hat, z) and torch.allclose(out.normal_hat, neighbours.mean(1))
    no_attention = CAPHead(4, attention=False)
    assert {n for n, _ in no_attention.named_parameters()} == {"projection.weight"}
    out = no_attention(z, neighbours)
    assert torch.allclose(out.normal_hat, no_attention.projection(neighbours).mean(1), atol=1e-6)


# -- the Proposition --------------------------------------------------------------------------------
def _toy_training(constraint_weight: float) -> dict[str, float]:
    """Two normal clusters (ReLU features), one anomalous cluster; 400 Adam steps on the CAP loss."""
    g = torch.Generator().manual_seed(0)
    dim, k = 16, 8
    centers = torch.randn(3, dim, generator=g) * 2

    def sample(n: int, cls: int) -> torch.Tensor:
        return (centers[cls] + torch.randn(n, dim, generator=g)).relu()

    train = torch.cat([sample(50, 0), sample(50, 1)])
    test = torch.cat([sample(50, 0), sample(50, 2)])
    bank = F.normalize(train, dim=1)
    sim = bank @ bank.T
    sim.fill_diagonal_(-2.0)  # self excluded
    train_nb = sim.topk(k, dim=1).indices
    test_nb = (F.normalize(test, dim=1) @ bank.T).topk(k, dim=1).indices
    torch.manual_seed(1)
    head = CAPHead(dim)

    def rest_of_w() -> float:  # ‖W − σ₁u₁v₁ᵀ‖_F: everything in W but its dominant direction
        s = torch.linalg.svdvals(head.projection.weight.detach())
        return float(s[1:].pow(2).sum().sqrt())

    start = rest_of_w()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(400):
        idx = torch.randint(0, len(train), (32,), generator=g)
        out = head(train[idx], train[train_nb[idx]])
        loss = cap_loss(train[idx], out.z_hat, out.normal_hat, constraint_weight)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = head(test, train[test_nb])
        scores = 1 - F.cosine_similarity(out.z_hat, out.normal_hat, dim=1)
        z_hat = F.normalize(head(train, train[train_nb]).z_hat, dim=1)
    return {
        "rest_ratio": rest_of_w() / start,
        "pairwise_cos": float((z_hat @ z_hat.T).mean()),
        "max_score": float(scores.max()),
        "auroc": float((scores[50:, None] > scores[None, :50]).float().mean()),
    }


def test_lambda_zero_collapses_the_projection_and_lambda_two_does_not() -> None:
    """Without the constraint, L_S is minimised by a trivial W (§3.4, Proposition).

    With a cosine loss the norm of W is free, so Adam does not drive W literally to the zero matrix: it drives
    everything in W but one direction to zero (W → rank one). Every ẑ then points the same way, L_S → 0 and
    every test score → 0 (the paper's Fig. 3 for λ=0). λ=2 keeps W full rank and the scores informative.
    """
    collapsed = _toy_training(0.0)
    assert collapsed["rest_ratio"] < 0.15
    assert collapsed["pairwise_cos"] > 0.99
    assert collapsed["max_score"] < 1e-2
    constrained = _toy_training(2.0)
    assert constrained["rest_ratio"] > 0.7
    assert constrained["pairwise_cos"] < 0.9
    assert constrained["max_score"] > 0.1
    assert constrained["auroc"] > 0.95


# -- inference and checkpoints ----------------------------------------------------------------------
def test_forward_gives_scores_and_maps_at_input_size_and_survives_a_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    module = CAP(_backbone(), k=2)
    images = torch.rand(6, 3, 32, 32)
    features, paths = module.pooled_features([{"image": images, "path": [str(i) for i in range(6)]}])
    module.fit_bank(features, paths)
    module.eval()
    out = module(images[:2])
    assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 1, 32, 32)
    assert torch.isfinite(out.anomaly_map).all() and (out.anomaly_map >= 0).all()
    state = module.state_dict()
    assert state["model.bank"].shape == (6, module.model.feature_dim)
    assert "model.memory_bank.features" in state
    torch.manual_seed(1)
    fresh = CAP(_backbone(), k=2)
    fresh.load_state_dict(state)
    fresh.eval()
    again = fresh(images[:2])
    assert torch.allclose(again.pred_score, out.pred_score) and torch.allclose(again.anomaly_map, out.anomaly_map)


def test_map_vector_choices() -> None:
    torch.manual_seed(0)
    images = torch.rand(5, 3, 32, 32)
    maps = {}
    for choice in ("pretrained", "adapted"):
        torch.manual_seed(0)
        model = CAPModel(_backbone(), k=2, map_vector=choice).eval()
        z, _ = model.pool(model.backbone(images))
        model.fit(z)
        maps[choice] = model(images[:1]).anomaly_map
    assert not torch.allclose(maps["pretrained"], maps["adapted"])
    with pytest.raises(ValueError, match="map_vector"):
        CAPModel(_backbone(), map_vector="other")
