"""A faiss memory bank of normal features, shared by patchknn, patchcore and CAP.

What ``bank.*`` chooses (:class:`BankOptions`, ``conf/train.yaml``):

- **what is kept**: every vector (``coreset_ratio=1``, the exact reference) or PatchCore's greedy coreset of
  ``ceil(coreset_ratio·N)`` vectors, capped by ``max_size`` (:mod:`adzoo.models.components.coreset`);
- **how it is searched**: ``exact`` (faiss flat), ``ivf`` (IVF-Flat, ``nlist`` lists, ``nprobe`` probed) or
  ``hnsw`` (``hnsw_m`` links, ``ef_search``); exact and IVF move to the GPU with faiss-gpu, HNSW searches on the
  CPU (faiss has no GPU HNSW);
- **how it is stored**: ``float32`` or ``float16`` (the buffer, and faiss's fp16 scalar-quantiser indices).

The vectors live in a registered buffer, so checkpoints carry the bank; an approximate index is serialised
beside them (``index_blob``), so a reloaded model searches the very index it was tested with. Exact indices are
rebuilt from the vectors, which is deterministic. Features stream in through :class:`BankFill` in chunks, held in
the storage dtype, and the expected size is checked against free memory before the bulk of them arrives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from adzoo.errors import ConfigError
from adzoo.models.components.coreset import coreset_size, greedy_coreset, sparse_random_projection
from adzoo.utils.resources import available_bytes

log = logging.getLogger(__name__)

METRICS = ("l2", "cosine", "ip")
SEARCHES = ("exact", "ivf", "hnsw")
STORAGES = ("float32", "float16")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_GIB = 1024**3


class BankTooLargeError(ConfigError):
    """The bank would not fit in memory: raised with the estimate, before the allocation is tried."""


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is a hard dependency
        raise ImportError("faiss is required: pip install faiss-cpu (or the adzoo[gpu] extra)") from exc
    return faiss


@contextlib.contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """Build approximate indices single-threaded: k-means sums and HNSW insertion order are then fixed, so the
    same vectors always give the same index."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@dataclasses.dataclass(frozen=True)
