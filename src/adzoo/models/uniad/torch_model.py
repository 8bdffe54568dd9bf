"""UniAD (You et al., NeurIPS 2022): feature reconstruction with a neighbour-masked transformer.

Pure torch. The frozen backbone's taps are aligned to one stride-16 grid and concatenated (§3.3), jittered
during training (§3.2 FJ), projected to the hidden size, passed through a neighbour-masked encoder (NME) and
a layer-wise query decoder (LQD), and projected back. The anomaly map is the per-token L2 distance between
the features and their reconstruction (§3.3), upsampled to the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adzoo.models.components import avgpool_max, upsample_map
from adzoo.models.components.attention import (
    DecoderLayer,
    Encoder,
    PositionEmbedding2d,
    xavier_init_linears,
)
from adzoo.models.components.attention import neighbour_mask as build_neighbour_mask
from adzoo.models.output import AnomalyOutput

SCORE_MODES = ("max", "mean")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    height, width = (int(v) for v in value)
    return height, width


def align_features(features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Resize every tap to ``size`` (bilinear, align_corners=True, as the reference neck) and concatenate."""
    aligned = [
        f if tuple(f.shape[-2:]) == size else F.interpolate(f, size=size, mode="bilinear", align_corners=True)
        for f in features
    ]
    return torch.cat(aligned, dim=1)


def feature_jitter(tokens: Tensor, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """Add N(0, (scale·‖f_tok‖₂ / C)²) noise to each token of (..., C) features (§3.2 FJ, one draw per entry)."""
    sigma = scale * tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1]
    noise = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=tokens.dtype)
    return tokens + noise * sigma


class UniADReconstruction(nn.Module):
    """Tokens (B, N, C) → reconstructed tokens (B, N, C): projection, NME, LQD, final norm, projection.

    Switches for the paper's ablation (§4.6): ``neighbour_mask`` (NMA), ``layerwise_query`` (LQD: one
    query table per decoder layer; off = a standard decoder fed one query table at its first layer, which
    then self-attends on its own running output and cross-attends to the encoder output).
    """

    mask: Tensor

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        neighbour_mask: bool = True,
        neighbour_mask_size: int | Sequence[int] = 7,
        neighbour_mask_sites: Sequence[bool] = (True, True, True),
        layerwise_query: bool = True,
    ) -> None:
        super().__init__()
        if num_decoder_layers < 1:
            raise ValueError(
                f"model.num_decoder_layers must be >= 1 (the decoder rebuilds the features), got {num_decoder_layers}"
            )
        sites = tuple(bool(s) for s in neighbour_mask_sites)
        if len(sites) != 3:
            raise ValueError(
                f"model.neighbour_mask_sites needs 3 flags (encoder, decoder attn 1, decoder attn 2), got {sites}"
            )
        self.grid = grid
        self.num_tokens = grid[0] * grid[1]
        self.layerwise_query = layerwise_query
        self.use_neighbour_mask = neighbour_mask
        self.mask_sites = sites
        self.input_proj = nn.Linear(in_channels, hidden_dim)  # §3.3: C_org → C
        self.output_proj = nn.Linear(hidden_dim, in_channels)  # §3.3: C → C_org
        self.pos = PositionEmbedding2d(grid, hidden_dim)
        self.encoder = Encoder(num_encoder_layers, hidden_dim, num_heads, ffn_dim, dropout, activation)
        self.decoder = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, activation) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        xavier_init_linears(self)
        # LQD: each decoder layer owns a query table (N(0, 1) like nn.Embedding); without LQD only the first has one.
        n_tables = num_decoder_layers if layerwise_query else 1
        self.queries = nn.ParameterList(nn.Parameter(torch.randn(self.num_tokens, hidden_dim)) for _ in range(n_tables))
        if neighbour_mask:
            mask = build_neighbour_mask(grid, neighbour_mask_size, "model.neighbour_mask_size")
        else:
            mask = torch.zeros(self.num_tokens, self.num_tokens, dtype=torch.bool)
        self.register_buffer("mask", mask, persistent=False)  # derived from the config, never checkpointed

    def _site_mask(self, site: int) -> Tensor | None:
        return self.mask if self.use_neighbour_mask and self.mask_sites[site] else None

    def forward(self, tokens: Tensor) -> Tensor:
        batch = tokens.shape[0]
        if tokens.shape[1] != self.num_tokens:
            raise ValueError(
                f"expected {self.num_tokens} tokens ({self.grid[0]}x{self.grid[1]} grid), got {tokens.shape[1]}"
            )
        pos = self.pos()
        x = self.input_proj(tokens)
        encoded = self.encoder(x, pos, self._site_mask(0))  # §3.2 NME
        mask1, mask2 = self._site_mask(1), self._site_mask(2)
        if self.layerwise_query:
            out = encoded  # D_0 = E
            for layer, query in zip(self.decoder, self.queries, strict=True):
                # §3.2 LQD: the layer's queries read the encoder output (attn 1), then the previous output (attn 2).
                out = layer(query.expand(batch, -1, -1), out, memory1=encoded, pos=pos, mask1=mask1, mask2=mask2)
        else:
            out = self.queries[0].expand(batch, -1, -1)
            for layer in self.decoder:
                out = layer(out, encoded, memory1=None, pos=pos, mask1=mask1, mask2=mask2)
        return self.output_proj(self.decoder_norm(out))


