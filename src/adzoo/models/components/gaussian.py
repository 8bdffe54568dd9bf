"""Density models on pooled feature vectors: PCA whitening, full-covariance Gaussians/GMMs and a k-NN density.

Written once for every method that scores an image by the likelihood of a feature vector under the normal
data (Transformaly §3 eq. 3-5 and its Table 4 alternatives). Fitting uses scikit-learn (``PCA``,
``GaussianMixture``) so the numbers match the official code; evaluation is plain torch on the features'
device, from registered buffers, so checkpoints carry the fitted state and load with ``weights_only=True``.
Every density returns a *log-density* (higher = more normal) so that densities of different feature spaces
can be added, as the paper's product of likelihoods requires.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adzoo.models.components.memory_bank import MemoryBank
from adzoo.models.components.precision import full_precision

__all__ = [
    "DENSITIES",
    "FittedBuffers",
    "GaussianDensity",
    "KNNDensity",
    "PCAWhitening",
    "build_density",
    "n_components_for_variance",
]

DENSITIES: tuple[str, ...] = ("gaussian", "gmm", "knn")


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def _check_features(x: Tensor, what: str, min_rows: int = 2) -> None:
    if x.dim() != 2 or x.shape[0] < min_rows:
        raise ValueError(f"{what} needs an (N, D) tensor with N >= {min_rows}, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: the features contain NaN or inf")


class FittedBuffers(nn.Module):
    """A module whose buffers start empty and take their shapes from ``fit`` or from a loaded state dict."""

    _lazy: tuple[str, ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._lazy:
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _set(self, name: str, value: Any) -> None:
        ref = getattr(self, name)
        setattr(self, name, torch.as_tensor(np.asarray(value), dtype=ref.dtype).to(ref.device).contiguous())

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, name).numel() > 0 for name in self._lazy)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() on normal features first")


def n_components_for_variance(explained_variance_ratio: np.ndarray | Tensor, threshold: float, off_by_one: bool) -> int:
    """Smallest number of components whose cumulative explained variance reaches ``threshold`` (paper §4.1: 90%).

    ``off_by_one`` reproduces the official code: it takes the first index where the cumulative ratio *exceeds*
    the threshold and keeps that many components, i.e. one fewer than needed (never fewer than one).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"explained-variance threshold must be in (0, 1], got {threshold}")
    ratios = np.asarray(explained_variance_ratio, dtype=np.float64)
    cumulative = np.cumsum(ratios)
    if off_by_one:
        above = np.flatnonzero(cumulative > threshold)
        return max(1, int(above[0]) if len(above) else len(ratios))
    reached = np.flatnonzero(cumulative >= threshold - 1e-12)  # tolerance: ratios summing to exactly 1.0
    return int(reached[0]) + 1 if len(reached) else len(ratios)


class PCAWhitening(FittedBuffers):
    """PCA with whitening, keeping the components that explain ``variance`` of the training data (§4.1).

    ``variance=None`` turns it into the identity (no reduction, no whitening).
    """

    _lazy = ("mean", "components", "scale")
    mean: Tensor
    components: Tensor
    scale: Tensor

    def __init__(self, variance: float | None = 0.9, off_by_one: bool = False) -> None:
        super().__init__()
        if variance is not None and not 0.0 < variance <= 1.0:
            raise ValueError(f"pca variance must be in (0, 1] or None, got {variance}")
        self.variance = variance
        self.off_by_one = off_by_one
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("components", torch.empty(0, 0))
        self.register_buffer("scale", torch.empty(0))

    @property
    def is_fitted(self) -> bool:
        return self.variance is None or super().is_fitted

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def fit(self, x: Tensor) -> PCAWhitening:
        if self.variance is None:
            return self
        from sklearn.decomposition import PCA

        _check_features(x, "PCA whitening")
        data = _numpy(x)
        pca = PCA(svd_solver="full", whiten=True).fit(data)
        if not np.isfinite(pca.explained_variance_ratio_).all():
            raise ValueError("PCA whitening: the training features have zero variance")
        k = n_components_for_variance(pca.explained_variance_ratio_, self.variance, self.off_by_one)
        self._set("mean", pca.mean_)
        self._set("components", pca.components_[:k])
        # sklearn's whitening divides by sqrt(explained_variance_); a zero-variance direction is never kept.
        self._set("scale", 1.0 / np.sqrt(np.maximum(pca.explained_variance_[:k], np.finfo(np.float64).tiny)))
        return self

    @full_precision
    def forward(self, x: Tensor) -> Tensor:
        if self.variance is None:
            return x
        self._require_fitted()
        return ((x - self.mean.to(x.dtype)) @ self.components.to(x.dtype).T) * self.scale.to(x.dtype)


