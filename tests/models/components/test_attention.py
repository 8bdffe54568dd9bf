"""Shared attention pieces: neighbour mask, 2-D positional embedding, post-norm encoder/decoder layers."""

from __future__ import annotations

import pytest
import torch

from adzoo.models.components import DecoderLayer, Encoder, EncoderLayer, PositionEmbedding2d, attention, neighbour_mask
from adzoo.models.components.attention import multihead_attention


def _forbidden(mask: torch.Tensor, grid: int, r: int, c: int) -> set[tuple[int, int]]:
    row = mask[r * grid + c].view(grid, grid)
    return {(int(i), int(j)) for i, j in row.nonzero()}


def test_mask_forbids_the_window_including_self_interior_edge_corner() -> None:
    mask = neighbour_mask(14, 7)
    assert mask.shape == (196, 196) and mask.dtype == torch.bool
    window = lambda r, c: {(i, j) for i in range(r - 3, r + 4) for j in range(c - 3, c + 4)}  # noqa: E731
    interior = _forbidden(mask, 14, 6, 7)
    assert interior == window(6, 7) and len(interior) == 49
    edge = _forbidden(mask, 14, 0, 7)  # top edge: rows 0..3 only
    assert edge == {(i, j) for i in range(4) for j in range(4, 11)} and len(edge) == 28
    corner = _forbidden(mask, 14, 13, 0)  # bottom-left corner: clipped on two sides
    assert corner == {(i, j) for i in range(10, 14) for j in range(4)} and len(corner) == 16
    assert mask.diagonal().all()  # every token is forbidden to itself
    assert torch.equal(mask, mask.T)  # symmetric: i sees j iff j sees i


def test_mask_of_size_one_forbids_only_self_and_rectangular_sizes_work() -> None:
    assert torch.equal(neighbour_mask(4, 1), torch.eye(16, dtype=torch.bool))
    mask = neighbour_mask((3, 5), (1, 3))
    row = mask[1 * 5 + 2].view(3, 5)  # token (1, 2): same row, columns 1..3
    assert {(int(i), int(j)) for i, j in row.nonzero()} == {(1, 1), (1, 2), (1, 3)}


def test_mask_that_forbids_a_whole_row_is_refused_with_the_config_key() -> None:
    neighbour_mask(8, 7)  # the largest size that fits 8x8
    with pytest.raises(ValueError, match=r"model\.neighbour_mask_size=9 .*8x8 token grid.*at most 7"):
        neighbour_mask(8, 9)
    with pytest.raises(ValueError, match=r"my\.key=7 .*4x4"):
        neighbour_mask(4, 7, config_key="my.key")
    with pytest.raises(ValueError, match="no neighbour mask fits"):
        neighbour_mask(1, 1)


def test_masked_attention_gives_no_nan_on_a_small_grid() -> None:
    layer = EncoderLayer(16, 2, 32, dropout=0.0).eval()
    out = layer(torch.randn(2, 16, 16), attn_mask=neighbour_mask(4, 3))
    assert torch.isfinite(out).all()


def test_position_embedding_is_row_plus_column() -> None:
    pos = PositionEmbedding2d((3, 4), 8)
    emb = pos()
    assert emb.shape == (12, 8)
    assert torch.equal(emb[1 * 4 + 2, :4], pos.col[2]) and torch.equal(emb[1 * 4 + 2, 4:], pos.row[1])
    assert sum(p.numel() for p in pos.parameters()) == (3 + 4) * 4  # H + W vectors, not H·W
    with pytest.raises(ValueError, match="even"):
        PositionEmbedding2d(3, 7)


def test_position_goes_to_queries_and_keys_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(8, 2, 16, dropout=0.0).eval()
    seen: dict[str, torch.Tensor] = {}
    real = attention.multihead_attention

    def spy(attn, q, k, v, mask, training):
        seen.update(q=q, k=k, v=v)
        return real(attn, q, k, v, mask, training)

    monkeypatch.setattr(attention, "multihead_attention", spy)
    x, pos = torch.randn(1, 4, 8), torch.randn(4, 8)
    layer(x, pos)
    assert torch.equal(seen["q"], x + pos) and torch.equal(seen["k"], x + pos) and torch.equal(seen["v"], x)


def test_encoder_layer_is_post_norm_and_respects_the_mask() -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(8, 2, 16, dropout=0.0).eval()
    out = layer(torch.randn(2, 9, 8) * 10)
    # post-norm: the output is a LayerNorm output (zero mean, unit variance per token with default affine)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)
    encoder = Encoder(2, 8, 2, 16, dropout=0.0).eval()
    assert len(encoder.layers) == 2
    assert torch.isfinite(encoder(torch.randn(2, 9, 8), torch.randn(9, 8), neighbour_mask(3, 1))).all()