class UniADModel(nn.Module):
    """Frozen backbone + UniAD reconstruction; ``forward`` returns the image score and the anomaly map."""

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int | Sequence[int] = 224,
        feature_stride: int = 16,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        neighbour_mask: bool = True,
        neighbour_mask_size: int | Sequence[int] = 7,
        neighbour_mask_sites: Sequence[bool] = (True, True, True),
        layerwise_query: bool = True,
        feature_jitter: bool = True,
        jitter_scale: float = 20.0,
        jitter_prob: float = 1.0,
        score_mode: str = "max",
        pool_kernel: int = 16,
    ) -> None:
        super().__init__()
        if score_mode not in SCORE_MODES:
            raise ValueError(f"model.score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
        if not 0.0 <= jitter_prob <= 1.0:
            raise ValueError(f"model.jitter_prob must be in [0, 1], got {jitter_prob}")
        self.backbone = backbone
        self.image_size = _pair(image_size)
        if any(s % feature_stride for s in self.image_size):
            raise ValueError(
                f"data.image_size {self.image_size} must be a multiple of model.feature_stride={feature_stride}"
            )
        self.grid = (self.image_size[0] // feature_stride, self.image_size[1] // feature_stride)
        self.in_channels = sum(backbone.channels)
        self.feature_jitter = feature_jitter
        self.jitter_scale = float(jitter_scale)
        self.jitter_prob = float(jitter_prob)
        self.score_mode = score_mode
        self.pool_kernel = pool_kernel
        self.reconstruction = UniADReconstruction(
            self.in_channels,
            self.grid,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            activation=activation,
            neighbour_mask=neighbour_mask,
            neighbour_mask_size=neighbour_mask_size,
            neighbour_mask_sites=neighbour_mask_sites,
            layerwise_query=layerwise_query,
        )

    def align(self, features: Sequence[Tensor], image_size: tuple[int, int] | None = None) -> Tensor:
        """Backbone taps → (B, C, h, w) on the model's grid (§3.3, the reference "MFCN" neck).

        ``image_size`` (of the images the taps came from) is checked: the learned tables fix the grid.
        """
        if image_size is not None and tuple(image_size) != self.image_size:
            raise ValueError(
                f"images of {tuple(image_size)} but the model was built for {self.image_size} "
                f"(model.image_size must equal data.image_size)"
            )
        return align_features(features, self.grid)

    def reconstruct(self, aligned: Tensor) -> Tensor:
        """(B, C, h, w) features → their reconstruction; in training mode the input is jittered first."""
        batch, channels, height, width = aligned.shape
        if (height, width) != self.grid:
            raise ValueError(
                f"features on a {height}x{width} grid, the model was built for {self.grid[0]}x{self.grid[1]} "
                f"(model.image_size must equal data.image_size)"
            )
        tokens = aligned.flatten(2).transpose(1, 2)  # (B, N, C), row-major
        if self.training and self.feature_jitter and torch.rand(()).item() < self.jitter_prob:
            tokens = feature_jitter(tokens, self.jitter_scale)
        rebuilt = self.reconstruction(tokens)
        return rebuilt.transpose(1, 2).reshape(batch, channels, height, width)

    def score(self, aligned: Tensor, rebuilt: Tensor, image_size: tuple[int, int]) -> AnomalyOutput:
        """Map = ‖f − f̂‖₂ per token, bilinear (align_corners=True) to the input; score = pooled max or mean."""
        distance = (aligned - rebuilt).pow(2).sum(dim=1).sqrt()
        anomaly_map = upsample_map(distance, image_size, align_corners=True)
        return AnomalyOutput(
            pred_score=image_score(anomaly_map, self.score_mode, self.pool_kernel), anomaly_map=anomaly_map
        )

    def predict(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> AnomalyOutput:
        aligned = self.align(features, image_size)
        return self.score(aligned, self.reconstruct(aligned), image_size)

    def forward(self, images: Tensor) -> AnomalyOutput:
        return self.predict(self.backbone(images), tuple(images.shape[-2:]))


def image_score(anomaly_map: Tensor, mode: str = "max", pool_kernel: int = 16) -> Tensor:
    """(B, 1, H, W) map → (B,) score: ``max`` of a pool_kernel² stride-1 average pool (MVTec-like data) or ``mean``
    (one-class classification sets, the reference CIFAR-10 protocol)."""
    if mode == "max":
        return avgpool_max(anomaly_map, pool_kernel)
    if mode == "mean":
        return anomaly_map.flatten(1).mean(dim=1)
    raise ValueError(f"model.score_mode must be one of {SCORE_MODES}, got {mode!r}")
