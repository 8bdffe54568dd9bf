"""Transformer pieces for feature-reconstruction methods (UniAD, ADTR), written once.

Every sequence here is a row-major grid of feature tokens, batch first: (B, N, D) with N = H·W. The same
learned 2-D positional embedding is added to queries and keys of every attention, never to values, so the
values a token reads stay pure features (UniAD §3.3, ADTR appendix). The layers are post-norm
(residual, then LayerNorm), as in both papers' code lineage (DETR, ``normalize_before=False``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adzoo.models.components.dropout import Dropout, dropout

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
    return pair  # type: ignore[return-value]


class PositionEmbedding2d(nn.Module):
    """Learned 2-D positional embedding from a row table and a column table (UniAD §3.3, "learned").

    Token (r, c) gets ``[col[c] ; row[r]]`` (dim/2 each), so the model can tell rows from columns with
    H + W vectors instead of H·W. Tables start U(0, 1) like the reference implementation.
    """

    def __init__(self, grid: int | Sequence[int], dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"positional embedding dim must be even (row + column halves), got {dim}")
        self.grid = _pair(grid, "grid")
        self.dim = dim
        self.row = nn.Parameter(torch.rand(self.grid[0], dim // 2))
        self.col = nn.Parameter(torch.rand(self.grid[1], dim // 2))

    def forward(self) -> Tensor:
        """(H·W, dim) embedding in row-major token order."""
        height, width = self.grid
        col = self.col[None].expand(height, width, -1)
        row = self.row[:, None].expand(height, width, -1)
        return torch.cat([col, row], dim=-1).reshape(height * width, self.dim)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, dim={self.dim}"


def neighbour_mask(
    grid: int | Sequence[int], size: int | Sequence[int], config_key: str = "model.neighbour_mask_size"
) -> Tensor:
    """Boolean (H·W, H·W) attention mask, True = forbidden: the size×size window around each token, self included.

    UniAD §3.2 (NMA): a token may not read itself or its neighbours, so it cannot be rebuilt by copying.
    The window spans ``size // 2`` tokens on each side, clipped at the borders (the reference convention,
    so an even size covers size + 1). A size that forbids every key of some query is refused: that row of
    the softmax would be all −inf and give NaNs. ``config_key`` names the setting in the error.
    """
    height, width = _pair(grid, "grid")
    size_h, size_w = _pair(size, config_key)
    if size_h < 1 or size_w < 1:
        raise ValueError(f"{config_key} must be >= 1, got {size!r}")
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    near_rows = (rows[:, None] - rows[None, :]).abs() <= size_h // 2
    near_cols = (cols[:, None] - cols[None, :]).abs() <= size_w // 2
    forbidden = near_rows & near_cols
    if forbidden.all(dim=1).any():
        # A window of half-width h covers a whole axis of n tokens (for its middle token) once 2h >= n - 1.
        largest = max(2 * (math.ceil((n - 1) / 2) - 1) + 1 for n in (height, width))
        hint = f"use a size of at most {largest}" if largest >= 1 else "no neighbour mask fits this grid"
        raise ValueError(
            f"{config_key}={size!r} forbids every key of some token on the {height}x{width} token grid, which "
            f"makes its attention NaN; {hint}, or use a larger input"
        )
    return forbidden


class FeedForward(nn.Module):
    """Two-layer FFN with inner dropout: Linear(dim→hidden), activation, dropout, Linear(hidden→dim)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), ACTIVATIONS[activation](), Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def multihead_attention(
    attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, training: bool
) -> Tensor:
    """``attn(query, key, value, attn_mask)[0]`` for a batch-first module, with its parameters and dropout.

    Without attention dropout (eval, or p = 0) and off the CPU this is the same scaled-dot-product kernel
    that ``nn.MultiheadAttention`` calls. On the CPU in training the attention weights go through the cheap
    dropout of :mod:`adzoo.models.components.dropout`; ``F.scaled_dot_product_attention`` would draw its
    mask with ``bernoulli_``, the single largest cost of a CPU step. ``attn_mask`` is bool, True = forbidden.
    """
    batch, n_query, dim = query.shape
    heads = attn.num_heads
    # Fused input projections: one GEMM for the inputs that are the same tensor (self-attention: q = k = x + pos,
    # and v = x too without a positional embedding), the rows of in_proj_weight taken together.
    n_fused = 3 if key is query and value is query else 2 if key is query else 1
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    projected = list(F.linear(query, weight[: n_fused * dim], bias[: n_fused * dim]).chunk(n_fused, dim=-1))
    for i, x in enumerate((query, key, value)):
        if i >= n_fused:
            projected.append(F.linear(x, weight[i * dim : (i + 1) * dim], bias[i * dim : (i + 1) * dim]))

    def split(x: Tensor) -> Tensor:  # (B, N, D) → (B, heads, N, D / heads)
        return x.view(batch, x.shape[1], heads, dim // heads).transpose(1, 2)

    q, k, v = (split(x) for x in projected)
    p = attn.dropout if training else 0.0
    if p == 0.0 or q.device.type != "cpu":
        allowed = None if attn_mask is None else ~attn_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
    else:  # one baddbmm: scale, -inf on forbidden keys and QKᵀ without extra passes over the B·h·N² scores
        q, k, v = (x.reshape(batch * heads, x.shape[2], dim // heads) for x in (q, k, v))
        bias = q.new_zeros(()) if attn_mask is None else q.new_zeros(attn_mask.shape).masked_fill_(attn_mask, -math.inf)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=(dim // heads) ** -0.5)
        out = torch.bmm(dropout(scores.softmax(dim=-1), p, training=True), v).view(batch, heads, n_query, -1)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, n_query, dim))


class AttentionBlock(nn.Module):
    """Post-norm attention sublayer: ``LN(query + Dropout(MHA(query + pos, memory + pos, memory)))``.

    ``attn`` is an ``nn.MultiheadAttention`` (its parameters, initialisation and state-dict keys); the
    forward goes through :func:`multihead_attention` for the cheap CPU dropout.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, query: Tensor, memory: Tensor, pos: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        q = query if pos is None else query + pos
        k = q if memory is query else memory if pos is None else memory + pos  # self-attention: one tensor, fused
        out = multihead_attention(self.attn, q, k, memory, attn_mask, self.training)
        return self.norm(query + self.dropout(out))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: masked self-attention, then FFN, each with residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        self.self_attn = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """x (B, N, D); pos (N, D) or (B, N, D); attn_mask (N, N) bool, True = forbidden."""
        x = self.self_attn(x, x, pos, attn_mask)
        return self.norm(x + self.dropout(self.ffn(x)))


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` sharing one positional embedding and one mask; no final norm."""

    def __init__(
        self, num_layers: int, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn_dim, dropout, activation) for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos, attn_mask)
        return x


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: attention 1, attention 2, FFN, each with residual + LayerNorm.

    Attention 1 goes from ``tgt`` to ``memory1`` (``None`` = ``tgt`` itself, i.e. self-attention); attention
    2 goes from its result to ``memory2``. That covers both decoders of the zoo:

    - UniAD layer-wise query decoder (§3.2 LQD): ``tgt`` = the layer's own query table, ``memory1`` = the
      encoder output, ``memory2`` = the previous decoder output (the encoder output for the first layer).
    - a standard (DETR/ADTR) decoder: ``tgt`` = the running target, ``memory1=None``, ``memory2`` = the
      encoder output.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        self.attn1 = AttentionBlock(dim, heads, dropout)
        self.attn2 = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tgt: Tensor,
        memory2: Tensor,
        memory1: Tensor | None = None,
        pos: Tensor | None = None,
        mask1: Tensor | None = None,
        mask2: Tensor | None = None,
    ) -> Tensor:
        """tgt, memories (B, N, D); pos added to every query and key; masks (N, N) bool, True = forbidden."""
        x = self.attn1(tgt, tgt if memory1 is None else memory1, pos, mask1)
        x = self.attn2(x, memory2, pos, mask2)
        return self.norm(x + self.dropout(self.ffn(x)))


def xavier_init_linears(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear (attention output projections included).

    Attention in-projections are not Linears and keep PyTorch's own (Xavier) init; embedding tables and
    LayerNorms are untouched. This is the reference UniAD initialiser (``xavier_uniform``).
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