def test_decoder_layer_cross_attention_cannot_read_forbidden_tokens() -> None:
    """UniAD use: queries = a table, memories = features; the output at token t ignores t's window."""
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, dropout=0.0).eval()
    mask = neighbour_mask(5, 3)
    queries, pos = torch.randn(1, 25, 16), torch.randn(25, 16)
    x = torch.randn(1, 25, 16)
    y = x.clone()
    y[0, 12] += 5.0  # perturb the centre token (2, 2)
    out_x = layer(queries, x, memory1=x, pos=pos, mask1=mask, mask2=mask)
    out_y = layer(queries, y, memory1=y, pos=pos, mask1=mask, mask2=mask)
    torch.testing.assert_close(out_x[0, mask[12]], out_y[0, mask[12]])  # tokens whose window holds (2, 2)
    assert not torch.allclose(out_x[0, ~mask[12]], out_y[0, ~mask[12]])  # the others read it
    unmasked = layer(queries, y, memory1=y, pos=pos)
    assert not torch.allclose(layer(queries, x, memory1=x, pos=pos)[0, 12], unmasked[0, 12])


def test_decoder_layer_standard_form_self_attends_on_the_target() -> None:
    """ADTR/DETR use: memory1=None makes attention 1 a self-attention on the target."""
    torch.manual_seed(0)
    layer = DecoderLayer(8, 2, 16, dropout=0.0).eval()
    tgt, memory = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    torch.testing.assert_close(layer(tgt, memory), layer(tgt, memory, memory1=tgt))
    assert not torch.allclose(layer(tgt, memory), layer(tgt, memory, memory1=memory))


@pytest.mark.parametrize("masked", [False, True])
def test_attention_without_dropout_is_torch_multihead_attention(masked: bool) -> None:
    """Eval, and training at p = 0, give what nn.MultiheadAttention gives with the same parameters."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, dropout=0.1, batch_first=True).eval()
    q, k, v = torch.randn(3, 9, 16), torch.randn(3, 12, 16), torch.randn(3, 12, 16)
    mask = torch.rand(9, 12) < 0.4 if masked else None
    if mask is not None:
        mask[:, 0] = False  # no fully forbidden row
    expected = mha(q, k, v, attn_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(multihead_attention(mha, q, k, v, mask, training=False), expected, atol=1e-6, rtol=0)
    mha.dropout = 0.0
    torch.testing.assert_close(multihead_attention(mha, q, k, v, mask, training=True), expected, atol=1e-6, rtol=0)


def test_attention_dropout_on_the_cpu_is_unbiased_and_respects_the_mask() -> None:
    """The CPU training path (cheap dropout on the weights) averages to the eval output; forbidden keys stay unread."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)
    q, k, v = torch.randn(1, 4, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[:, 2] = True
    expected = multihead_attention(mha, q, k, v, mask, training=False)
    draws = 20000
    out = multihead_attention(
        mha, q.expand(draws, -1, -1), k.expand(draws, -1, -1), v.expand(draws, -1, -1), mask, True
    )
    assert out.std(0).min() > 0.01  # it does drop
    torch.testing.assert_close(out.mean(0, keepdim=True), expected, atol=0.03, rtol=0)
    v_probe = v.clone().requires_grad_()
    multihead_attention(mha, q, k, v_probe, mask, True).sum().backward()
    assert v_probe.grad[0, 2].abs().max() == 0  # the forbidden key's value is never read


def _plain_attention(mha: torch.nn.MultiheadAttention, q, k, v, mask) -> torch.Tensor:
    """The attention written out in plain matmuls, float64: per-head projections, QKᵀ/√d, −inf, softmax, ·V."""
    dim, heads = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight.double(), mha.in_proj_bias.double()
    split = [(x.double() @ w[i * dim : (i + 1) * dim].T + b[i * dim : (i + 1) * dim]) for i, x in enumerate((q, k, v))]
    qh, kh, vh = (x.view(x.shape[0], x.shape[1], heads, dim // heads).transpose(1, 2) for x in split)
    scores = qh @ kh.transpose(-1, -2) / (dim // heads) ** 0.5
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    out = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], dim)
    return out @ mha.out_proj.weight.double().T + mha.out_proj.bias.double()


@pytest.mark.parametrize("inputs", ["cross", "fused q/k", "fused q/k/v"])
def test_every_attention_path_matches_plain_matmuls(inputs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDPA (eval, and training at p=0) and the CPU dropout path (its dropout made the identity) each equal the
    attention written out in matmuls to 1e-5, with UniAD's neighbour mask on a 6×6 grid; also when the query is
    the key (self-attention: one fused q/k projection) or the value too (q/k/v fused)."""
    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)
    x, memory = torch.randn(2, 36, 32), torch.randn(2, 36, 32)
    key, value = {"cross": (memory, memory), "fused q/k": (x, memory), "fused q/k/v": (x, x)}[inputs]
    mask = neighbour_mask(6, 3)
    expected = _plain_attention(mha, x, key, value, mask).float()
    torch.testing.assert_close(
        multihead_attention(mha, x, key, value, mask, training=False), expected, atol=1e-5, rtol=0
    )
    monkeypatch.setattr(attention, "dropout", lambda weights, p, training: weights)
    torch.testing.assert_close(
        multihead_attention(mha, x, key, value, mask, training=True), expected, atol=1e-5, rtol=0
    )
    mha.dropout = 0.0
    torch.testing.assert_close(
        multihead_attention(mha, x, key, value, mask, training=True), expected, atol=1e-5, rtol=0
    )
