"""Semantic dedup (SemDeDup-style) with memory bounded by the cluster size.

1. Stream the embedding vectors (a sidecar field set of ``.npy`` members, or a Parquet
   table ``key, vector``) once to draw a seeded training sample (``max_train`` vectors);
   fit spherical FAISS k-means on it.
2. Stream them again: L2-normalise, assign each vector to its nearest centroid and
   append it to that cluster's spill file in a temporary folder (buffers flushed past
   ``spill_bytes``).  Only keys and cluster ids (a few bytes per sample) stay in memory.
3. For each cluster alone: load its vectors, order them by the keep rule (see
   :func:`keep_order`), and mark item ``j`` a duplicate when its cosine similarity to
   some earlier item ``i < j`` is at least ``1 - eps`` (SemDeDup's rule, computed in
   column blocks so a large cluster never needs its full similarity matrix at once).
   ``duplicate_of`` follows the chain of earlier duplicates to the kept item.

Peak memory: one cluster's vectors plus a ``block x cluster`` similarity block, the
k-means sample, and the spill buffers; never the whole corpus.

>>> src = VectorSource.from_parquet("emb.parquet")                   # doctest: +SKIP
>>> groups = semantic_duplicates(src, eps=0.05, clusters=100, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ...dataset import Dataset
from ...errors import ConfigError, DependencyMissingError, ShardError

__all__ = ["SemanticGroups", "VectorSource", "semantic_duplicates"]


@dataclass(frozen=True)
class VectorSource:
    """A re-iterable stream of ``(keys, float32 vectors)`` chunks with a known total."""

    total: int
    chunks: Callable[[], Iterator[tuple[list[str], np.ndarray]]]
    where: str

    @classmethod
    def from_sidecar(cls, ds: Dataset, field_set: str) -> VectorSource:
        sidecars = ds.sidecars()
        if field_set not in sidecars:
            emb = sorted(n for n in sidecars if n.startswith("emb"))
            raise ConfigError(f"{ds.root} has no field set {field_set!r}; embedding sidecars "
                              f"there: {', '.join(emb) or 'none'} (make one with mmshard embed)")
        shards = sidecars[field_set].shards

        def chunks() -> Iterator[tuple[list[str], np.ndarray]]:
            for shard in shards:
                keys, vecs = [], []
                for s in ds.iter_shard(shard, field_set=field_set):
                    member = next((k for k in s if k.endswith(".npy")), None)
                    if member is None:
                        continue
                    v = np.load(io.BytesIO(s[member]), allow_pickle=False)
                    keys.append(s["__key__"])
                    vecs.append(np.asarray(v, dtype=np.float32).ravel())
                if keys:
                    yield keys, np.stack(vecs)

        return cls(sum(s.nsamples for s in shards), chunks, ds.shard_url(shards[0], field_set)
                   if shards else field_set)

    @classmethod
    def from_parquet(cls, path: str, *, key_column: str = "key",
                     vector_column: str = "vector", batch_rows: int = 65536) -> VectorSource:
        import pyarrow.parquet as pq

        try:
            total = pq.ParquetFile(path).metadata.num_rows
        except OSError as e:
            raise ShardError(f"cannot read embeddings {path}: {e}") from e

        def chunks() -> Iterator[tuple[list[str], np.ndarray]]:
            pf = pq.ParquetFile(path)
            for b in pf.iter_batches(batch_size=batch_rows, columns=[key_column, vector_column]):
                col = b.column(vector_column)
                d = len(col[0]) if len(col) else 0
                vecs = np.asarray(col.flatten().to_numpy(zero_copy_only=False),
                                  dtype=np.float32).reshape(len(col), d)
                yield b.column(key_column).to_pylist(), vecs

        return cls(total, chunks, path)

    @classmethod
    def from_arrays(cls, keys: list[str], vectors: np.ndarray, chunk: int = 65536
                    ) -> VectorSource:
        def chunks() -> Iterator[tuple[list[str], np.ndarray]]:
            for s in range(0, len(keys), chunk):
                yield list(keys[s:s + chunk]), np.asarray(vectors[s:s + chunk], np.float32)

        return cls(len(keys), chunks, "arrays")


@dataclass
class SemanticGroups:
    """Result: ``keys`` (all, stream order), ``cluster`` (k-means id per key), and the
    duplicates as parallel arrays ``dup``/``kept`` (indices into keys) + ``similarity``."""

    keys: list[str]
    cluster: np.ndarray
    dup: np.ndarray
    kept: np.ndarray
    similarity: np.ndarray
    clusters: int
    largest_cluster: int


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _train_sample(src: VectorSource, max_train: int, seed: int) -> np.ndarray:
    """The seeded k-means sample, filled into one preallocated array, normalised in place
    (the peak memory of the job is this array: ``max_train x dim`` float32)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(src.total, size=min(src.total, max_train), replace=False))
    sample: np.ndarray | None = None
    pos = filled = 0
    for _, v in src.chunks():
        if sample is None:
            sample = np.empty((len(pick), v.shape[1]), np.float32)
        lo, hi = np.searchsorted(pick, [pos, pos + len(v)])
        sample[filled:filled + hi - lo] = v[pick[lo:hi] - pos]
        filled += hi - lo
        pos += len(v)
    if sample is None or not filled:
        raise ShardError(f"no embedding vectors in {src.where}")
    sample = sample[:filled]
    sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    return sample


