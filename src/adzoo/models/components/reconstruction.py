"""Feature reconstruction with a query-embedding transformer, written once for UniAD and ADTR.

Both papers (same first author, same code lineage) align the taps of a frozen CNN on one grid, project the
tokens to a hidden size, rebuild them with a post-norm transformer whose decoder starts from learned
queries, project back, and score each position by the L2 distance between the features and their
reconstruction. They differ only in switches of :class:`ReconstructionTransformer` (UniAD: neighbour mask,
one query table per decoder layer; ADTR: neither) and in what happens to the tokens before reconstruction
(UniAD's jitter), which a subclass of :class:`FeatureReconstructionModel` supplies via ``perturb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adzoo.models.components.anomaly_map import SCORE_MODES, image_score, upsample_map
from adzoo.models.components.attention import DecoderLayer, Encoder, PositionEmbedding2d, xavier_init_linears
from adzoo.models.components.attention import neighbour_mask as build_neighbour_mask
from adzoo.models.components.precision import full_precision
from adzoo.models.output import AnomalyOutput


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """An int or an (h, w) sequence (e.g. a Hydra list) as a plain (h, w) tuple."""
    if isinstance(value, int):
        return value, value
    height, width = (int(v) for v in value)
    return height, width


ALIGN_MODES = ("bilinear", "area")


def _resize(feature: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if tuple(feature.shape[-2:]) == size:
        return feature
    if mode == "area" and feature.shape[-2] >= size[0] and feature.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(feature, size)
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=True)


def align_features(features: Sequence[Tensor], size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize every tap to ``size`` and concatenate.

    ``bilinear`` (align_corners=True) is the reference neck. It samples a stride-2 tap at one point in 8 on
    the stride-16 grid, so the fine taps alias. ``area`` averages each cell instead (coarser taps are still
    upsampled bilinearly): a deviation, ``model.align_mode``.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"model.align_mode must be one of {ALIGN_MODES}, got {mode!r}")
    return torch.cat([_resize(f, size, mode) for f in features], dim=1)


@full_precision
def distance_map(features: Tensor, rebuilt: Tensor) -> Tensor:
    """(B, C, h, w) features and reconstruction → (B, h, w) per-position L2 norm of their difference."""
    return (features - rebuilt).pow(2).sum(dim=1).sqrt()


class ReconstructionTransformer(nn.Module):
    """Tokens (B, N, C) → reconstructed tokens (B, N, C): projection, encoder, query decoder, norm, projection.

    ``layerwise_query`` on (UniAD LQD): every decoder layer owns a query table; attention 1 goes from it to
    the encoder output, attention 2 to the previous decoder output. Off (ADTR, UniAD's "no LQD" ablation):
    one query table is the decoder's first input; each layer self-attends on its running output, then
    cross-attends to the encoder output. ``neighbour_mask`` (UniAD NMA) forbids each token its own window
    in the sites flagged by ``neighbour_mask_sites`` (encoder, decoder attention 1, decoder attention 2).
    ``decoder_final_norm``: a LayerNorm after the last decoder layer (the DETR/UniAD code has one).
    Linear projections are the 1×1 convolutions of the papers, applied per token.
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
        decoder_final_norm: bool = True,
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
        self.input_proj = nn.Linear(in_channels, hidden_dim)  # C_org → C
        self.output_proj = nn.Linear(hidden_dim, in_channels)  # C → C_org
        self.pos = PositionEmbedding2d(grid, hidden_dim)
        self.encoder = Encoder(num_encoder_layers, hidden_dim, num_heads, ffn_dim, dropout, activation)
        self.decoder = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, activation) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim) if decoder_final_norm else nn.Identity()
        xavier_init_linears(self)
        # One table per decoder layer with LQD, else one for the first layer; N(0, 1) like nn.Embedding.
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
        encoded = self.encoder(x, pos, self._site_mask(0))
        mask1, mask2 = self._site_mask(1), self._site_mask(2)
        if self.layerwise_query:
            out = encoded  # D_0 = E
            for layer, query in zip(self.decoder, self.queries, strict=True):
                out = layer(query.expand(batch, -1, -1), out, memory1=encoded, pos=pos, mask1=mask1, mask2=mask2)
        else:
            # The decoder never sees the features as its input, only as memory: no identity path through it.
            out = self.queries[0].expand(batch, -1, -1)
            for layer in self.decoder:
                out = layer(out, encoded, memory1=None, pos=pos, mask1=mask1, mask2=mask2)
        return self.output_proj(self.decoder_norm(out))


