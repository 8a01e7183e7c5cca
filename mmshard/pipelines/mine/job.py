"""The hard-negative mining job: embeddings -> FAISS index -> negatives.parquet.

plan -> tasks -> commit, like every mmshard job:

1. **plan** (driver): read query and corpus embeddings (memory-mapped ``.npy``, Parquet
   or ``emb.npy`` shards, see :mod:`~mmshard.pipelines.mine.embeddings_io`); rows with NaN/inf
   (``nan_vector``), all-zero vectors when normalising (``zero_vector``) or repeated keys
   (``duplicate_key``) become failure rows and are left out; the rest are written once,
   as float32 and L2-normalised if ``normalize`` (done ONCE, here), to
   ``<out>.parts/{queries,corpus}.npy``.  Positives and groups are resolved to corpus
   rows.  The index is built (or reused: its sidecar must match the corpus fingerprint)
   and saved to ``index_path`` (default ``<out>.index``).
2. **tasks**: queries in chunks of ``chunk_size``; each task loads the SAVED index from
   disk (once per worker process), searches its chunk, applies the negative strategy
   and writes ``<out>.parts/chunk-NNNNN.parquet`` (temp name + rename).  A rerun skips
   finished chunks, so a killed job resumes.
3. **commit**: parts -> ``<out>`` (one row per mined query: ``query_key``,
   ``negative_keys``, ``negative_scores``, ``negative_ranks`` (position in the
   candidate list, -1 for random picks), ``positive_score``, and ``negative_levels``
   with labels; strategy name and config JSON in the file metadata), plus
   ``<stem>.summary.json`` (counts, guard removals, score histograms),
   ``<stem>.scores.png`` (positive vs negative score distributions) and, if any,
   ``<stem>.failures.parquet`` (key, role, reason, detail).

Memory: inputs are memory-mapped, queries are searched in chunks, nothing N x N is
held; the driver keeps the keys, the index is built from the prepared corpus in blocks.
Mining 2,000 queries against a 1,000,000 x 512 float32 ``.npy`` corpus with the exact
index peaked at 6.1 GiB RSS (file-backed pages included).  Disk: the prepared copies
(N x d x 4 bytes each) and the index live next to ``out`` until the job commits.
With a Ray executor on several nodes, ``out`` must be on a filesystem every worker sees.

Scores are similarities: inner product (``metric="ip"``) or minus the squared L2
distance (``"l2"``).  With several positives, ``positive_score`` is the lowest one
(the strictest reference for the relative false-negative margin).  Unknown keys in the
positives table are an error by default (listing a few); ``on_unknown_keys="skip"``
records them as failure rows (reason ``unknown_query_key`` / ``unknown_positive_key``)
and goes on.  Queries without any positive are mined with a null ``positive_score``.

>>> cfg = MineConfig(queries=EmbeddingSource(path="emb.npy"), out="negatives.parquet")
>>> cfg.k, cfg.metric, cfg.normalize
(16, 'ip', True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._registry import config_from_dict, config_to_dict
from ...errors import ConfigError, JobError
from ...samplers.negatives import (
    CandidateBatch,
    TopKConfig,
    build_strategy,
    encode_label_paths,
    strategy_from_dict,
    strategy_to_dict,
)
from ..executor import Executor, LocalExecutor
from .embeddings_io import (
    Embeddings,
    EmbeddingSource,
    load_embeddings,
    read_key_table,
    source_signature,
)
from .faiss_index import (
    IndexConfig,
    build_index,
    exact_scores,
    fingerprint_array,
    index_meta,
    load_index,
    read_index_meta,
    save_index,
    search,
)
from .report import _commit, _draw_histograms, _write_failures

__all__ = ["MineConfig", "MineResult", "PositivesConfig", "Reminer", "mine",
           "mine_config_from_dict", "mine_config_to_dict", "output_paths", "remine"]

log = logging.getLogger(__name__)
_FORMAT_VERSION = 1
_POSITIVE_KINDS = ("same_key", "pairs", "group")


@dataclass(frozen=True, kw_only=True)
class PositivesConfig:
    """Which corpus items are a query's positives.

    ``same_key``: the corpus item with the query's key.  ``pairs``: a Parquet/CSV table
    of (``query_column``, ``positive_column``).  ``group``: a Parquet/CSV table of
    (``key_column``, ``group_column``): corpus items sharing the query's group (at most
    ``max_scored`` of them, in corpus order, are scored for ``positive_score``).

    >>> PositivesConfig(kind="pairs", path="pairs.csv").kind
    'pairs'
    """

    kind: str = "same_key"
    path: str | None = None
    query_column: str = "query_key"
    positive_column: str = "positive_key"
    key_column: str = "key"
    group_column: str = "group"
    max_scored: int = 64

    def __post_init__(self) -> None:
        if self.kind not in _POSITIVE_KINDS:
            raise ConfigError(f"unknown positives kind {self.kind!r}; allowed: "
                              f"{', '.join(_POSITIVE_KINDS)}")
        if self.kind != "same_key" and not self.path:
            raise ConfigError(f"positives kind {self.kind!r} needs a table path "
                              "(--positives pairs.parquet)")
        if self.max_scored < 1:
            raise ConfigError(f"max_scored must be >= 1, got {self.max_scored}")


@dataclass(frozen=True, kw_only=True)
class MineConfig:
    """One mining job.  ``corpus=None`` mines queries against themselves.

    ``groups``: optional (key, group) table; corpus items in the query's group are never
    negatives.  ``labels``: optional (key, label) table of paths like
    ``animal/dog/terrier`` for semantic levels.  ``index_reuse``: ``auto`` (reuse a
    matching saved index, rebuild a stale one), ``require`` (refuse a stale one),
    ``rebuild``.  ``pool_size``: candidates searched per query (default: what the
    strategy needs).  ``memory_budget`` (bytes) drives the automatic index choice.
    """

    queries: EmbeddingSource
    corpus: EmbeddingSource | None = None
    out: str = "negatives.parquet"
    positives: PositivesConfig = field(default_factory=PositivesConfig)
    groups: str | None = None
    labels: str | None = None
    label_column: str = "label"
    k: int = 16
    strategy: Any = field(default_factory=TopKConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    index_path: str | None = None
    index_reuse: str = "auto"
    metric: str = "ip"
    normalize: bool = True
    seed: int = 0
    memory_budget: int = 16 << 30
    chunk_size: int = 16384
    pool_size: int | None = None
    on_unknown_keys: str = "error"
    max_failure_rate: float = 0.1
    histogram_bins: int = 50
    plot: bool = True

    def __post_init__(self) -> None:
        build_strategy(self.strategy)  # validates the strategy config type
        if self.metric not in ("ip", "l2"):
            raise ConfigError(f"unknown metric {self.metric!r}; allowed: ip, l2")
        if self.index_reuse not in ("auto", "require", "rebuild"):
            raise ConfigError(f"index_reuse must be one of auto, require, rebuild; got "
                              f"{self.index_reuse!r}")
        if self.on_unknown_keys not in ("error", "skip"):
            raise ConfigError(f"on_unknown_keys must be error or skip, got "
                              f"{self.on_unknown_keys!r}")
        for name in ("k", "chunk_size", "memory_budget", "histogram_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pool_size is not None and self.pool_size < self.k:
            raise ConfigError(f"pool_size {self.pool_size} must be >= k {self.k}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if not self.out.endswith(".parquet"):
            raise ConfigError(f"out must end in .parquet, got {self.out!r}")


@dataclass
class MineResult:
    """What :func:`mine` did; ``summary`` is the content of the summary JSON."""

    out: str
    summary_path: str
    plot_path: str | None
    failures_path: str | None
    n_queries: int
    n_mined: int
    chunks_total: int
    chunks_computed: int
    chunks_skipped: int
    index_kind: str
    summary: dict[str, Any]


def output_paths(out: str) -> dict[str, str]:
    """The files a job writes for ``out`` (``x.parquet`` -> ``x.summary.json`` ...).

    >>> output_paths("neg.parquet")["summary"]
    'neg.summary.json'
    """
    stem = out[: -len(".parquet")]
    return {"out": out, "summary": f"{stem}.summary.json", "plot": f"{stem}.scores.png",
            "failures": f"{stem}.failures.parquet", "parts": f"{out}.parts",
            "index": f"{out}.index"}


def mine_config_to_dict(cfg: MineConfig) -> dict[str, Any]:
    """Plain JSON/YAML data for a MineConfig (inverse: :func:`mine_config_from_dict`)."""
    d = config_to_dict(cfg)
    d["strategy"] = strategy_to_dict(cfg.strategy)
    return d


def mine_config_from_dict(data: dict[str, Any]) -> MineConfig:
    """Build a MineConfig from :func:`mine_config_to_dict` output (or a YAML mapping)."""
    data = dict(data)
    strat = data.pop("strategy", None)
    for name, cls in (("queries", EmbeddingSource), ("corpus", EmbeddingSource),
                      ("positives", PositivesConfig), ("index", IndexConfig)):
        if isinstance(data.get(name), dict):
            data[name] = config_from_dict(cls, data[name])
    if strat is not None:
        data["strategy"] = strategy_from_dict(strat)
    return config_from_dict(MineConfig, data)


# --------------------------------------------------------------------- planning


def _atomic_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _file_sig(path: str | None) -> Any:
    if not path:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _plan_fingerprint(cfg: MineConfig) -> str:
    import hashlib

    d = mine_config_to_dict(cfg)
    d.pop("out", None)
    sig = {"config": d, "version": _FORMAT_VERSION,
           "queries": source_signature(cfg.queries),
           "corpus": source_signature(cfg.corpus) if cfg.corpus else None,
           "positives": _file_sig(cfg.positives.path), "groups": _file_sig(cfg.groups),
           "labels": _file_sig(cfg.labels)}
    return hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()


def _prepare(emb: Embeddings, role: str, path: str, *, normalize: bool,
             failures: list[dict[str, str]], block: int = 65536) -> np.ndarray:
    """Validate rows, record failures, write usable rows (float32, normalised) to
    ``path`` unless already there; return the original indices of usable rows."""
    n = len(emb)
    reason = np.zeros(n, np.int8)  # 0 ok, 1 nan, 2 zero, 3 duplicate
    for s in range(0, n, block):
        v = np.asarray(emb.vectors[s:s + block], dtype=np.float32)
        finite = np.isfinite(v).all(axis=1)
        reason[s:s + block][~finite] = 1
        if normalize:
            zero = finite & ~np.any(v != 0, axis=1)
            reason[s:s + block][zero] = 2
    if n:
        _, first = np.unique(emb.keys.astype(str), return_index=True)
        dup = np.ones(n, bool)
        dup[first] = False
        reason[dup & (reason == 0)] = 3
    names = {1: ("nan_vector", "vector has NaN or inf values"),
             2: ("zero_vector", "all-zero vector cannot be normalised"),
             3: ("duplicate_key", "key repeats an earlier row; the first row is used")}
    for i in np.nonzero(reason)[0]:
        r, detail = names[int(reason[i])]
        failures.append({"key": str(emb.keys[i]), "role": role, "reason": r,
                         "detail": f"row {int(i)} of {emb.source}: {detail}"})
    valid = np.nonzero(reason == 0)[0]
    if os.path.exists(path):
        return valid
    d = emb.dim
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                    shape=(len(valid), d))
    for s in range(0, len(valid), block):
        v = np.asarray(emb.vectors[valid[s:s + block]], dtype=np.float32)
        if normalize:
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[s:s + len(v)] = v
    out.flush()
    del out
    os.replace(tmp, path)
    return valid


def _unknown(cfg: MineConfig, what: str, keys: list[str], failures: list[dict[str, str]],
             reason: str) -> None:
    if not keys:
        return
    if cfg.on_unknown_keys == "error":
        raise ConfigError(
            f"{len(keys)} {what} key(s) not found, e.g. {sorted(set(keys))[:5]}; fix the "
            f"table or pass on_unknown_keys='skip' (--skip-unknown-keys) to record them as "
            "failures")
    for k in keys:
        failures.append({"key": k, "role": "positives", "reason": reason,
                         "detail": f"{what} key not in the embeddings"})


def _codes(values: np.ndarray) -> np.ndarray:
    _, inv = np.unique(values.astype(str), return_inverse=True)
    return inv.astype(np.int64)


def _resolve(cfg: MineConfig, qkeys_raw: np.ndarray, ckeys_raw: np.ndarray, qkeys: np.ndarray,
             ckeys: np.ndarray, failures: list[dict[str, str]]) -> dict[str, Any]:
    """Positives (CSR), self rows, groups and labels as corpus/query row arrays."""
    crow = {k: i for i, k in enumerate(ckeys)}
    qrow = {k: i for i, k in enumerate(qkeys)}
    self_ids = np.array([crow.get(k, -1) for k in qkeys], np.int64)
    nq, nc = len(qkeys), len(ckeys)
    pairs_q: list[int] = []
    pairs_c: list[int] = []
    pc = cfg.positives
    out: dict[str, Any] = {"self_ids": self_ids, "query_groups": None, "corpus_groups": None,
                           "query_labels": None, "corpus_labels": None}
    if pc.kind == "same_key":
        raw_c = set(ckeys_raw.tolist())
        _unknown(cfg, "query (same_key positive)",
                 [k for k in qkeys if k not in raw_c], failures, "unknown_positive_key")
        has = np.nonzero(self_ids >= 0)[0]
        pairs_q, pairs_c = has.tolist(), self_ids[has].tolist()
    elif pc.kind == "pairs":
        assert pc.path is not None
        t = read_key_table(pc.path, [pc.query_column, pc.positive_column])
        raw_q, raw_c = set(qkeys_raw.tolist()), set(ckeys_raw.tolist())
        qs, ps = t[pc.query_column], t[pc.positive_column]
        _unknown(cfg, "query", [k for k in qs if k not in raw_q], failures,
                 "unknown_query_key")
        _unknown(cfg, "positive", [k for k in ps if k not in raw_c], failures,
                 "unknown_positive_key")
        for a, b in zip(qs, ps, strict=True):
            i, j = qrow.get(a), crow.get(b)
            if i is not None and j is not None:
                pairs_q.append(i)
                pairs_c.append(j)
    groups_path = cfg.groups or (pc.path if pc.kind == "group" else None)
    if groups_path:
        kc, gc = (pc.key_column, pc.group_column)
        t = read_key_table(groups_path, [kc, gc])
        gmap = dict(zip(t[kc].tolist(), _codes(t[gc]).tolist(), strict=True))
        out["query_groups"] = np.array([gmap.get(k, -1) for k in qkeys], np.int64)
        out["corpus_groups"] = np.array([gmap.get(k, -1) for k in ckeys], np.int64)
    if pc.kind == "group":
        cg, qg = out["corpus_groups"], out["query_groups"]
        order = np.argsort(cg, kind="stable")
        sorted_g = cg[order]
        for i in range(nq):
            if qg[i] < 0:
                continue
            lo, hi = np.searchsorted(sorted_g, [qg[i], qg[i] + 1])
            members = order[lo:hi]
            members = members[members != self_ids[i]][: pc.max_scored]
            pairs_q.extend([i] * len(members))
            pairs_c.extend(members.tolist())
    pq_arr = np.array(pairs_q, np.int64)
    pc_arr = np.array(pairs_c, np.int64)
    o = np.lexsort((pc_arr, pq_arr))
    pq_arr, pc_arr = pq_arr[o], pc_arr[o]
    out["pos_indptr"] = np.searchsorted(pq_arr, np.arange(nq + 1)).astype(np.int64)
    out["pos_ids"] = pc_arr
    if cfg.labels:
        t = read_key_table(cfg.labels, [pc.key_column, cfg.label_column])
        lmap = dict(zip(t[pc.key_column].tolist(), t[cfg.label_column].tolist(), strict=True))
        codes = encode_label_paths([lmap.get(k) for k in qkeys] + [lmap.get(k) for k in ckeys])
        out["query_labels"], out["corpus_labels"] = codes[:nq], codes[nq:nq + nc]
    return out


# ------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class _ChunkTask:
    chunk: int
    start: int
    stop: int
    part_path: str
    queries_path: str
    corpus_path: str
    index_path: str
    index_expect: dict[str, Any]
    k: int
    pool: int
    metric: str
    seed: int
    gpu: str
    strategy: dict[str, Any]
    self_ids: np.ndarray
    positive_ids: np.ndarray
    query_groups: np.ndarray | None
    query_labels: np.ndarray | None
    corpus_groups_path: str | None
    corpus_labels_path: str | None


def _list_array(values: np.ndarray, mask: np.ndarray) -> Any:
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[mask]))


def _run_chunk(task: _ChunkTask) -> dict[str, Any]:
    """Mine one chunk of queries into its part file (idempotent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if os.path.exists(task.part_path):
        return {"chunk": task.chunk, "skipped": True}
    queries = np.load(task.queries_path, mmap_mode="r", allow_pickle=False)
    corpus = np.load(task.corpus_path, mmap_mode="r", allow_pickle=False)
    q = np.asarray(queries[task.start:task.stop], np.float32)
    built = load_index(task.index_path, expect=task.index_expect)
    scores, ids = search(built, q, task.pool, metric=task.metric, refine_vectors=corpus,
                         gpu=task.gpu)
    pos_scores = exact_scores(q, task.positive_ids, corpus, task.metric, fill=np.nan)
    lowest = np.where(np.isnan(pos_scores), np.inf, pos_scores).min(axis=1, initial=np.inf)
    pos_min = np.where(np.isposinf(lowest), np.nan, lowest).astype(np.float32)
    def load(p: str | None) -> np.ndarray | None:
        return None if p is None else np.load(p, mmap_mode="r", allow_pickle=False)
    strategy = build_strategy(strategy_from_dict(task.strategy))
    batch = CandidateBatch(
        ids=ids, scores=scores, query_index=np.arange(task.start, task.stop, dtype=np.int64),
        corpus_size=int(corpus.shape[0]), self_ids=task.self_ids,
        positive_ids=task.positive_ids, positive_scores=pos_min,
        query_groups=task.query_groups, corpus_groups=load(task.corpus_groups_path),
        query_labels=task.query_labels, corpus_labels=load(task.corpus_labels_path),
        seed=task.seed)
    sel = strategy.select(batch, task.k)
    need = (sel.ids >= 0) & np.isnan(sel.scores)
    if need.any():
        sel.scores[need] = exact_scores(q, np.where(need, sel.ids, -1), corpus, task.metric,
                                        fill=np.nan)[need]
    mask = sel.ids >= 0
    neg = sel.scores[mask]
    fin = pos_min[np.isfinite(pos_min)]
    both = np.concatenate([neg, fin])
    meta = {"removed": sel.removed, "rows": int(len(q)),
            "short": int((mask.sum(axis=1) < task.k).sum()),
            "no_positive": int((~np.isfinite(pos_min)).sum()),
            "score_min": float(both.min()) if both.size else None,
            "score_max": float(both.max()) if both.size else None}
    cols = {
        "query_row": pa.array(np.arange(task.start, task.stop, dtype=np.int64)),
        "negative_ids": _list_array(sel.ids, mask),
        "negative_scores": _list_array(sel.scores.astype(np.float32), mask),
        "negative_ranks": _list_array(sel.ranks.astype(np.int32), mask),
        "positive_score": pa.array(pos_min, mask=~np.isfinite(pos_min)),
    }
    if sel.levels is not None:
        cols["negative_levels"] = _list_array(sel.levels.astype(np.int8), mask)
    table = pa.table(cols).replace_schema_metadata({"mmshard.chunk": json.dumps(meta)})
    tmp = f"{task.part_path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, task.part_path)
    return {"chunk": task.chunk, "skipped": False, **meta}


# ----------------------------------------------------------------------- commit


def _result_from_summary(cfg: MineConfig, summary: dict[str, Any], total: int,
                         computed: int) -> MineResult:
    paths = output_paths(cfg.out)
    return MineResult(
        out=cfg.out, summary_path=paths["summary"],
        plot_path=paths["plot"] if cfg.plot else None,
        failures_path=paths["failures"] if os.path.exists(paths["failures"]) else None,
        n_queries=summary["queries"]["inputs"], n_mined=summary["queries"]["mined"],
        chunks_total=total, chunks_computed=computed, chunks_skipped=total - computed,
        index_kind=summary["index"]["kind"], summary=summary)


def mine(config: MineConfig, *, executor: Executor | None = None,
         progress: bool = True) -> MineResult:
    """Mine hard negatives for every query (see the module docstring for the steps).

    >>> res = mine(MineConfig(queries=EmbeddingSource(path="emb.npy"),
    ...                       out="neg.parquet", k=8))          # doctest: +SKIP
    >>> res.n_mined, res.summary["removed"]                     # doctest: +SKIP
    """
    import pyarrow.parquet as pq

    cfg = config
    paths = output_paths(cfg.out)
    plan = _plan_fingerprint(cfg)
    if os.path.exists(cfg.out) and os.path.exists(paths["summary"]):
        meta = pq.read_schema(cfg.out).metadata or {}
        if meta.get(b"mmshard.plan", b"").decode() == plan:
            with open(paths["summary"]) as f:
                summary = json.load(f)
            log.info("%s is up to date; nothing to do", cfg.out)
            return _result_from_summary(cfg, summary, summary["chunks"], 0)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    parts_dir = paths["parts"]
    plan_file = os.path.join(parts_dir, "plan.json")
    if os.path.isdir(parts_dir):
        old = None
        if os.path.exists(plan_file):
            with open(plan_file) as f:
                old = json.load(f).get("plan")
        if old != plan:
            log.warning("discarding parts of a different job in %s", parts_dir)
            shutil.rmtree(parts_dir)
    os.makedirs(parts_dir, exist_ok=True)
    _atomic_json(plan_file, {"plan": plan})

    qemb = load_embeddings(cfg.queries)
    cemb = load_embeddings(cfg.corpus) if cfg.corpus else qemb
    cname = cfg.corpus.path if cfg.corpus else cfg.queries.path
    if len(cemb) == 0:
        raise ConfigError(f"the corpus {cname} is empty (0 vectors); nothing to mine against")
    if len(qemb) == 0:
        raise ConfigError(f"the queries {cfg.queries.path} are empty (0 vectors)")
    if qemb.dim != cemb.dim:
        raise ConfigError(f"dimension mismatch: queries {cfg.queries.path} have dim "
                          f"{qemb.dim}, corpus {cname} has dim {cemb.dim}; embed both with "
                          "models that share one space")
    failures: list[dict[str, str]] = []
    q_path = os.path.join(parts_dir, "queries.npy")
    c_path = os.path.join(parts_dir, "corpus.npy") if cfg.corpus else q_path
    q_valid = _prepare(qemb, "query" if cfg.corpus else "query_and_corpus", q_path,
                       normalize=cfg.normalize, failures=failures)
    c_valid = (_prepare(cemb, "corpus", c_path, normalize=cfg.normalize, failures=failures)
               if cfg.corpus else q_valid)
    n_inputs = len(qemb) + (len(cemb) if cfg.corpus else 0)
    n_good = len(q_valid) + (len(c_valid) if cfg.corpus else 0)
    rate = 1 - n_good / n_inputs
    qkeys = qemb.keys[q_valid]
    ckeys = cemb.keys[c_valid]
    res = _resolve(cfg, qemb.keys, cemb.keys, qkeys, ckeys, failures)
    failures_path = _write_failures(paths["failures"], failures)
    if len(c_valid) == 0:
        raise JobError(f"the corpus {cname} has no usable vectors (all {len(cemb)} rows "
                       f"failed); see {failures_path}")
    if rate > cfg.max_failure_rate:
        raise JobError(f"{rate:.1%} of embedding rows are unusable (over max_failure_rate "
                       f"{cfg.max_failure_rate:.0%}); see {failures_path}")

    corpus = np.load(c_path, mmap_mode="r", allow_pickle=False)
    index_path = cfg.index_path or paths["index"]
    fp = fingerprint_array(corpus, extra={"metric": cfg.metric, "normalize": cfg.normalize})
    expect = index_meta(fingerprint=fp, n=int(corpus.shape[0]), d=int(corpus.shape[1]),
                        metric=cfg.metric, config=cfg.index)
    have = read_index_meta(index_path)
    current = have is not None and all(have.get(k) == v for k, v in expect.items())
    if cfg.index_reuse == "require" and not current:
        raise JobError(f"index {index_path} is missing or stale (index_reuse='require'); "
                       "rebuild it (--rebuild-index) or point index_path elsewhere")
    if cfg.index_reuse == "rebuild" or not current:
        built = build_index(corpus, metric=cfg.metric, config=cfg.index,
                            memory_budget=cfg.memory_budget, seed=cfg.seed)
        save_index(built, index_path, meta=expect)
        kind_params = built.params
        del built
    else:
        assert have is not None
        kind_params = have["params"]

    def _save(name: str, arr: np.ndarray | None) -> str | None:
        if arr is None:
            return None
        p = os.path.join(parts_dir, name)
        if not os.path.exists(p):
            np.save(p + ".tmp.npy", arr)
            os.replace(p + ".tmp.npy", p)
        return p

    cg_path = _save("corpus_groups.npy", res["corpus_groups"])
    cl_path = _save("corpus_labels.npy", res["corpus_labels"])
    strategy = build_strategy(cfg.strategy)
    indptr, pos_ids = res["pos_indptr"], res["pos_ids"]
    max_pos = int(np.diff(indptr).max(initial=0))
    pool = cfg.pool_size or strategy.pool_size(cfg.k) + max_pos
    pool = max(1, min(pool, int(corpus.shape[0])))
    nq = len(q_valid)
    n_chunks = -(-nq // cfg.chunk_size)

    def tasks() -> Any:
        for c in range(n_chunks):
            a, b = c * cfg.chunk_size, min(nq, (c + 1) * cfg.chunk_size)
            cnt = np.diff(indptr[a:b + 1])
            width = int(cnt.max(initial=0))
            pos = np.full((b - a, width), -1, np.int64)
            for i in np.nonzero(cnt)[0]:
                pos[i, : cnt[i]] = pos_ids[indptr[a + i]: indptr[a + i + 1]]
            def sl(x, a=a, b=b):  # rows a:b of an optional per-query array
                return None if x is None else np.ascontiguousarray(x[a:b])
            yield _ChunkTask(
                chunk=c, start=a, stop=b,
                part_path=os.path.join(parts_dir, f"chunk-{c:05d}.parquet"),
                queries_path=q_path, corpus_path=c_path, index_path=index_path,
                index_expect=expect, k=cfg.k, pool=pool, metric=cfg.metric, seed=cfg.seed,
                gpu=cfg.index.gpu, strategy=strategy_to_dict(cfg.strategy),
                self_ids=res["self_ids"][a:b].copy(), positive_ids=pos,
                query_groups=sl(res["query_groups"]), query_labels=sl(res["query_labels"]),
                corpus_groups_path=cg_path, corpus_labels_path=cl_path)

    todo = [t for t in tasks() if not os.path.exists(t.part_path)]
    ex = executor or LocalExecutor(1)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="mine", unit="chunk")
    computed = 0
    try:
        for _, r in ex.imap_unordered(_run_chunk, todo):
            computed += 0 if r.get("skipped") else 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    part_paths = [os.path.join(parts_dir, f"chunk-{c:05d}.parquet") for c in range(n_chunks)]
    missing = [p for p in part_paths if not os.path.exists(p)]
    if missing:
        raise JobError(f"{len(missing)} chunk(s) did not finish, e.g. {missing[0]}; rerun to "
                       "resume")
    metadata = {
        "mmshard.strategy": strategy.name,
        "mmshard.strategy_config": json.dumps(strategy_to_dict(cfg.strategy), sort_keys=True),
        "mmshard.mine_config": json.dumps(mine_config_to_dict(cfg), sort_keys=True,
                                          default=str),
        "mmshard.plan": plan,
        "mmshard.score": "inner_product" if cfg.metric == "ip" else "neg_squared_l2",
        "mmshard.format_version": str(_FORMAT_VERSION),
    }
    st = _commit(cfg, part_paths, qkeys, ckeys, metadata)
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    summary = {
        "out": cfg.out, "k": cfg.k, "metric": cfg.metric, "normalize": cfg.normalize,
        "strategy": strategy_to_dict(cfg.strategy), "index": kind_params,
        "index_path": index_path, "pool_size": pool, "chunks": n_chunks,
        "queries": {"inputs": len(qemb), "mined": st["rows"],
                    "failed": int(len(qemb) - len(q_valid)),
                    "short": st["short"], "without_positive": st["no_positive"]},
        "corpus": {"inputs": len(cemb), "indexed": int(len(c_valid)),
                   "failed": int(len(cemb) - len(c_valid))},
        "negatives": st["negatives"], "removed": st["removed"],
        "failures": reasons, "failures_path": failures_path,
        "histograms": {"edges": [round(float(e), 6) for e in st["edges"]],
                       "positive": st["hist_pos"].tolist(),
                       "negative": st["hist_neg"].tolist()},
    }
    _atomic_json(paths["summary"], summary)
    if cfg.plot:
        _draw_histograms(paths["plot"], st["edges"], st["hist_pos"], st["hist_neg"],
                         f"{strategy.name}: {st['rows']} queries, k={cfg.k}")
    shutil.rmtree(parts_dir, ignore_errors=True)
    return _result_from_summary(cfg, summary, n_chunks, computed)


# ---------------------------------------------------------------------- re-mine


def remine(config: MineConfig, *, queries: EmbeddingSource | None = None,
           corpus: EmbeddingSource | None = None, executor: Executor | None = None,
           progress: bool = False) -> MineResult:
    """Re-run :func:`mine` on a newer checkpoint's embeddings and swap ``config.out``
    (and its summary, plot, failures) atomically: readers see the old file or the new
    one, never a partial one.

    >>> new = remine(cfg, queries=EmbeddingSource(path="emb_step2000.npy"))  # doctest: +SKIP
    """
    final = output_paths(config.out)
    tmp_out = f"{config.out[: -len('.parquet')]}.remine-{os.getpid()}.parquet"
    changes: dict[str, Any] = {"out": tmp_out,
                               "index_path": config.index_path or final["index"]}
    if queries is not None:
        changes["queries"] = queries
    if corpus is not None:
        changes["corpus"] = corpus
    cfg = dataclasses.replace(config, **changes)
    res = mine(cfg, executor=executor, progress=progress)
    tmp = output_paths(tmp_out)
    for name in ("summary", "plot", "failures"):
        if os.path.exists(tmp[name]):
            os.replace(tmp[name], final[name])
        elif os.path.exists(final[name]):
            os.remove(final[name])
    os.replace(tmp_out, config.out)
    with open(final["summary"]) as f:
        summary = json.load(f)
    summary["out"] = config.out
    _atomic_json(final["summary"], summary)
    return dataclasses.replace(
        res, out=config.out, summary_path=final["summary"],
        plot_path=final["plot"] if res.plot_path else None,
        failures_path=final["failures"] if res.failures_path else None, summary=summary)


class Reminer:
    """Training-loop hook: every ``every_steps`` steps, re-mine with the embeddings a
    callback returns for the newest checkpoint, swapping the negatives file atomically.

    ``embeddings_for(step)`` returns one :class:`EmbeddingSource` (queries; also the
    corpus when the config mines queries against themselves) or a (queries, corpus) pair.

    >>> src = lambda step: EmbeddingSource(path=f"emb{step}.npy")
    >>> hook = Reminer(cfg, every_steps=5000, embeddings_for=src)  # doctest: +SKIP
    >>> hook.maybe_remine(step)                                    # doctest: +SKIP
    """

    def __init__(self, config: MineConfig, *, every_steps: int,
                 embeddings_for: Any, executor: Executor | None = None) -> None:
        if every_steps < 1:
            raise ConfigError(f"every_steps must be >= 1, got {every_steps}")
        self.config = config
        self.every_steps = every_steps
        self.embeddings_for = embeddings_for
        self.executor = executor
        self.last_step: int | None = None

    def maybe_remine(self, step: int) -> MineResult | None:
        """Re-mine when ``step`` is a positive multiple of ``every_steps``."""
        if step <= 0 or step % self.every_steps or step == self.last_step:
            return None
        src = self.embeddings_for(step)
        q, c = src if isinstance(src, tuple) else (src, None)
        res = remine(self.config, queries=q, corpus=c, executor=self.executor)
        self.last_step = step
        return res

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = state.get("last_step")