def _kmeans(sample: np.ndarray, k: int, seed: int):
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a core dependency
        raise DependencyMissingError("semantic dedup needs faiss: pip install faiss-cpu") from e
    k = max(1, min(k, len(sample)))
    # 10 Lloyd iterations: the clusters only bound the pairwise work, they need not converge
    km = faiss.Kmeans(sample.shape[1], k, niter=10, seed=seed, spherical=True,
                      verbose=False, max_points_per_centroid=max(256, len(sample) // k + 1))
    km.train(np.ascontiguousarray(sample))
    return km


class _Spill:
    """Per-cluster append-only spill files (index int64 + vector float32 rows)."""

    def __init__(self, folder: str, dim: int, budget: int) -> None:
        self.folder, self.dim, self.budget = folder, dim, budget
        self.buf: dict[int, list[np.ndarray]] = {}
        self.held = 0

    def add(self, cluster: np.ndarray, index: np.ndarray, vecs: np.ndarray) -> None:
        idx_cols = np.ascontiguousarray(index, dtype=np.int64).view(np.float32).reshape(-1, 2)
        rows = np.concatenate([idx_cols, vecs], axis=1)
        order = np.argsort(cluster, kind="stable")
        cs, starts = np.unique(cluster[order], return_index=True)
        for c, a, b in zip(cs, starts, [*starts[1:], len(order)]):
            self.buf.setdefault(int(c), []).append(rows[order[a:b]])
        self.held += rows.nbytes
        if self.held > self.budget:
            self.flush()

    def flush(self) -> None:
        for c, parts in self.buf.items():
            with open(os.path.join(self.folder, f"{c}.bin"), "ab") as f:
                for p in parts:
                    f.write(np.ascontiguousarray(p).tobytes())
        self.buf.clear()
        self.held = 0

    def read(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        p = os.path.join(self.folder, f"{c}.bin")
        if not os.path.exists(p):
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        rows = np.fromfile(p, dtype=np.float32).reshape(-1, self.dim + 2)
        return np.ascontiguousarray(rows[:, :2]).view(np.int64).ravel(), rows[:, 2:]


def _cluster_duplicates(vecs: np.ndarray, threshold: float, block: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """For vectors in keep order: (best earlier index or -1, its similarity) per item."""
    n = len(vecs)
    best = np.full(n, -1, np.int64)
    sim = np.zeros(n, np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        m = vecs[:e] @ vecs[s:e].T                      # (e, e - s): rows i, columns j
        m[np.arange(e)[:, None] >= np.arange(s, e)[None, :]] = -np.inf  # only i < j
        arg = np.argmax(m, axis=0)
        val = m[arg, np.arange(e - s)]
        hit = val >= threshold
        best[s:e][hit] = arg[hit]
        sim[s:e] = np.where(hit, val, 0)
    return best, sim


def semantic_duplicates(src: VectorSource, *, eps: float, clusters: int, seed: int = 0,
                        max_train: int = 100_000, keep_order: Callable[[list[str]], np.ndarray],
                        spill_bytes: int = 64 << 20, block: int = 2048,
                        tmpdir: str | None = None) -> SemanticGroups:
    """SemDeDup over ``src`` (see the module docstring).  ``keep_order(keys)`` returns
    the positions of ``keys`` best-first (the item kept in a duplicate set comes first)."""
    if not 0 < eps < 1:
        raise ConfigError(f"eps must be in (0, 1) (duplicates have cosine >= 1 - eps), got {eps}")
    km = _kmeans(_train_sample(src, max_train, seed), clusters, seed)
    dim = km.centroids.shape[1]
    keys: list[str] = []
    cluster_of: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="mmshard-semdedup-", dir=tmpdir) as td:
        spill = _Spill(td, dim, spill_bytes)
        for ks, v in src.chunks():
            if v.shape[1] != dim:
                raise ShardError(f"embedding dim {v.shape[1]} != {dim} in {src.where}")
            v = np.ascontiguousarray(_normalise(v))
            _, assign = km.index.search(v, 1)
            c = assign.ravel().astype(np.int32)
            spill.add(c, np.arange(len(keys), len(keys) + len(ks)), v)
            keys.extend(ks)
            cluster_of.append(c)
        spill.flush()
        cluster = np.concatenate(cluster_of) if cluster_of else np.empty(0, np.int32)
        dups, kept, sims, largest = [], [], [], 0
        for c in range(km.k):
            idx, vecs = spill.read(c)
            largest = max(largest, len(idx))
            if len(idx) < 2:
                continue
            order = keep_order([keys[i] for i in idx])
            idx, vecs = idx[order], vecs[order]
            best, sim = _cluster_duplicates(vecs, 1.0 - eps, block)
            root = best.copy()
            for j in np.nonzero(best >= 0)[0]:  # earlier items are resolved first
                root[j] = root[best[j]] if root[best[j]] >= 0 else best[j]
            hit = np.nonzero(best >= 0)[0]
            if hit.size:
                dups.append(idx[hit])
                kept.append(idx[root[hit]])
                sims.append(np.einsum("ij,ij->i", vecs[hit], vecs[root[hit]]))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.empty(0, dt))  # noqa: E731
    return SemanticGroups(keys=keys, cluster=cluster, dup=cat(dups, np.int64),
                          kept=cat(kept, np.int64), similarity=cat(sims, np.float32),
                          clusters=int(km.k), largest_cluster=largest)