class FeatureReconstructionModel(nn.Module):
    """Frozen backbone + :class:`ReconstructionTransformer`; ``forward`` returns the image score and the map.

    Map: ‖f − f̂‖₂ per position, bilinear (align_corners=True) to the input size, no smoothing. Score: the
    max of a ``pool_kernel``² stride-1 average pool of that map, or its mean (``score_mode``).
    Subclasses may override :meth:`perturb` to change the tokens the transformer sees during training.
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int | Sequence[int] = 224,
        feature_stride: int = 16,
        score_mode: str = "max",
        pool_kernel: int = 16,
        align_mode: str = "bilinear",
        **transformer: object,
    ) -> None:
        super().__init__()
        if score_mode not in SCORE_MODES:
            raise ValueError(f"model.score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
        if align_mode not in ALIGN_MODES:
            raise ValueError(f"model.align_mode must be one of {ALIGN_MODES}, got {align_mode!r}")
        self.align_mode = align_mode
        self.backbone = backbone
        self.image_size = pair(image_size)
        if any(s % feature_stride for s in self.image_size):
            raise ValueError(
                f"data.image_size {self.image_size} must be a multiple of model.feature_stride={feature_stride}"
            )
        self.grid = (self.image_size[0] // feature_stride, self.image_size[1] // feature_stride)
        self.in_channels = sum(backbone.channels)
        self.score_mode = score_mode
        self.pool_kernel = pool_kernel
        self.reconstruction = ReconstructionTransformer(self.in_channels, self.grid, **transformer)  # type: ignore[arg-type]

    def align(self, features: Sequence[Tensor], image_size: tuple[int, int] | None = None) -> Tensor:
        """Backbone taps → (B, C, h, w) on the model's grid (the reference "MFCN" neck).

        ``image_size`` (of the images the taps came from) is checked: the learned tables fix the grid.
        """
        if image_size is not None and tuple(image_size) != self.image_size:
            raise ValueError(
                f"images of {tuple(image_size)} but the model was built for {self.image_size} "
                f"(model.image_size must equal data.image_size)"
            )
        return align_features(features, self.grid, self.align_mode)

    def perturb(self, tokens: Tensor) -> Tensor:
        """Hook on the (B, N, C) tokens before reconstruction; the identity here."""
        return tokens

    def reconstruct(self, aligned: Tensor) -> Tensor:
        """(B, C, h, w) features → their reconstruction (through :meth:`perturb` first)."""
        batch, channels, height, width = aligned.shape
        if (height, width) != self.grid:
            raise ValueError(
                f"features on a {height}x{width} grid, the model was built for {self.grid[0]}x{self.grid[1]} "
                f"(model.image_size must equal data.image_size)"
            )
        tokens = self.perturb(aligned.flatten(2).transpose(1, 2))  # (B, N, C), row-major
        rebuilt = self.reconstruction(tokens)
        return rebuilt.transpose(1, 2).reshape(batch, channels, height, width)

    @full_precision
    def score(self, aligned: Tensor, rebuilt: Tensor, image_size: tuple[int, int]) -> AnomalyOutput:
        """Map = ‖f − f̂‖₂ per position, upsampled to the input; score = pooled max or mean of the map (float32)."""
        anomaly_map = upsample_map(distance_map(aligned, rebuilt), image_size, align_corners=True)
        return AnomalyOutput(
            pred_score=image_score(anomaly_map, self.score_mode, self.pool_kernel), anomaly_map=anomaly_map
        )

    def predict(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> AnomalyOutput:
        aligned = self.align(features, image_size)
        return self.score(aligned, self.reconstruct(aligned), image_size)

    def forward(self, images: Tensor) -> AnomalyOutput:
        return self.predict(self.backbone(images), tuple(images.shape[-2:]))
