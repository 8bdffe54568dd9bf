"""One wrapper over timm CNNs and ViTs that returns tapped feature maps.

Methods never special-case the backbone: they read ``channels`` and ``strides`` (taken from timm's
``feature_info``, never hard-coded) and get a list of NCHW maps. Images come in as [0, 1] floats and the
wrapper applies the backbone's own mean/std, so datasets never need to know which backbone is used.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from adzoo.backbones.weights import WEIGHT_SOURCES, create_timm_model

KINDS: tuple[str, ...] = ("auto", "cnn", "vit")
# timm modules whose models are plain (non-hierarchical) token ViTs served by ``forward_intermediates``.
VIT_MODULES: tuple[str, ...] = ("vision_transformer", "deit", "eva", "beit", "vision_transformer_relpos")


def resolve_kind(name: str, kind: str = "auto") -> str:
    """``"vit"`` or ``"cnn"``; ``auto`` looks at the timm module the model is registered in."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "auto":
        return kind
    return "vit" if timm.models.is_model_in_modules(name, list(VIT_MODULES)) else "cnn"


class FeatureExtractor(nn.Module):
    """Tapped feature maps of a timm backbone, optionally frozen.

    A frozen extractor has ``requires_grad=False`` everywhere, stays in eval mode even when a parent calls
    ``.train()`` (so BatchNorm statistics and dropout never change), and runs under ``torch.no_grad()``.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        weights: str = "packaged",
        frozen: bool = True,
        kind: str = "auto",
    ) -> None:
        super().__init__()
        if not timm.is_model(name):
            raise ValueError(f"Unknown timm model {name!r}")
        if weights not in WEIGHT_SOURCES:
            raise ValueError(f"weights must be one of {WEIGHT_SOURCES}, got {weights!r}")
        self.name = name
        self.weights = weights
        self.kind = resolve_kind(name, kind)
        self.frozen = bool(frozen)
        requested = tuple(int(i) for i in out_indices)  # also accepts Hydra ListConfig
        if not requested:
            raise ValueError("out_indices must not be empty")

        if self.kind == "cnn":
            self.model = create_timm_model(name, weights, features_only=True, out_indices=requested)
            info = self.model.feature_info
            self.out_indices = requested
            self._channels = [int(c) for c in info.channels()]
            self._strides = [int(r) for r in info.reduction()]
            self._vit_indices: list[int] = []
        else:
            self.model = create_timm_model(name, weights, dynamic_img_size=True, num_classes=0)
            if not hasattr(self.model, "forward_intermediates"):
                raise ValueError(f"{name!r} has no forward_intermediates(); use kind='cnn'")
            info = list(self.model.feature_info)
            depth = len(info)
            resolved = [i + depth if i < 0 else i for i in requested]
            if any(not 0 <= i < depth for i in resolved):
                raise ValueError(f"out_indices {requested} out of range for {name!r} with {depth} blocks")
            self.out_indices = tuple(resolved)
            self._channels = [int(info[i]["num_chs"]) for i in resolved]
            self._strides = [int(info[i]["reduction"]) for i in resolved]
            self._vit_indices = list(resolved)
            # Drop the blocks after the last tap, the final norm and the head: never used, only cost.
            self.model.prune_intermediate_layers(self._vit_indices, prune_norm=True, prune_head=True)

        cfg: dict[str, Any] = dict(getattr(self.model, "pretrained_cfg", None) or {})
        mean = cfg.get("mean") or IMAGENET_DEFAULT_MEAN
        std = cfg.get("std") or IMAGENET_DEFAULT_STD
        # persistent=False: they derive from the model name, so old checkpoints never pin stale values.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)

        if self.frozen:
            self.requires_grad_(False)
        self.train(False)

    @property
    def channels(self) -> list[int]:
        """Channels of each returned map, in ``out_indices`` order."""
        return list(self._channels)

    @property
    def strides(self) -> list[int]:
        """Input pixels per feature-map cell of each returned map."""
        return list(self._strides)

    def identity(self) -> str:
        """Stable description of what this extractor computes (name, weights, taps, kind): a cache key."""
        taps = ",".join(str(i) for i in self.out_indices)
        return f"{self.name}|weights={self.weights}|out_indices={taps}|kind={self.kind}"

    def weights_fingerprint(self) -> str:
        """Hash of all parameters and buffers: tells random inits (``weights=none``) apart for disk caches."""
        h = hashlib.blake2b(digest_size=16)
        for key, value in self.model.state_dict().items():
            t = value.detach().to("cpu").contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        return h.hexdigest()

    def train(self, mode: bool = True) -> FeatureExtractor:
        """A frozen extractor ignores ``train(True)`` so its BatchNorm/dropout stay in inference mode."""
        return super().train(mode and not self.frozen)

    def check_input_size(self, image_size: int, key: str = "data.image_size") -> None:
        """A ViT cuts the input into patches: refuse a size it cannot cut before any training, naming the key."""
        if self.kind != "vit":
            return
        patch = self._strides[0]
        if image_size % patch:
            lower, upper = max(patch, image_size // patch * patch), (image_size // patch + 1) * patch
            from adzoo.errors import ConfigError

            raise ConfigError(
                f"{key}={image_size} must be a multiple of backbone {self.name}'s patch size {patch} "
                f"(e.g. {lower} or {upper})"
            )

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps (B, C_i, H/s_i, W/s_i) for images (B, 3, H, W) in [0, 1]."""
        # While tracing (adzoo-export) shapes are tensors and the traced graph is fixed to the example's size: the
        # checks ran on the eager forward before, and as constants in the trace they would only warn.
        tracing = torch.jit.is_tracing()
        if not tracing and (images.ndim != 4 or images.shape[1] != 3):
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"expected float images in [0, 1], got dtype {images.dtype}")
        if self.kind == "vit" and not tracing:
            h, w = images.shape[-2:]
            stride = self._strides[0]
            if h % stride or w % stride:
                raise ValueError(f"{self.name}: input size {h}x{w} must be divisible by the patch {stride}")
        grad_ctx = torch.no_grad() if self.frozen else contextlib.nullcontext()
        with grad_ctx:
            x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
            if self.kind == "vit":
                feats = self.model.forward_intermediates(
                    x, indices=self._vit_indices, intermediates_only=True, output_fmt="NCHW"
                )
            else:
                feats = self.model(x)
        return list(feats)

    def extra_repr(self) -> str:
        return f"{self.identity()}, frozen={self.frozen}, channels={self._channels}, strides={self._strides}"
