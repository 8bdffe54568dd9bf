"""A faiss memory bank of normal features: exact search, shared by patchknn and CAP.

The features live in a registered buffer (so checkpoints carry the bank) and the faiss index is rebuilt
from them lazily. On a CUDA device with faiss-gpu installed the index moves to the GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

METRICS = ("l2", "cosine", "ip")


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is a hard dependency
        raise ImportError("faiss is required: pip install faiss-cpu (or the adzoo[gpu] extra)") from exc
    return faiss


class MemoryBank(nn.Module):
    """Exact kNN over a fixed set of vectors.

    ``metric``: ``l2`` returns Euclidean distances (not squared); ``cosine`` L2-normalises bank and queries and
    returns inner products (cosine similarity, higher is closer); ``ip`` raw inner products.
    """

    def __init__(self, metric: str = "l2", use_gpu: bool = True) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"memory bank metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        self.use_gpu = use_gpu
        self.register_buffer("features", torch.empty(0, 0), persistent=True)
        self._index = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "features"
        if key in state_dict:
            self.features = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._index = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def is_fitted(self) -> bool:
        return self.features.numel() > 0

    def fit(self, features: torch.Tensor) -> None:
        """Store (N, D) features and build the index."""
        if features.dim() != 2 or features.shape[0] == 0:
            raise ValueError(f"memory bank needs a non-empty (N, D) tensor, got shape {tuple(features.shape)}")
        features = features.detach().float()
        if self.metric == "cosine":
            features = torch.nn.functional.normalize(features, dim=1)
        self.features = features.contiguous()
        self._index = None

    def _build_index(self):
        faiss = _faiss()
        dim = self.features.shape[1]
        index = faiss.IndexFlatL2(dim) if self.metric == "l2" else faiss.IndexFlatIP(dim)
        if self.use_gpu and self.features.is_cuda and hasattr(faiss, "StandardGpuResources"):
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), self.features.device.index or 0, index)
        index.add(np.ascontiguousarray(self.features.cpu().numpy(), dtype=np.float32))
        return index

    def torch_search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The same exact search in plain torch ops, so exported models (TorchScript/ONNX) need no faiss."""
        q = queries.float()
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        if self.metric == "l2":
            distances = torch.cdist(q, self.features)
            scores, indices = distances.topk(k, dim=1, largest=False)
        else:
            scores, indices = (q @ self.features.T).topk(k, dim=1, largest=True)
        return scores, indices

    def search(
        self, queries: torch.Tensor, k: int = 1, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (scores, indices), each (M, k), nearest first.

        ``exclude`` (M,) holds, per query, a bank index that must not be returned (the query's own entry during
        training): removed by index, never by assuming rank 0 is the query, so duplicates stay neighbours.
        """
        if not self.is_fitted:
            raise RuntimeError("memory bank is empty: fit() it on normal features first")
        if exclude is None and (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()):
            return self.torch_search(queries, k)
        if k > len(self) - (1 if exclude is not None else 0):
            raise ValueError(f"k={k} is larger than the memory bank ({len(self)} entries)")
        if self._index is None:
            self._index = self._build_index()
        device = queries.device
        q = queries.detach().float()
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        extra = 1 if exclude is not None else 0
        scores, indices = self._index.search(np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32), k + extra)
        scores_t, indices_t = torch.from_numpy(scores), torch.from_numpy(indices)
        if exclude is not None:
            keep = indices_t != exclude.cpu().view(-1, 1)
            # Rows that did not contain the excluded index drop their last (k+1-th) neighbour instead.
            drop_last = keep.all(dim=1)
            keep[drop_last, -1] = False
            scores_t = scores_t[keep].view(-1, k)
            indices_t = indices_t[keep].view(-1, k)
        if self.metric == "l2":
            scores_t = scores_t.clamp_min(0).sqrt()
        return scores_t.to(device), indices_t.to(device)
