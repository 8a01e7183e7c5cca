"""FAISS index choice, build, save/load and chunked search for negative mining.

Kinds: ``flat`` (exact), ``ivf_flat``, ``ivf_pq`` (re-ranked exactly from the vectors
on disk) and ``hnsw``.  ``kind="auto"`` picks from the corpus size and a memory budget:

- ``flat`` when N <= ``flat_max_rows`` (100,000) and the vectors fit the budget;
- ``ivf_flat`` when N * d * 4 bytes (plus 10 %) fits the budget;
- ``ivf_pq`` otherwise (``pq_m`` bytes per vector).

``hnsw`` is used only when named.  Scores are similarities, higher = closer: the inner
product for ``metric="ip"``, minus the squared L2 distance for ``metric="l2"``.

The index is saved with ``faiss.write_index`` to a temporary name and renamed, next to
a JSON sidecar (``<path>.json``) recording the corpus fingerprint, size, dimension,
metric and build parameters; :func:`load_index` refuses an index whose sidecar does not
match what the caller expects.  On a machine with FAISS GPUs
(``faiss.get_num_gpus() > 0``) search runs on all of them (``gpu="auto"``); CPU is the
default elsewhere.

>>> import numpy as np
>>> x = np.random.default_rng(0).standard_normal((200, 8)).astype("float32")
>>> idx = build_index(x, metric="ip", config=IndexConfig(kind="flat"))
>>> scores, ids = search(idx, x[:2], 3, metric="ip")
>>> ids[:, 0].tolist()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._registry import config_to_dict
from ...errors import ConfigError, DependencyMissingError, ShardError

__all__ = [
    "INDEX_KINDS",
    "BuiltIndex",
    "IndexConfig",
    "build_index",
    "choose_index_kind",
    "estimate_index_bytes",
    "exact_scores",
    "fingerprint_array",
    "hold_index",
    "index_meta",
    "load_index",
    "read_index_meta",
    "release_index",
    "save_index",
    "search",
]

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "ivf_flat", "ivf_pq", "hnsw")
_GPU_MODES = ("auto", "never", "always")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a core dependency
        raise DependencyMissingError(
            "negative mining needs faiss: pip install faiss-cpu (or faiss-gpu-cu12)") from e
    return faiss


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    """How to index the corpus.  ``None`` fields take size-based defaults.

    >>> IndexConfig(kind="ivf_flat", nprobe=32).kind
    'ivf_flat'
    """

    kind: str = "auto"
    flat_max_rows: int = 100_000
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    pq_bits: int = 8
    refine_factor: int = 8
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int | None = None
    train_size: int | None = None
    gpu: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind {self.kind!r}; allowed: "
                              f"{', '.join(INDEX_KINDS)}")
        if self.gpu not in _GPU_MODES:
            raise ConfigError(f"gpu must be one of {', '.join(_GPU_MODES)}; got {self.gpu!r}")
        for name in ("flat_max_rows", "refine_factor", "hnsw_m", "ef_construction", "pq_bits"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("nlist", "nprobe", "pq_m", "ef_search", "train_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be >= 1 or None (auto), got {v}")


@dataclass
class BuiltIndex:
    """A CPU FAISS index plus its search parameters (kind, nprobe, efSearch ...)."""

    index: Any
    params: dict[str, Any]
    gpu_index: Any = None  # the GPU clone, made on first GPU search and then reused

    @property
    def kind(self) -> str:
        return str(self.params["kind"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


def _auto_nlist(n: int) -> int:
    # ~4 sqrt(N) lists, a power of two, with >= 39 training points per list.
    want = 2 ** int(round(math.log2(max(4.0 * math.sqrt(max(n, 1)), 1.0))))
    return int(max(1, min(want, n // 39, 65536)))


def _auto_nprobe(nlist: int) -> int:
    # Measured (tests/pipelines/test_faiss_index.py, bench/mine.py): recall@k >= 0.95 on
    # clustered data needs about nlist / 8 lists probed, never fewer than 16.
    return int(min(nlist, max(16, nlist // 8)))


def _auto_pq_m(d: int) -> int:
    # 4 dimensions per sub-quantizer (at most 64 sub-quantizers, so 64 bytes per vector
    # at 8 bits), a divisor of d; the exact re-ranking (refine_factor) restores recall.
    for m in range(min(max(d // 4, 1), 64), 0, -1):
        if d % m == 0:
            return m
    return 1


def _params(cfg: IndexConfig, kind: str, n: int, d: int) -> dict[str, Any]:
    p: dict[str, Any] = {"kind": kind}
    if kind in ("ivf_flat", "ivf_pq"):
        p["nlist"] = int(min(cfg.nlist or _auto_nlist(n), max(n, 1)))
        p["nprobe"] = int(min(cfg.nprobe or _auto_nprobe(p["nlist"]), p["nlist"]))
    if kind == "ivf_pq":
        p["pq_m"] = cfg.pq_m or _auto_pq_m(d)
        if d % p["pq_m"]:
            raise ConfigError(f"pq_m={p['pq_m']} must divide the dimension {d}")
        p["pq_bits"] = cfg.pq_bits
        p["refine_factor"] = cfg.refine_factor
    if kind == "hnsw":
        p["hnsw_m"] = cfg.hnsw_m
        p["ef_construction"] = cfg.ef_construction
        p["ef_search"] = cfg.ef_search
    return p


def estimate_index_bytes(kind: str, n: int, d: int, config: IndexConfig | None = None) -> int:
    """Rough resident size of an index of ``n`` x ``d`` float32 vectors.

    >>> estimate_index_bytes("flat", 1000, 128)
    512000
    """
    cfg = config or IndexConfig()
    if kind == "flat":
        return n * d * 4
    if kind == "ivf_flat":
        return int(n * (d * 4 + 8) * 1.1)
    if kind == "ivf_pq":
        m = cfg.pq_m or _auto_pq_m(d)
        return int(n * (m * cfg.pq_bits // 8 + 8) * 1.1) + _auto_nlist(n) * d * 4
    if kind == "hnsw":
        return int(n * (d * 4 + cfg.hnsw_m * 2 * 4 * 1.5))
    raise ConfigError(f"unknown index kind {kind!r}; allowed: {', '.join(INDEX_KINDS[1:])}")


def choose_index_kind(n: int, d: int, *, memory_budget: int,
                      config: IndexConfig | None = None) -> str:
    """The index kind for ``config.kind`` ("auto" resolved by size and budget).

    >>> choose_index_kind(50_000, 384, memory_budget=8 << 30)
    'flat'
    >>> choose_index_kind(1_000_000, 512, memory_budget=8 << 30)
    'ivf_flat'
    >>> choose_index_kind(1_000_000, 512, memory_budget=1 << 30)
    'ivf_pq'
    """
    cfg = config or IndexConfig()
    if cfg.kind != "auto":
        return cfg.kind
    if n <= cfg.flat_max_rows and estimate_index_bytes("flat", n, d, cfg) <= memory_budget:
        return "flat"
    if estimate_index_bytes("ivf_flat", n, d, cfg) <= memory_budget:
        return "ivf_flat"
    return "ivf_pq"


def _metric_const(metric: str) -> int:
    faiss = _faiss()
    if metric == "ip":
        return faiss.METRIC_INNER_PRODUCT
    if metric == "l2":
        return faiss.METRIC_L2
    raise ConfigError(f"unknown metric {metric!r}; allowed: ip, l2")


def build_index(vectors: np.ndarray, *, metric: str, config: IndexConfig | None = None,
                memory_budget: int = 16 << 30, seed: int = 0,
                block_rows: int = 65536) -> BuiltIndex:
    """Build a CPU FAISS index over ``vectors`` (N, d) float32 (a memmap is fine: rows
    are added in blocks of ``block_rows``); returns it with its search parameters.

    >>> x = np.eye(4, dtype="float32")
    >>> build_index(x, metric="ip", config=IndexConfig(kind="flat")).ntotal
    4
    """
    faiss = _faiss()
    cfg = config or IndexConfig()
    n, d = int(vectors.shape[0]), int(vectors.shape[1])
    if n == 0:
        raise ConfigError("cannot index an empty corpus: it has 0 usable vectors")
    kind = choose_index_kind(n, d, memory_budget=memory_budget, config=cfg)
    p = _params(cfg, kind, n, d)
    mt = _metric_const(metric)
    if kind == "flat":
        index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p["hnsw_m"], mt)
        index.hnsw.efConstruction = p["ef_construction"]
    else:
        quant = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quant, d, p["nlist"], mt)
        else:
            index = faiss.IndexIVFPQ(quant, d, p["nlist"], p["pq_m"], p["pq_bits"], mt)
            index.pq.cp.niter = 12  # PQ k-means: 12 rounds instead of 25, same recall
        ntrain = min(n, cfg.train_size or max(64 * p["nlist"], 2 ** p.get("pq_bits", 0) * 64,
                                             50_000))
        rows = np.sort(np.random.default_rng(seed).choice(n, size=ntrain, replace=False))
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    for s in range(0, n, block_rows):
        index.add(np.ascontiguousarray(vectors[s:s + block_rows], dtype=np.float32))
    _set_search_params(index, p)
    return BuiltIndex(index=index, params=p)


def _set_search_params(index: Any, p: dict[str, Any]) -> None:
    faiss = _faiss()
    if p["kind"] in ("ivf_flat", "ivf_pq"):
        faiss.extract_index_ivf(index).nprobe = p["nprobe"]


def fingerprint_array(vectors: np.ndarray, *, extra: Any = None,
                      block_rows: int = 65536) -> str:
    """blake2b of shape, dtype, every byte of ``vectors`` (in blocks) and ``extra``.

    >>> z = np.zeros((2, 2), "float32")
    >>> fingerprint_array(z) == fingerprint_array(z.copy())
    True
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps([list(vectors.shape), str(vectors.dtype), extra], sort_keys=True,
                        default=str).encode())
    for s in range(0, vectors.shape[0], block_rows):
        h.update(np.ascontiguousarray(vectors[s:s + block_rows]))  # its buffer: no copy
    return h.hexdigest()