class GaussianDensity(FittedBuffers):
    """log p(x) under a mixture of ``n_components`` full-covariance Gaussians (one = the paper's choice, eq. 3-4).

    Fitted with scikit-learn's ``GaussianMixture`` (``reg_covar=ridge`` added to every covariance diagonal, as
    in the official code), evaluated in float64 torch from the precision Cholesky factors.
    """

    _lazy = ("weights", "means", "precision_chol")
    weights: Tensor
    means: Tensor
    precision_chol: Tensor

    def __init__(self, n_components: int = 1, ridge: float = 1e-6, max_iter: int = 1000, seed: int = 0) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.n_components = n_components
        self.ridge = ridge
        self.max_iter = max_iter
        self.seed = seed
        self.register_buffer("weights", torch.empty(0, dtype=torch.float64))
        self.register_buffer("means", torch.empty(0, 0, dtype=torch.float64))
        self.register_buffer("precision_chol", torch.empty(0, 0, 0, dtype=torch.float64))

    def fit(self, x: Tensor) -> GaussianDensity:
        from sklearn.mixture import GaussianMixture

        _check_features(x, "Gaussian density", min_rows=max(2, self.n_components))
        gmm = GaussianMixture(
            n_components=self.n_components,
            covariance_type="full",
            reg_covar=self.ridge,
            max_iter=self.max_iter,
            random_state=self.seed,
        ).fit(_numpy(x))
        self._set("weights", gmm.weights_)
        self._set("means", gmm.means_)
        self._set("precision_chol", gmm.precisions_cholesky_)
        return self

    @full_precision
    def forward(self, x: Tensor) -> Tensor:
        """(N, D) features -> (N,) log-density, float32 (float64 for float64 features)."""
        self._require_fitted()
        z = x.to(torch.float64)
        dim = z.shape[1]
        # log N(x|μ,Σ) = -½(D log 2π + |P^T(x-μ)|²) + log det P, with P the Cholesky factor of Σ^-1 (sklearn's form).
        diff = z[:, None, :] - self.means[None]  # (N, K, D)
        proj = torch.einsum("nkd,kde->nke", diff, self.precision_chol)
        log_det = torch.diagonal(self.precision_chol, dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        per_component = -0.5 * (dim * math.log(2 * math.pi) + proj.pow(2).sum(-1)) + log_det + self.weights.log()
        return torch.logsumexp(per_component, dim=1).to(x.dtype)


class KNNDensity(FittedBuffers):
    """k-NN log-density up to a constant: ``-D · log r_k(x)``, r_k the mean distance to the k nearest normals.

    Ranks test points exactly like the DN2-style k-NN score of the paper's Table 4 (mean distance to the k
    nearest training features), and, being a log-density estimate (Loftsgaarden & Quesenberry), it can be
    added to another space's log-likelihood.
    """

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.bank = MemoryBank(metric="l2")

    @property
    def is_fitted(self) -> bool:
        return self.bank.is_fitted

    def fit(self, x: Tensor) -> KNNDensity:
        _check_features(x, "k-NN density", min_rows=self.k)
        self.bank.fit(x)
        return self

    @full_precision
    def forward(self, x: Tensor) -> Tensor:
        self._require_fitted()
        distances, _ = self.bank.search(x, k=self.k)
        radius = distances.to(torch.float64).mean(dim=1).clamp_min(1e-12)
        return (-x.shape[1] * radius.log()).to(x.dtype)


def build_density(kind: str = "gaussian", gmm_components: int = 5, knn_k: int = 2, ridge: float = 1e-6, seed: int = 0):
    """``gaussian`` (one full-covariance Gaussian), ``gmm`` (``gmm_components`` of them) or ``knn`` (``knn_k``)."""
    if kind == "gaussian":
        return GaussianDensity(n_components=1, ridge=ridge, seed=seed)
    if kind == "gmm":
        return GaussianDensity(n_components=gmm_components, ridge=ridge, seed=seed)
    if kind == "knn":
        return KNNDensity(k=knn_k)
    raise ValueError(f"unknown density {kind!r}; valid choices: {', '.join(DENSITIES)}")
