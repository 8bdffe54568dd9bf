"""Transformaly (Cohen & Avidan, CVPRW 2022): a pre-trained feature space and a teacher-student feature space.

* Pre-trained space (§3): z_p = the teacher's pooled feature (ViT: CLS after the final norm), PCA-whitened to
  90% explained variance (§4.1), one full-covariance Gaussian (eq. 3).
* Fine-tuned space (§3, eq. 1-2): one randomly initialised student per teacher block, fed the teacher's input to
  that block and regressed (MSE) onto the teacher's output of that block; students never feed each other.
  z_f = per-block mean squared student-teacher discrepancy over the scored blocks, one Gaussian (eq. 4).
* Score (eq. 5): normality = log p(z_p) + log p(z_f); the anomaly score is its negative.
* Map (adzoo addition; the paper has no localisation): the per-token discrepancy of the scored blocks, each
  divided by its training mean, averaged over blocks on the patch grid and upsampled to the input.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adzoo.models.components import full_precision, mse_loss, upsample_map
from adzoo.models.components.gaussian import PCAWhitening, build_density
from adzoo.models.output import AnomalyOutput
from adzoo.models.transformaly.teacher import PRETRAINED_FEATURES, BlockTeacher

log = logging.getLogger(__name__)

FEATURE_SPACES: tuple[str, ...] = ("both", "pretrained", "finetuned")
States = dict[int, Tensor]


def resolve_blocks(spec: int | Sequence[int] | None, depth: int) -> list[int]:
    """Scored block indices: ``None`` = all but the first two (§3: "the last 10 blocks" of 12), an int ``m`` =
    the last ``m`` blocks (Table 3's "last 1 / 3 / 10"), or explicit indices (negative ones count from the end)."""
    if spec is None:
        if depth <= 2:
            raise ValueError(f"the teacher has only {depth} blocks: set scored_blocks explicitly")
        return list(range(2, depth))
    if isinstance(spec, int):
        if not 1 <= spec <= depth:
            raise ValueError(f"scored_blocks={spec} must be between 1 and the number of blocks ({depth})")
        return list(range(depth - spec, depth))
    resolved = sorted({int(i) + depth if int(i) < 0 else int(i) for i in spec})
    if not resolved or any(not 0 <= i < depth for i in resolved):
        raise ValueError(f"scored_blocks {list(spec)} out of range for a teacher with {depth} blocks")
    return resolved


QKV_INITS: tuple[str, ...] = ("separate", "fused")


def _is_fused_qkv(name: str, layer: nn.Linear) -> bool:
    """timm's attention projects q, k and v with one ``qkv`` Linear of ``3 * d`` outputs."""
    return name.rsplit(".", 1)[-1] == "qkv" and layer.out_features % 3 == 0


@torch.no_grad()
def _xavier_uniform_rows(weight: Tensor, parts: int) -> None:
    """Xavier-uniform on each of ``parts`` equal row blocks, each as its own (out/parts) x in matrix."""
    for chunk in weight.chunk(parts, dim=0):
        nn.init.xavier_uniform_(chunk)


def reinitialise(module: nn.Module, qkv_init: str = "separate") -> nn.Module:
    """Random init of a copied block, as the official students (§5.3): Xavier-uniform Linear weights with
    N(0, 1e-6) biases; every other layer (norms, LayerScale, convolutions, BatchNorm) its own default init.

    The official ViT has separate d x d q, k and v Linears; timm fuses them into one 3d x d ``qkv``. With
    ``qkv_init="separate"`` each third gets the d x d Xavier bound sqrt(6 / 2d), as in the official code;
    ``"fused"`` treats the fused weight as one matrix (bound sqrt(6 / 4d), 1/sqrt(2) of it)."""
    if qkv_init not in QKV_INITS:
        raise ValueError(f"qkv_init must be one of {QKV_INITS}, got {qkv_init!r}")
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear):
            if qkv_init == "separate" and _is_fused_qkv(name, layer):
                _xavier_uniform_rows(layer.weight, 3)
            else:
                nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.normal_(layer.bias, std=1e-6)
        elif hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return module


def make_student(block: nn.Module, qkv_init: str = "separate") -> nn.Module:
    """Same architecture as the teacher block, fresh weights, trainable."""
    student = reinitialise(copy.deepcopy(block), qkv_init=qkv_init)
    student.requires_grad_(True)
    return student.train()