def save_index(built: BuiltIndex, path: str, *, meta: dict[str, Any]) -> None:
    """Write ``index`` to the local ``path`` atomically with ``<path>.json`` holding
    ``meta`` plus the search parameters (the sidecar lands last: an index without a
    matching sidecar is never trusted).  FAISS writes to a file name, so the index goes
    to a temporary beside ``path`` and is renamed; the sidecar goes through Storage.
    :mod:`~mmshard.pipelines.mine.job` publishes both to an ``s3://`` index_path."""
    from ...storage import Storage

    faiss = _faiss()
    cpu = built.index
    st = Storage(os.path.dirname(os.path.abspath(path)))
    name = os.path.basename(path)
    side = {**meta, "params": built.params,
            "ntotal": int(cpu.ntotal), "faiss_version": faiss.__version__}
    st.remove(f"{name}.json")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        faiss.write_index(cpu, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    st.write_bytes(f"{name}.json", json.dumps(side, indent=2, sort_keys=True,
                                              default=str).encode())


def read_index_meta(path: str) -> dict[str, Any] | None:
    """The sidecar of a saved index, or None when index or sidecar is missing."""
    if not (os.path.exists(path) and os.path.exists(f"{path}.json")):
        return None
    with open(f"{path}.json") as f:
        return json.load(f)


_CACHE_LOCK = threading.Lock()
_CACHE: dict[str, Any] = {}
_HELD: dict[str, tuple[dict[str, Any], BuiltIndex]] = {}


def hold_index(path: str, built: BuiltIndex, meta: dict[str, Any]) -> None:
    """Serve ``built`` to :func:`load_index` calls for ``path`` in this process (with
    ``meta`` as its sidecar) until :func:`release_index`: a job whose tasks run in the
    driver's process hands them the index it just built instead of a file to read."""
    with _CACHE_LOCK:
        _HELD[os.path.abspath(path)] = (meta, built)


def release_index(path: str) -> None:
    """Stop serving the index held for ``path`` (no-op when none is)."""
    with _CACHE_LOCK:
        _HELD.pop(os.path.abspath(path), None)


def load_index(path: str, *, expect: dict[str, Any] | None = None,
               cache: bool = True) -> BuiltIndex:
    """Read a saved index; every ``expect`` item must equal the sidecar's, else a stale
    index is refused with :class:`~mmshard.errors.ShardError`.

    With ``cache=True`` the last index read in this process is kept (keyed by path, size
    and mtime), so the chunk tasks of one job running in one worker read it once.
    """
    faiss = _faiss()
    with _CACHE_LOCK:
        held = _HELD.get(os.path.abspath(path))
    meta = held[0] if held else read_index_meta(path)
    if meta is None:
        raise ShardError(f"no saved index at {path} (or its sidecar {path}.json); build it "
                         "first or delete the leftover file")
    for k, v in (expect or {}).items():
        if meta.get(k) != v:
            raise ShardError(
                f"stale index {path}: its {k} is {meta.get(k)!r}, expected {v!r}; delete "
                "it or rebuild (mmshard mine --rebuild-index)")
    if held:
        return held[1]
    st = os.stat(path)
    key = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    with _CACHE_LOCK:
        if cache and key in _CACHE:
            return _CACHE[key]
        params = meta.get("params") or {"kind": "flat"}
        index = faiss.read_index(path)
        _set_search_params(index, params)
        built = BuiltIndex(index=index, params=params)
        if cache:
            _CACHE.clear()
            _CACHE[key] = built
    return built


def _gpu_index(built: BuiltIndex, gpu: str) -> Any:
    faiss = _faiss()
    index = built.index
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu == "never" or (gpu == "auto" and ngpu == 0):
        return index
    if ngpu == 0:
        raise DependencyMissingError(
            "gpu='always' but FAISS sees no GPU: install faiss-gpu-cu12 (after "
            "uninstalling faiss-cpu) on a CUDA machine, or use gpu='auto'")
    if built.kind == "hnsw":
        return index  # FAISS has no GPU HNSW; stays on CPU.
    with _CACHE_LOCK:
        if built.gpu_index is None:
            co = faiss.GpuMultipleClonerOptions()
            co.useFloat16 = built.kind == "ivf_pq"
            built.gpu_index = faiss.index_cpu_to_all_gpus(index, co)
    return built.gpu_index


def search(built: BuiltIndex, queries: np.ndarray, k: int, *, metric: str,
           refine_vectors: np.ndarray | None = None, gpu: str = "never",
           chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query, most similar first; -1 ids fill short rows.

    Queries are searched ``chunk_rows`` at a time, so memory stays bounded.  For
    ``ivf_pq`` pass the corpus ``refine_vectors`` (a memmap is fine): ``refine_factor *
    k`` PQ candidates are re-scored exactly and the best ``k`` kept, so the scores are
    exact.  For ``metric="l2"`` the score is minus the squared distance.
    """
    faiss = _faiss()
    p = built.params
    idx = _gpu_index(built, gpu)
    if p["kind"] == "hnsw":
        faiss.downcast_index(idx).hnsw.efSearch = int(p.get("ef_search") or max(128, 2 * k))
    refine = p["kind"] == "ivf_pq" and refine_vectors is not None
    kk = k * int(p.get("refine_factor", 1)) if refine else k
    kk = max(1, min(kk, built.ntotal))
    nq = queries.shape[0]
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    for s in range(0, nq, chunk_rows):
        q = np.ascontiguousarray(queries[s:s + chunk_rows], dtype=np.float32)
        dist, ids = idx.search(q, kk)
        if refine:
            assert refine_vectors is not None
            dist = exact_scores(q, ids, refine_vectors, metric)
        elif metric == "l2":
            dist = -dist
        dist = np.where(ids >= 0, dist, -np.inf)
        order = np.argsort(-dist, axis=1, kind="stable")[:, :k]
        w = order.shape[1]
        out_s[s:s + len(q), :w] = np.take_along_axis(dist, order, 1)
        out_i[s:s + len(q), :w] = np.take_along_axis(ids, order, 1)
    return out_s, out_i


def exact_scores(q: np.ndarray, ids: np.ndarray, vectors: np.ndarray, metric: str, *,
                 fill: float = -np.inf, rows: int = 256) -> np.ndarray:
    """Exact similarities of ``q[i]`` with ``vectors[ids[i, j]]``; ``fill`` where ids < 0.

    >>> exact_scores(np.ones((1, 2), "float32"), np.array([[1, -1]]), np.eye(2), "ip").tolist()
    [[1.0, -inf]]
    """
    out = np.full(ids.shape, fill, np.float32)
    for s in range(0, len(q), rows):
        sub = ids[s:s + rows]
        if sub.size == 0:
            continue
        uniq, inv = np.unique(np.maximum(sub.ravel(), 0), return_inverse=True)
        v = np.asarray(vectors[uniq], dtype=np.float32)[inv].reshape(*sub.shape, -1)
        qs = q[s:s + rows, None, :]
        sc = (v * qs).sum(-1) if metric == "ip" else -((v - qs) ** 2).sum(-1)
        out[s:s + rows] = np.where(sub >= 0, sc, fill)
    return out


def index_meta(*, fingerprint: str, n: int, d: int, metric: str,
               config: IndexConfig) -> dict[str, Any]:
    """The sidecar items a saved index must match to be reused."""
    return {"fingerprint": fingerprint, "n": n, "dim": d, "metric": metric,
            "config": config_to_dict(config)}