class BankOptions:
    """The ``bank:`` config section. Defaults are the exact reference: every vector, exact search, float32."""

    coreset_ratio: float = 1.0  # (0, 1]: fraction kept by the greedy coreset; 1 keeps every vector
    max_size: int | None = None  # cap on the kept vectors (greedy coreset of this size)
    projection_dim: int = 128  # the coreset's distances are computed after a sparse random projection to this
    search: str = "exact"  # exact | ivf | hnsw
    nlist: int | None = None  # IVF lists (null: max(nprobe, round(sqrt(bank size))))
    nprobe: int = 8  # IVF lists visited per query
    hnsw_m: int = 32  # HNSW links per node
    ef_search: int = 64  # HNSW candidate list at query time
    ef_construction: int = 80  # HNSW candidate list while building
    storage: str = "float32"  # float32 | float16
    max_memory_gb: float | None = None  # memory the bank may use (null: what the machine has available)
    seed: int = 0  # first coreset point, the projection and IVF's k-means

    @classmethod
    def from_config(cls, section: Any, key: str = "bank") -> BankOptions:
        """Check a mapping (a DictConfig, a dict or ``None``) and name the ``bank.<key>`` that is wrong."""
        if isinstance(section, BankOptions):
            return section
        if section is None:
            return cls()
        if hasattr(section, "items") and not isinstance(section, Mapping):  # a DictConfig
            from omegaconf import OmegaConf

            section = OmegaConf.to_container(section, resolve=True)
        if not isinstance(section, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {section!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = set(section) - set(known)
        if unknown:
            raise ConfigError(f"{key}: unknown keys {sorted(unknown)}; known: {known}")
        options = cls(**dict(section))
        options.check(key)
        return options

    def check(self, key: str = "bank") -> None:
        def number(name: str, low: float, high: float = math.inf, integer: bool = True, optional: bool = False):
            value = getattr(self, name)
            if value is None and optional:
                return
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (not integer or float(value).is_integer()) and low <= value <= high
            if not ok:
                kind = "an integer" if integer else "a number"
                upper = "" if high == math.inf else f" and <= {high}"
                raise ConfigError(f"{key}.{name}={value!r} must be {kind} >= {low}{upper}")

        if not (isinstance(self.coreset_ratio, int | float) and not isinstance(self.coreset_ratio, bool)) or not (
            0 < self.coreset_ratio <= 1
        ):
            raise ConfigError(f"{key}.coreset_ratio={self.coreset_ratio!r} must be in (0, 1] (1 keeps every vector)")
        number("max_size", 1, optional=True)
        number("projection_dim", 1)
        number("nlist", 1, optional=True)
        number("nprobe", 1)
        number("hnsw_m", 2)
        number("ef_search", 1)
        number("ef_construction", 1)
        number("max_memory_gb", 0, integer=False, optional=True)
        number("seed", 0)
        if self.search not in SEARCHES:
            raise ConfigError(f"{key}.search={self.search!r} must be one of {list(SEARCHES)}")
        if self.storage not in STORAGES:
            raise ConfigError(f"{key}.storage={self.storage!r} must be one of {list(STORAGES)}")
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ConfigError(f"{key}.nprobe={self.nprobe} is above the list count {key}.nlist={self.nlist}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as hyper-parameters in a checkpoint (which loads with ``weights_only``) must be."""
        return dataclasses.asdict(self)

    @property
    def subsamples(self) -> bool:
        return self.coreset_ratio < 1 or self.max_size is not None

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.storage]

    def kept(self, n: int) -> int:
        """How many of ``n`` vectors the bank keeps (a ``max_size`` above ``n`` is a ConfigError)."""
        if self.max_size is not None and self.max_size > n:
            raise ConfigError(f"bank.max_size={self.max_size} is above the number of vectors to choose from ({n})")
        return coreset_size(n, self.coreset_ratio, self.max_size) if self.subsamples else n

    def lists(self, size: int) -> int:
        """IVF list count for a bank of ``size`` vectors."""
        if self.nlist is not None:
            if self.nlist > size:
                raise ConfigError(f"bank.nlist={self.nlist} is above the bank size ({size} vectors)")
            return int(self.nlist)
        return max(1, min(size, max(int(self.nprobe), round(math.sqrt(size)))))

    def estimated_bytes(self, rows: int, dim: int) -> int:
        """What filling a bank from ``rows`` vectors of ``dim`` holds at its peak: the streamed chunks, the coreset's
        projection and running minimum, the kept vectors, and faiss's copy of them (with HNSW's links; twice for an
        approximate index, which is also kept serialised)."""
        item = torch.empty(0, dtype=self.dtype).element_size()
        kept = self.kept(rows)
        chunks = rows * dim * item
        coreset = rows * (min(dim, self.projection_dim) + 3) * 4 if self.subsamples else 0
        bank = kept * dim * item if self.subsamples else 0  # without a coreset the chunks become the bank
        copies = 1 if self.search == "exact" else 2  # an approximate index is also kept serialised (index_blob)
        return chunks + coreset + bank + copies * self.index_bytes(kept, dim)

    def index_bytes(self, kept: int, dim: int) -> int:
        """faiss's copy of ``kept`` vectors, with HNSW's links or IVF's ids."""
        links = {"hnsw": self.hnsw_m * 2 * 4, "ivf": 8}.get(self.search, 0)
        return kept * (dim * (2 if self.storage == "float16" else 4) + links)


def _peak_rss_bytes() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except (ImportError, OSError):  # pragma: no cover - not on Linux
        return None


class MemoryBank(nn.Module):
    """kNN over a fixed set of vectors, kept whole or as a coreset, searched exactly or approximately.

    ``metric``: ``l2`` returns Euclidean distances (not squared); ``cosine`` L2-normalises bank and queries and
    returns inner products (cosine similarity, higher is closer); ``ip`` raw inner products.
    """

    def __init__(
        self, metric: str = "l2", use_gpu: bool = True, options: BankOptions | Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"memory bank metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        self.use_gpu = use_gpu
        self.options = BankOptions.from_config(options)
        self.register_buffer("features", torch.empty(0, 0, dtype=self.options.dtype), persistent=True)
        self.register_buffer("index_blob", torch.empty(0, dtype=torch.uint8), persistent=True)
        self._index = None
        #: what the last fill measured (sizes, seconds, bytes): the methods log it and results.json keeps it
        self.report: dict[str, Any] = {}
        #: query vectors searched so far (faiss searches are not torch ops: adzoo.utils.cost counts them from this)
        self.queries_searched = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("features", "index_blob"):
            if prefix + name in state_dict:  # sizes are only known from the checkpoint
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._index = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def is_fitted(self) -> bool:
        return self.features.numel() > 0

    # -- filling ------------------------------------------------------------------------------------------
    def start_fill(self) -> BankFill:
        return BankFill(self)

    def fit(self, features: torch.Tensor) -> torch.Tensor:
        """Store (N, D) features (or their coreset) and build the index; returns the kept rows' indices."""
        if features.dim() != 2 or features.shape[0] == 0:
            raise ValueError(f"memory bank needs a non-empty (N, D) tensor, got shape {tuple(features.shape)}")
        fill = self.start_fill()
        fill.add(features)
        return fill.finish()

    def _prepare(self, features: torch.Tensor) -> torch.Tensor:
        features = features.detach().float()
        if self.metric == "cosine":
            features = torch.nn.functional.normalize(features, dim=1)
        return features

    def _set_vectors(self, vectors: torch.Tensor) -> None:
        """Take the kept vectors (already in the storage dtype) and build, time and serialise the index."""
        self.features = vectors.contiguous()
        self._index = None
        self.index_blob = torch.empty(0, dtype=torch.uint8, device=vectors.device)
        start = time.perf_counter()
        cpu_index = self._build_cpu_index()
        if self.options.search != "exact":
            blob = _faiss().serialize_index(cpu_index)
            self.index_blob = torch.from_numpy(np.asarray(blob, dtype=np.uint8).copy()).to(vectors.device)
        self._index = self._place(cpu_index)
        self.report["index_seconds"] = time.perf_counter() - start

    def _vectors_numpy(self, chunk: int = 65536) -> Iterator[np.ndarray]:
        for start in range(0, len(self), chunk):
            yield np.ascontiguousarray(self.features[start : start + chunk].float().cpu().numpy())

    def _build_cpu_index(self):
        faiss, options = _faiss(), self.options
        dim = self.features.shape[1]
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        fp16 = options.storage == "float16"
        sq = faiss.ScalarQuantizer.QT_fp16
        with _faiss_threads(1) if options.search != "exact" else contextlib.nullcontext():
            if options.search == "exact":
                index = faiss.IndexScalarQuantizer(dim, sq, metric) if fp16 else faiss.IndexFlat(dim, metric)
            elif options.search == "ivf":
                nlist = options.lists(len(self))
                quantizer = faiss.IndexFlat(dim, metric)
                index = (
                    faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, sq, metric)
                    if fp16
                    else faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
                )
                index.own_fields = True
                quantizer.this.disown()  # the IVF index now frees its quantizer
                index.cp.seed = int(options.seed)
                index.cp.min_points_per_centroid = 1  # small banks: no faiss warning, k-means still runs
                index.train(self._training_sample(nlist))
                index.nprobe = min(int(options.nprobe), nlist)
            else:
                index = (
                    faiss.IndexHNSWSQ(dim, sq, int(options.hnsw_m), metric)
                    if fp16
                    else faiss.IndexHNSWFlat(dim, int(options.hnsw_m), metric)
                )
                index.hnsw.efConstruction = int(options.ef_construction)
            if not index.is_trained:  # the fp16 quantiser "trains" on nothing but needs the call
                index.train(next(self._vectors_numpy(256)))
            for part in self._vectors_numpy():
                index.add(part)
        if options.search == "hnsw":
            index.hnsw.efSearch = int(options.ef_search)
        return index

    def _training_sample(self, nlist: int) -> np.ndarray:
        """faiss's own k-means cap (256 points per list), drawn with the bank's seed so the lists are reproducible."""
        cap = 256 * nlist
        if len(self) <= cap:
            return np.concatenate(list(self._vectors_numpy()))
        rows = torch.randperm(len(self), generator=torch.Generator().manual_seed(self.options.seed))[:cap]
        return np.ascontiguousarray(self.features[rows.sort().values.to(self.features.device)].float().cpu().numpy())

    def _place(self, cpu_index):
        """Move the index to the bank's GPU when faiss-gpu is there (HNSW stays on the CPU: faiss has no GPU one)."""
        faiss = _faiss()
        on_gpu = self.use_gpu and self.features.is_cuda and hasattr(faiss, "StandardGpuResources")
        if not on_gpu:
            return cpu_index
        if self.options.search == "hnsw":
            log.info("memory bank: HNSW searches on the CPU (faiss has no GPU HNSW); use bank.search=ivf on a GPU")
            return cpu_index
        try:
            return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), self.features.device.index or 0, cpu_index)
        except RuntimeError as exc:  # e.g. a faiss-gpu build without this index type
            log.warning("memory bank: faiss-gpu cannot hold this %s index (%s); it searches on the CPU",
                        self.options.search, str(exc).splitlines()[0])  # fmt: skip
            return cpu_index

    def _ensure_index(self):
        if self._index is None:
            if self.index_blob.numel() > 0:
                cpu_index = _faiss().deserialize_index(self.index_blob.cpu().numpy())
                if self.options.search == "hnsw":
                    cpu_index.hnsw.efSearch = int(self.options.ef_search)
                elif self.options.search == "ivf":
                    cpu_index.nprobe = min(int(self.options.nprobe), cpu_index.nlist)
                self._index = self._place(cpu_index)
            else:
                self._index = self._place(self._build_cpu_index())
        return self._index

    # -- searching ----------------------------------------------------------------------------------------
    def torch_search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact search over the kept vectors in plain torch ops, so exported models (TorchScript/ONNX) need no
        faiss; for an approximate index it is the exact answer the index approximates."""
        q = queries.float()
        bank = self.features.float()
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        if self.metric == "l2":
            distances = torch.cdist(q, bank)
            scores, indices = distances.topk(k, dim=1, largest=False)
        else:
            scores, indices = (q @ bank.T).topk(k, dim=1, largest=True)
        return scores, indices

    def search(
        self, queries: torch.Tensor, k: int = 1, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (scores, indices), each (M, k), nearest first.

        ``exclude`` (M,) holds, per query, a bank index that must not be returned (the query's own entry during
        training; -1 for none): removed by index, never by assuming rank 0 is the query, so duplicates stay
        neighbours.
        """
        exporting = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
        # a traced bank is the fitted one being exported; its emptiness check would only become a constant there
        if not exporting and not self.is_fitted:
            raise RuntimeError("memory bank is empty: fit() it on normal features first")
        if exclude is None and exporting:
            return self.torch_search(queries, k)
        if k > len(self) - (1 if exclude is not None else 0):
            raise ValueError(f"k={k} is larger than the memory bank ({len(self)} entries)")
        index = self._ensure_index()
        self.queries_searched += int(queries.shape[0])
        device = queries.device
        q = queries.detach().float()
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        extra = 1 if exclude is not None else 0
        scores, indices = index.search(np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32), k + extra)
        scores_t, indices_t = torch.from_numpy(scores), torch.from_numpy(indices)
        if (indices_t < 0).any():  # an approximate index found fewer than k: too few lists probed
            raise RuntimeError(
                f"memory bank ({self.options.search}) returned fewer than k={k} neighbours; raise bank.nprobe "
                "or bank.ef_search"
            )
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

    def search_flops(self, queries: int) -> int:
        """Floating-point operations of searching ``queries`` vectors, counted like a matmul (2·d per compared
        vector): exact compares every kept vector; IVF the ``nlist`` centroids and ``nprobe`` lists of the average
        size; HNSW about ``ef_search · hnsw_m`` vectors (an estimate: the graph walk's length varies)."""
        size, dim = self.features.shape
        search = self.options.search
        if search == "ivf":
            nlist = self.options.lists(size)
            compared = nlist + min(int(self.options.nprobe), nlist) * size / nlist
        elif search == "hnsw":
            compared = min(size, int(self.options.ef_search) * int(self.options.hnsw_m))
        else:
            compared = size
        return round(2 * dim * compared * queries)

    def vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """The kept vectors at ``indices``, as float32 (what the searches compared)."""
        return self.features[indices].float()


