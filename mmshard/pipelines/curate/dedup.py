"""``mmshard dedup``: exact, perceptual-hash and semantic near-duplicate sets of a dataset.

Shards are never rewritten.  The job writes, atomically, into ``<dataset>/dedup/``:

- ``dedup.parquet``: one row per member of every duplicate set: ``key``, ``cluster``
  (the duplicate set's id, numbered in dataset order of the kept member), ``duplicate_of``
  (the kept key; null on the kept row itself), ``similarity`` (1 - hamming/64 for
  perceptual hashes, cosine for semantic, 1.0 for exact; null on the kept row) and
  ``method`` (``exact``, ``phash``, ``dhash`` or ``semantic``);
- ``keep.parquet``: one column ``key``, every sample that is not a removed duplicate, in
  dataset order (``mmshard.Loader(..., filter="dedup")`` reads it);
- ``summary.json``: config, counts, timings.

Keep rule (deterministic, the same for every method): in a duplicate set the member with
the most pixels (width x height; 0 for media without them) is kept, then the one with the
most bytes, then the first key in sorting order.

Methods:

- ``exact``: equal sha256 of the primary medium (image, else video, else audio, else text).
- ``phash`` / ``dhash``: 64-bit perceptual hashes within ``threshold`` Hamming bits, found
  by multi-index hashing (:func:`mmshard.tokenizers.phash.near_pairs`, not all pairs),
  clustered by single linkage; exact copies join too (videos without keyframes are then
  deduplicated exactly).  A video is hashed on its ``keyframes/`` thumbnails: two videos
  match when at least half of the shorter one's keyframes match.
- ``semantic``: SemDeDup on an embedding field set (:mod:`.semantic`): FAISS k-means, then
  cosine >= ``1 - eps`` within each cluster; memory bounded by the largest cluster.

Hashing runs one task per shard on the executor.

>>> r = dedup("data/photos", DedupConfig(method="phash", threshold=8))   # doctest: +SKIP
>>> r.stats["duplicates"], r.stats["kept"]                                # doctest: +SKIP
(12, 988)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...dataset import Dataset
from ...errors import ConfigError, JobError
from ..executor import Executor, make_executor
from ..result import JobResult
from ..task import run_tasks
from .hashing import HashTask, ShardHashes, hash_shard

__all__ = ["DEDUP_METHODS", "DedupConfig", "DedupResult", "dedup", "hash_dataset"]

DEDUP_METHODS = ("exact", "phash", "dhash", "semantic")
DEDUP_DIR = "dedup"


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """Options of ``mmshard dedup``.

    ``threshold``: Hamming bits (of 64) for phash/dhash (0..32; default 10 catches resized,
    re-encoded and lightly cropped copies).  ``field_set``: embedding sidecar for semantic
    (default: the dataset's only ``emb*`` field set) or a ``.parquet`` path (key, vector).
    ``eps``: semantic duplicates have cosine >= 1 - eps.  ``clusters``: k-means k (default
    about one cluster per 1000 vectors).  ``keyframes``: the video keyframes sidecar.

    >>> DedupConfig(method="semantic", eps=0.02).eps
    0.02
    """

    method: str = "phash"
    threshold: int = 10
    field_set: str | None = None
    eps: float = 0.05
    clusters: int | None = None
    max_train: int = 100_000
    seed: int = 0
    keyframes: str = "keyframes"

    def __post_init__(self) -> None:
        if self.method not in DEDUP_METHODS:
            raise ConfigError(f"unknown dedup method {self.method!r}; allowed: "
                              f"{', '.join(DEDUP_METHODS)}")
        if not isinstance(self.threshold, int) or not 0 <= self.threshold <= 32:
            raise ConfigError(f"threshold must be an int in [0, 32] Hamming bits, got "
                              f"{self.threshold!r}")
        if not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise ConfigError(f"eps must be in (0, 1), got {self.eps!r}")
        if self.clusters is not None and (not isinstance(self.clusters, int)
                                          or self.clusters < 1):
            raise ConfigError(f"clusters must be an int >= 1, got {self.clusters!r}")
        if not isinstance(self.max_train, int) or self.max_train < 1:
            raise ConfigError(f"max_train must be an int >= 1, got {self.max_train!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DedupConfig:
        """Inverse of :meth:`to_dict` (``--config FILE.yaml``); unknown keys are refused."""
        from ..._registry import config_from_dict

        return config_from_dict(cls, data)


@dataclass(frozen=True)
class DedupResult(JobResult):
    """``out`` is ``<dataset>/dedup``; ``stats`` is its summary.json."""

    @property
    def removed(self) -> int:
        return int(self.stats["duplicates"])


@dataclass
class _Table:
    """Every sample of the dataset in order: keys and keep-rule sizes."""

    keys: list[str]
    pixels: np.ndarray
    nbytes: np.ndarray
    position: dict[str, int]

    def keep_order(self, keys: Sequence[str]) -> np.ndarray:
        """Positions of ``keys`` best-first by the keep rule."""
        pos = [self.position.get(k, -1) for k in keys]
        px = [int(self.pixels[p]) if p >= 0 else 0 for p in pos]
        nb = [int(self.nbytes[p]) if p >= 0 else 0 for p in pos]
        return np.array(sorted(range(len(keys)), key=lambda i: (-px[i], -nb[i], keys[i])),
                        dtype=np.int64)


def hash_dataset(ds: Dataset, kind: str, executor: Executor, *, keyframes: str | None,
                 progress: bool = False, desc: str = "hash") -> list[ShardHashes]:
    """Run :func:`hash_shard` on every base shard; results in index order."""
    kf = keyframes if keyframes and keyframes in ds.sidecars() else None
    tasks = [HashTask(root=ds.root, storage_options=ds.storage.storage_options, shard=s,
                      kind=kind, keyframes=kf) for s in ds.index.shards]

    def lost(task: HashTask, cause: object) -> ShardHashes:
        raise JobError(f"hashing shard {task.shard.url} was lost ({cause}); rerun the command")

    by_url = {t.shard.url: r for t, r in run_tasks(executor, hash_shard, tasks, on_lost=lost,
                                                   progress=progress, desc=desc)}
    return [by_url[t.shard.url] for t in tasks]


def _table_from_hashes(parts: list[ShardHashes]) -> _Table:
    keys = [k for p in parts for k in p.keys]
    return _Table(keys=keys, pixels=np.array([x for p in parts for x in p.pixels], np.int64),
                  nbytes=np.array([x for p in parts for x in p.nbytes], np.int64),
                  position={k: i for i, k in enumerate(keys)})


def _table_from_manifest(ds: Dataset) -> _Table:
    m = ds.read_table("manifest").to_pydict()
    keys = list(m["key"])
    w = np.array([v or 0 for v in m.get("width", [0] * len(keys))], np.int64)
    h = np.array([v or 0 for v in m.get("height", [0] * len(keys))], np.int64)
    nb = np.array([v or 0 for v in m.get("size", [0] * len(keys))], np.int64)
    return _Table(keys=keys, pixels=w * h, nbytes=nb, position={k: i for i, k in enumerate(keys)})


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _hash_links(parts: list[ShardHashes], threshold: int, table: _Table, with_near: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample-level links ``(a, b)`` plus every sample's hashes (``owner``, ``hashes``)."""
    from ...tokenizers.phash import near_pairs

    offsets = np.cumsum([0] + [len(p.keys) for p in parts])
    owner = np.concatenate([p.owner.astype(np.int64) + o for p, o in zip(parts, offsets)]) \
        if parts else np.empty(0, np.int64)
    hashes = np.concatenate([p.hashes for p in parts]) if parts else np.empty(0, np.uint64)
    sha = np.array([s for p in parts for s in p.sha256], dtype="S64")  # 64 B per sample
    links_a, links_b = [], []
    order = np.argsort(sha, kind="stable")  # exact copies: link each to the previous one
    same = (sha[order][1:] == sha[order][:-1]) & (sha[order][1:] != b"")
    links_a.append(order[1:][same])
    links_b.append(order[:-1][same])
    if with_near and len(hashes):
        i, j, _ = near_pairs(hashes, threshold)
        oa, ob = owner[i], owner[j]
        cross = oa != ob
        oa, ob = np.minimum(oa[cross], ob[cross]), np.maximum(oa[cross], ob[cross])
        pair, count = np.unique(oa * len(table.keys) + ob, return_counts=True)
        pa, pb = pair // len(table.keys), pair % len(table.keys)
        per = np.bincount(owner, minlength=len(table.keys))
        need = np.ceil(np.minimum(per[pa], per[pb]) / 2)  # videos: half of the shorter's kfs
        ok = count >= need
        links_a.append(pa[ok])
        links_b.append(pb[ok])
    return np.concatenate(links_a), np.concatenate(links_b), owner, hashes


def _rows_for_sets(table: _Table, labels: np.ndarray, similarity, method) -> list[dict]:
    """dedup.parquet rows for every component with more than one member."""
    sizes = np.bincount(labels)
    multi = np.nonzero(sizes[labels] > 1)[0]
    by_label: dict[int, list[int]] = {}
    for i in multi:
        by_label.setdefault(int(labels[i]), []).append(int(i))
    sets = []
    for members in by_label.values():
        keys = [table.keys[i] for i in members]
        ordered = [members[o] for o in table.keep_order(keys)]
        sets.append(ordered)
    sets.sort(key=lambda s: s[0])  # cluster ids in dataset order of the kept member
    rows = []
    for cid, members in enumerate(sets):
        kept = members[0]
        rows.append({"key": table.keys[kept], "cluster": cid, "duplicate_of": None,
                     "similarity": None, "method": method(kept, kept)})
        for d in members[1:]:
            rows.append({"key": table.keys[d], "cluster": cid, "duplicate_of": table.keys[kept],
                         "similarity": float(similarity(d, kept)), "method": method(d, kept)})
    return rows


def _dedup_hashes(ds: Dataset, config: DedupConfig, executor: Executor, progress: bool
                  ) -> tuple[_Table, list[dict], dict[str, Any]]:
    from ...tokenizers.phash import hamming

    kind = "exact" if config.method == "exact" else config.method
    parts = hash_dataset(ds, kind, executor, keyframes=config.keyframes, progress=progress,
                         desc=f"dedup {config.method}")
    table = _table_from_hashes(parts)
    a, b, owner, hashes = _hash_links(parts, config.threshold, table, kind != "exact")
    labels = _components(len(table.keys), a, b)
    sha = [s for p in parts for s in p.sha256]
    starts = np.searchsorted(owner, np.arange(len(table.keys) + 1))

    def similarity(d: int, k: int) -> float:
        hd, hk = hashes[starts[d]:starts[d + 1]], hashes[starts[k]:starts[k + 1]]
        if sha[d] == sha[k] or not len(hd) or not len(hk):
            return 1.0
        return 1.0 - int(hamming(hd[:, None], hk[None, :]).min()) / 64.0

    def method(d: int, k: int) -> str:
        return "exact" if kind == "exact" or (sha[d] == sha[k] and d != k) else config.method

    failed: dict[str, int] = {}
    for p in parts:
        for reason in p.failed.values():
            failed[reason] = failed.get(reason, 0) + 1
    return table, _rows_for_sets(table, labels, similarity, method), {"not_hashed": failed}


def _semantic_source(ds: Dataset, config: DedupConfig):
    from .semantic import VectorSource

    fs = config.field_set
    if fs and fs.endswith(".parquet"):
        return VectorSource.from_parquet(fs)
    if fs is None:
        emb = sorted(n for n in ds.sidecars() if n.startswith("emb"))
        if len(emb) != 1:
            raise ConfigError(f"semantic dedup needs --field-set: {ds.root} has "
                              f"{len(emb)} embedding field sets ({', '.join(emb) or 'none'}; "
                              "make one with `mmshard embed`)")
        fs = emb[0]
    return VectorSource.from_sidecar(ds, fs)


def _dedup_semantic(ds: Dataset, config: DedupConfig
                    ) -> tuple[_Table, list[dict], dict[str, Any]]:
    from .semantic import semantic_duplicates

    table = _table_from_manifest(ds)
    src = _semantic_source(ds, config)
    k = config.clusters or max(1, round(src.total / 1000))
    groups = semantic_duplicates(src, eps=config.eps, clusters=k, seed=config.seed,
                                 max_train=config.max_train, keep_order=table.keep_order)
    # Map stream indices onto the dataset table; sets = kept + its duplicates.
    pos = np.array([table.position.get(k, -1) for k in groups.keys], np.int64)
    if (pos < 0).any():
        bad = groups.keys[int(np.nonzero(pos < 0)[0][0])]
        raise ConfigError(f"embedding key {bad!r} is not in {ds.root}'s manifest: wrong "
                          "--field-set?")
    a, b = pos[groups.dup], pos[groups.kept]
    labels = _components(len(table.keys), a, b)
    # each duplicate points at its kept item, so every set is a star around the kept one
    sim = {(int(x), int(y)): float(s) for x, y, s in zip(a, b, groups.similarity)}
    rows = _rows_for_sets(table, labels, lambda d, k: sim.get((d, k), 0.0),
                          lambda d, k: "semantic")
    return table, rows, {"clusters": groups.clusters, "largest_cluster": groups.largest_cluster,
                         "vectors": len(groups.keys)}


def _write_outputs(ds: Dataset, table: _Table, rows: list[dict], stats: dict[str, Any]) -> None:
    import pyarrow as pa

    from ..commit import ParquetSink

    schema = pa.schema([("key", pa.string()), ("cluster", pa.int64()),
                        ("duplicate_of", pa.string()), ("similarity", pa.float32()),
                        ("method", pa.string())])
    removed = {r["key"] for r in rows if r["duplicate_of"] is not None}
    with ParquetSink(ds.storage, f"{DEDUP_DIR}/dedup.parquet", schema) as sink:
        for s in range(0, len(rows), 65536):
            sink.write(rows[s:s + 65536])
    keep = [k for k in table.keys if k not in removed]
    with ParquetSink(ds.storage, f"{DEDUP_DIR}/keep.parquet",
                     pa.schema([("key", pa.string())])) as sink:
        for s in range(0, len(keep), 65536):
            sink.write([{"key": k} for k in keep[s:s + 65536]])
    ds.storage.write_bytes(f"{DEDUP_DIR}/summary.json",
                           (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())


def dedup(dataset: str, config: DedupConfig | None = None, *, executor: Executor | None = None,
          progress: bool = False, overwrite: bool = True,
          storage_options: dict | None = None) -> DedupResult:
    """Find duplicate sets in ``dataset`` and write ``dedup/`` (see the module docstring).

    ``overwrite=False`` refuses when ``dedup/`` already holds a result of another config.

    >>> dedup("ds", DedupConfig(method="exact"), executor=make_executor("local"))  # doctest: +SKIP
    """
    config = config or DedupConfig()
    ds = Dataset(dataset, storage_options)
    if not overwrite and ds.storage.exists(f"{DEDUP_DIR}/summary.json"):
        old = json.loads(ds.storage.read_bytes(f"{DEDUP_DIR}/summary.json")).get("config")
        if old != config.to_dict():
            raise ConfigError(f"{ds.storage.path(DEDUP_DIR)} holds a dedup with another config "
                              f"({old}); pass overwrite=True (--overwrite) to replace it")
    t0 = time.time()
    own = executor is None
    executor = executor or make_executor("local")
    try:
        if config.method == "semantic":
            table, rows, extra = _dedup_semantic(ds, config)
        else:
            table, rows, extra = _dedup_hashes(ds, config, executor, progress)
    finally:
        if own:
            executor.close()
    removed = sum(r["duplicate_of"] is not None for r in rows)
    stats = {"config": config.to_dict(), "samples": len(table.keys), "duplicates": removed,
             "kept": len(table.keys) - removed,
             "duplicate_sets": len({r["cluster"] for r in rows}),
             "seconds": round(time.time() - t0, 3), **extra}
    _write_outputs(ds, table, rows, stats)
    return DedupResult(out=ds.storage.path(DEDUP_DIR), stats=stats)