class TransformalyModel(nn.Module):
    """Teacher (frozen), per-block students and the two fitted densities; ``forward`` scores images."""

    block_scale: Tensor

    def __init__(
        self,
        teacher: BlockTeacher,
        scored_blocks: int | Sequence[int] | None = None,
        train_all_students: bool = True,
        feature_spaces: str = "both",
        pretrained_feature: str = "cls",
        pca_variance: float | None = 0.9,
        pca_off_by_one: bool = False,
        pretrained_density: str = "gaussian",
        finetuned_density: str = "gaussian",
        gmm_components: int = 5,
        knn_k: int = 2,
        ridge: float = 1e-6,
        qkv_init: str = "separate",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if feature_spaces not in FEATURE_SPACES:
            raise ValueError(f"feature_spaces must be one of {FEATURE_SPACES}, got {feature_spaces!r}")
        if pretrained_feature not in PRETRAINED_FEATURES:
            raise ValueError(f"pretrained_feature must be one of {PRETRAINED_FEATURES}, got {pretrained_feature!r}")
        self.teacher = teacher
        self.depth = len(teacher)
        self.scored = resolve_blocks(scored_blocks, self.depth)
        # Students are independent, so training only the scored ones changes nothing for those (a saving).
        self.student_blocks = list(range(self.depth)) if train_all_students else list(self.scored)
        self.students = nn.ModuleDict({str(b): make_student(teacher.blocks[b], qkv_init) for b in self.student_blocks})
        self.feature_spaces = feature_spaces
        self.pretrained_feature = pretrained_feature
        self.pca = PCAWhitening(pca_variance, off_by_one=pca_off_by_one)
        kwargs = {"gmm_components": gmm_components, "knn_k": knn_k, "ridge": ridge, "seed": seed}
        self.pretrained_density = build_density(pretrained_density, **kwargs)
        self.finetuned_density = build_density(finetuned_density, **kwargs)
        self.register_buffer("block_scale", torch.empty(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "block_scale"
        if key in state_dict:
            self.block_scale = torch.empty_like(state_dict[key], device=self.block_scale.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- which teacher states are needed -----------------------------------------------------------------
    def needed_states(self, blocks: Sequence[int]) -> list[int]:
        """State indices for training/scoring ``blocks``: each block's input and output, plus the last output."""
        return sorted({s for b in blocks for s in (b, b + 1)} | {self.depth})

    @property
    def training_states(self) -> list[int]:
        return self.needed_states(self.student_blocks)

    def teacher_states(self, images: Tensor, keep: Sequence[int] | None = None) -> States:
        """Teacher states (block inputs/outputs) for ``images``; ``keep`` defaults to those training needs."""
        states = self.teacher(images)
        return {s: states[s] for s in (keep if keep is not None else self.training_states)}

    # -- training ----------------------------------------------------------------------------------------
    def student_loss(self, states: States) -> Tensor:
        """Eq. 1 for every student at once: the mean over blocks of each block's MSE over all tokens and channels
        (for a ViT, equal to the official single MSE over blocks x tokens x channels)."""
        losses = [mse_loss(self.students[str(b)](states[b]), states[b + 1]) for b in self.student_blocks]
        return torch.stack(losses).mean()

    # -- features ----------------------------------------------------------------------------------------
    def features(self, states: States, grid: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """z_p (B, D), z_f (B, S) and per-block discrepancy maps [(B, h_b, w_b)] for the S scored blocks."""
        z_p = self.teacher.pretrained_feature(states[self.depth], self.pretrained_feature)
        per_image, maps = [], []
        for b in self.scored:
            sq_error = self.teacher.squared_error(self.students[str(b)](states[b]), states[b + 1])
            per_image.append(self.teacher.per_image(sq_error))  # eq. 2, z_f^(b)
            maps.append(self.teacher.per_location(sq_error, grid))
        return z_p, torch.stack(per_image, dim=1), maps

    def grid(self, images: Tensor) -> tuple[int, int] | None:
        return self.teacher.grid(images) if hasattr(self.teacher, "grid") else None

    # -- scoring -----------------------------------------------------------------------------------------
    @property
    def uses_pretrained(self) -> bool:
        return self.feature_spaces in ("both", "pretrained")

    @property
    def uses_finetuned(self) -> bool:
        return self.feature_spaces in ("both", "finetuned")

    @property
    def is_fitted(self) -> bool:
        return self.block_scale.numel() > 0

    def fit(self, z_p: Tensor, z_f: Tensor) -> None:
        """Fit the densities of the used spaces on the normal training features (eq. 3-4)."""
        if self.uses_pretrained:
            self.pca.fit(z_p)
            self.pretrained_density.fit(self.pca(z_p))
            if self.pca.variance is not None:
                log.info("transformaly: PCA keeps %d of %d pre-trained dimensions", self.pca.n_components, z_p.shape[1])
        if self.uses_finetuned:
            self.finetuned_density.fit(z_f)
        self.block_scale = z_f.mean(dim=0).clamp_min(torch.finfo(z_f.dtype).tiny).to(self.block_scale.device)

    def log_likelihoods(self, z_p: Tensor, z_f: Tensor) -> dict[str, Tensor]:
        """Per-space log-likelihoods of the used spaces (in fp32/fp64, also under mixed precision)."""
        out = {}
        if self.uses_pretrained:
            out["pretrained"] = self.pretrained_density(self.pca(z_p))
        if self.uses_finetuned:
            out["finetuned"] = self.finetuned_density(z_f)
        return out

    def normality(self, z_p: Tensor, z_f: Tensor) -> Tensor:
        """Eq. 5 in log form: the sum of the spaces' log-likelihoods (higher = more normal)."""
        return torch.stack(list(self.log_likelihoods(z_p, z_f).values())).sum(dim=0)

    @full_precision
    def anomaly_map(self, maps: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Mean over scored blocks of each block's discrepancy relative to its training mean, at input size."""
        target = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        scaled = []
        for m, scale in zip(maps, self.block_scale):
            m = m / scale
            if m.shape[-2:] != target:
                m = F.interpolate(m[:, None], size=tuple(target), mode="bilinear", align_corners=False)[:, 0]
            scaled.append(m)
        return upsample_map(torch.stack(scaled).mean(dim=0), size, align_corners=False)

    def score(self, states: States, images: Tensor) -> AnomalyOutput:
        if not self.is_fitted:
            raise RuntimeError("Transformaly is not fitted: train it (the densities are fitted after the last epoch)")
        z_p, z_f, maps = self.features(states, self.grid(images))
        return AnomalyOutput(
            pred_score=-self.normality(z_p, z_f), anomaly_map=self.anomaly_map(maps, tuple(images.shape[-2:]))
        )

    def forward(self, images: Tensor) -> AnomalyOutput:
        return self.score(self.teacher_states(images, self.needed_states(self.scored)), images)