class BankFill:
    """Features on their way into a :class:`MemoryBank`.

    Chunks are held in the storage dtype (float16 halves them) and only the kept vectors are copied into the
    bank, so a unified bank over many categories never holds all patches in float32 at once. :meth:`expect`
    checks the estimated peak against free memory before the bulk arrives; :meth:`finish` (under DDP: on every
    rank, after gathering) runs the coreset, builds the index and fills ``bank.report``.
    """

    def __init__(self, bank: MemoryBank) -> None:
        self.bank = bank
        self.chunks: list[torch.Tensor] = []
        self.rows = 0
        self.estimate: int | None = None
        self._start = time.perf_counter()

    @property
    def held_bytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in self.chunks)

    def expect(self, rows: int, dim: int) -> None:
        """Check that a fill of ``rows`` vectors of ``dim`` fits, before allocating it (BankTooLargeError if not)."""
        options = self.bank.options
        options.kept(rows)  # a max_size above the number of vectors fails here, not after the pass
        self.estimate = options.estimated_bytes(rows, dim)
        limit = available_bytes() if options.max_memory_gb is None else int(options.max_memory_gb * _GIB)
        where = "bank.max_memory_gb" if options.max_memory_gb is not None else "available on this machine"
        if self.estimate > limit - self.held_bytes:
            raise BankTooLargeError(
                f"memory bank: filling it from {rows:,} vectors of {dim} dims ({options.storage}, coreset ratio "
                f"{options.coreset_ratio:g}, {options.search} search) needs an estimated "
                f"{self.estimate / _GIB:.2f} GiB, but {limit / _GIB:.2f} GiB is {where}; set bank.storage=float16, a "
                "smaller bank.coreset_ratio or bank.max_size, fewer data.categories, or a smaller data.image_size"
            )

    def add(self, features: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[0] == 0:
            raise ValueError(f"memory bank needs non-empty (N, D) chunks, got shape {tuple(features.shape)}")
        if self.chunks and features.shape[1] != self.chunks[0].shape[1]:
            raise ValueError(f"memory bank chunk has {features.shape[1]} dims, earlier ones {self.chunks[0].shape[1]}")
        self.chunks.append(self.bank._prepare(features).to(self.bank.options.dtype).cpu())
        self.rows += features.shape[0]

    def gather(self) -> None:
        """Under DDP, give every rank every rank's chunks in rank order (a no-op on one process)."""
        from adzoo.utils.distributed import gather_objects, world_size

        if world_size() > 1:
            self.chunks = [chunk for part in gather_objects(self.chunks) for chunk in part]
            self.rows = sum(len(c) for c in self.chunks)

    def finish(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Choose the kept rows, move them into the bank, build the index; returns their indices (ascending)."""
        if not self.chunks:
            raise ValueError("memory bank needs a non-empty (N, D) tensor: no features were added")
        bank, options = self.bank, self.bank.options
        device = torch.device(device) if device is not None else bank.features.device
        dim = self.chunks[0].shape[1]
        size = options.kept(self.rows)
        report: dict[str, Any] = {"vectors_seen": self.rows, "dim": dim, "storage": options.storage}
        peak = self.held_bytes
        if options.subsamples:
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(int(options.seed))
            reduce = dim > options.projection_dim  # projecting up would only cost time
            projection = sparse_random_projection(dim, options.projection_dim, generator).to(device) if reduce else None
            width = options.projection_dim if reduce else dim
            projected = torch.empty(self.rows, width, device=device)  # filled chunk by chunk: no second copy
            offset = 0
            for chunk in self.chunks:
                part = chunk.to(device).float()
                projected[offset : offset + len(chunk)] = part @ projection if reduce else part
                offset += len(chunk)
            peak += projected.numel() * 4 + 3 * self.rows * 4
            chosen = greedy_coreset(projected, size, generator).sort().values.cpu()
            del projected
            vectors = self._rows_at(chosen, dim)
            peak += vectors.numel() * vectors.element_size()
            report["coreset_seconds"] = time.perf_counter() - start
            report["projection_dim"] = dim if projection is None else options.projection_dim
        else:
            chosen = torch.arange(self.rows)
            vectors = self._concatenate_releasing(dim)
        self.chunks = []
        bank.report = report
        bank._set_vectors(vectors.to(device))
        report.update(
            size=len(bank),
            peak_bytes=peak + options.index_bytes(len(bank), dim) + bank.index_blob.numel(),
            estimated_bytes=self.estimate,
            process_peak_rss_bytes=_peak_rss_bytes(),
            fill_seconds=time.perf_counter() - self._start,
        )
        log.info("memory bank: %s", describe(report, options))
        return chosen

    def _rows_at(self, rows: torch.Tensor, dim: int) -> torch.Tensor:
        """The vectors at sorted global ``rows``, gathered chunk by chunk (never concatenating all of them)."""
        out = torch.empty(len(rows), dim, dtype=self.chunks[0].dtype)
        offset, written = 0, 0
        for chunk in self.chunks:
            inside = rows[(rows >= offset) & (rows < offset + len(chunk))] - offset
            out[written : written + len(inside)] = chunk[inside]
            written += len(inside)
            offset += len(chunk)
        return out

    def _concatenate_releasing(self, dim: int) -> torch.Tensor:
        """All chunks in one tensor, each released once copied: the peak is the bank plus one chunk."""
        if len(self.chunks) == 1:
            return self.chunks.pop()
        out = torch.empty(self.rows, dim, dtype=self.chunks[0].dtype)
        written = 0
        while self.chunks:
            chunk = self.chunks.pop(0)
            out[written : written + len(chunk)] = chunk
            written += len(chunk)
        return out


def describe(report: Mapping[str, Any], options: BankOptions) -> str:
    """One log line: what was kept, how long each part took, and the memory it held."""
    mib = 1024**2
    kept = report["size"]
    seen = report["vectors_seen"]
    parts = [f"{kept:,} of {seen:,} vectors × {report['dim']} ({options.storage})"]
    if "coreset_seconds" in report:
        parts.append(
            f"greedy coreset {100 * kept / seen:.2f} % in {report['coreset_seconds']:.1f} s "
            f"(projected to {report['projection_dim']} dims)"
        )
    search = options.search
    if search == "ivf":
        search += f" (nprobe {options.nprobe})"
    elif search == "hnsw":
        search += f" (M {options.hnsw_m}, efSearch {options.ef_search})"
    parts.append(f"{search} index in {report['index_seconds']:.1f} s")
    memory = f"peak held by the bank {report['peak_bytes'] / mib:,.0f} MiB"
    if report.get("estimated_bytes"):
        memory += f" (estimated {report['estimated_bytes'] / mib:,.0f} MiB)"
    if report.get("process_peak_rss_bytes"):
        memory += f", process peak RSS {report['process_peak_rss_bytes'] / mib:,.0f} MiB"
    parts.append(memory)
    return "; ".join(parts)
