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
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError, JobError
from ...samplers.negatives import (
    build_strategy,
    strategy_to_dict,
)
from ...storage import Storage, is_url
from ..artifacts import copy_file, split_path
from ..executor import Executor, LocalExecutor
from ..task import run_tasks
from .chunks import ChunkTask, lost_chunk, run_chunk
from .config import (
    MineConfig,
    MineResult,
    PositivesConfig,
    mine_config_from_dict,
    mine_config_to_dict,
    output_paths,
)
from .embeddings_io import (
    Embeddings,
    EmbeddingSource,
    load_embeddings,
)
from .faiss_index import (
    build_index,
    fingerprint_array,
    hold_index,
    index_meta,
    read_index_meta,
    release_index,
    save_index,
)
from .plan import FORMAT_VERSION, plan_fingerprint, prepare_vectors, resolve_rows
from .report import histogram_png, write_failures, write_negatives

__all__ = ["MineConfig", "MineResult", "PositivesConfig", "Reminer", "mine",
           "mine_config_from_dict", "mine_config_to_dict", "output_paths", "remine"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------- driver


@dataclass
class _Plan:
    """What the driver prepared: usable rows, their keys, positives, index, pool."""

    plan: str
    work: str
    qemb: Embeddings
    cemb: Embeddings
    q_path: str
    c_path: str
    q_valid: np.ndarray
    c_valid: np.ndarray
    qkeys: np.ndarray
    ckeys: np.ndarray
    res: dict[str, Any]
    failures: list[dict[str, str]]
    failures_path: str | None = None
    index_path: str = ""
    local_index: str = ""
    expect: dict[str, Any] = field(default_factory=dict)
    index_params: dict[str, Any] = field(default_factory=dict)
    pool: int = 1
    storage_options: dict | None = None


def _artifacts(cfg: MineConfig, so: dict | None = None) -> tuple[Storage, dict[str, str]]:
    """The folder of ``cfg.out`` and the names of the job's files in it."""
    parent, _, _ = cfg.out.rpartition("/") if is_url(cfg.out) else (
        os.path.dirname(os.path.abspath(cfg.out)), "", "")
    names = {k: v.rsplit("/", 1)[-1] if is_url(v) else os.path.basename(v)
             for k, v in output_paths(cfg.out).items() if k not in ("parts", "index")}
    return Storage(parent, so), names


def _work_dir(cfg: MineConfig) -> str:
    if cfg.work_dir:
        return os.path.abspath(cfg.work_dir)
    if not is_url(cfg.out):
        return os.path.abspath(output_paths(cfg.out)["parts"])
    import hashlib
    import tempfile

    tag = hashlib.sha1(cfg.out.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"mmshard-mine-{tag}")


def _up_to_date(art: Storage, names: dict[str, str], plan: str) -> dict[str, Any] | None:
    """The summary of a finished job with this plan (nothing lost), else None."""
    import pyarrow.parquet as pq

    if not (art.exists(names["out"]) and art.exists(names["summary"])):
        return None
    with art.open_read(names["out"]) as f:
        meta = pq.read_schema(f).metadata or {}
    if meta.get(b"mmshard.plan", b"").decode() != plan:
        return None
    summary = json.loads(art.read_bytes(names["summary"]))
    return None if summary["queries"].get("lost") else summary


def _open_work(work: str, plan: str) -> None:
    """Claim the working folder for this plan (parts of another plan are discarded)."""
    ws = Storage(work)
    if os.path.isdir(work):
        old = json.loads(ws.read_bytes("plan.json")).get("plan") if ws.exists(
            "plan.json") else None
        if old != plan:
            log.warning("discarding parts of a different job in %s", work)
            shutil.rmtree(work)
    os.makedirs(work, exist_ok=True)
    ws.write_bytes("plan.json", json.dumps({"plan": plan}).encode())


def _load_inputs(cfg: MineConfig) -> tuple[Embeddings, Embeddings]:
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
    return qemb, cemb


def _plan_inputs(cfg: MineConfig, plan: str, work: str, art: Storage,
                 names: dict[str, str]) -> _Plan:
    """Validate and prepare the vectors, resolve positives/groups/labels, check rates."""
    qemb, cemb = _load_inputs(cfg)
    failures: list[dict[str, str]] = []
    q_path = os.path.join(work, "queries.npy")
    c_path = os.path.join(work, "corpus.npy") if cfg.corpus else q_path
    q_valid = prepare_vectors(qemb, "query" if cfg.corpus else "query_and_corpus", q_path,
                       normalize=cfg.normalize, failures=failures)
    c_valid = (prepare_vectors(cemb, "corpus", c_path, normalize=cfg.normalize, failures=failures)
               if cfg.corpus else q_valid)
    n_inputs = len(qemb) + (len(cemb) if cfg.corpus else 0)
    n_good = len(q_valid) + (len(c_valid) if cfg.corpus else 0)
    qkeys, ckeys = qemb.keys[q_valid], cemb.keys[c_valid]
    res = resolve_rows(cfg, qemb.keys, cemb.keys, qkeys, ckeys, failures)
    p = _Plan(plan=plan, work=work, qemb=qemb, cemb=cemb, q_path=q_path, c_path=c_path,
              q_valid=q_valid, c_valid=c_valid, qkeys=qkeys, ckeys=ckeys, res=res,
              failures=failures)
    p.failures_path = write_failures(art, names["failures"], failures)
    cname = cfg.corpus.path if cfg.corpus else cfg.queries.path
    if len(c_valid) == 0:
        raise JobError(f"the corpus {cname} has no usable vectors (all {len(cemb)} rows "
                       f"failed); see {p.failures_path}")
    rate = 1 - n_good / n_inputs
    if rate > cfg.max_failure_rate:
        raise JobError(f"{rate:.1%} of embedding rows are unusable (over max_failure_rate "
                       f"{cfg.max_failure_rate:.0%}); see {p.failures_path}")
    return p


def _one_shot_index(cfg: MineConfig, p: _Plan, corpus: np.ndarray, in_process: bool) -> None:
    """``index_reuse="never"``: build, hand the index to in-process tasks in memory (or
    write a temporary copy into the working folder for other processes); no fingerprint,
    nothing at ``index_path``."""
    built = build_index(corpus, metric=cfg.metric, config=cfg.index,
                        memory_budget=cfg.memory_budget, seed=cfg.seed)
    p.index_params, p.index_path = built.params, ""
    p.local_index, p.expect = os.path.join(p.work, "index.faiss"), {"one_shot": p.plan}
    if in_process:
        hold_index(p.local_index, built, p.expect)
    else:
        save_index(built, p.local_index, meta=p.expect)


def _ensure_index(cfg: MineConfig, p: _Plan, in_process: bool = False) -> None:
    """Reuse the saved index when it matches the prepared corpus, else build and save it.

    Workers read a local copy: the index itself when ``index_path`` is local, else a copy
    in the working folder (``s3://`` indexes are downloaded once, uploaded after a build).
    Tasks running in this process (``in_process``) are handed a just-built index in
    memory instead of reading the file back.
    """
    corpus = np.load(p.c_path, mmap_mode="r", allow_pickle=False)
    if cfg.index_reuse == "never":
        _one_shot_index(cfg, p, corpus, in_process)
        return
    p.index_path = cfg.index_path or output_paths(cfg.out)["index"]
    st, rel = split_path(p.index_path, p.storage_options)
    p.local_index = st.path(rel) if st.local else os.path.join(p.work, "index.faiss")
    fp = fingerprint_array(corpus, extra={"metric": cfg.metric, "normalize": cfg.normalize})
    p.expect = index_meta(fingerprint=fp, n=int(corpus.shape[0]), d=int(corpus.shape[1]),
                          metric=cfg.metric, config=cfg.index)
    have = (json.loads(st.read_bytes(f"{rel}.json"))
            if st.exists(rel) and st.exists(f"{rel}.json") else None)
    current = have is not None and all(have.get(k) == v for k, v in p.expect.items())
    if cfg.index_reuse == "require" and not current:
        raise JobError(f"index {p.index_path} is missing or stale (index_reuse='require'); "
                       "rebuild it (--rebuild-index) or point index_path elsewhere")
    if cfg.index_reuse == "rebuild" or not current:
        built = build_index(corpus, metric=cfg.metric, config=cfg.index,
                            memory_budget=cfg.memory_budget, seed=cfg.seed)
        save_index(built, p.local_index, meta=p.expect)
        p.index_params = built.params
        if in_process:
            hold_index(p.local_index, built, {**p.expect, "params": built.params})
        if not st.local:  # the sidecar lands last: an index is trusted only with it
            st.remove(f"{rel}.json")
            local = Storage(p.work)
            copy_file(local, "index.faiss", st, rel)
            copy_file(local, "index.faiss.json", st, f"{rel}.json")
        return
    assert have is not None
    p.index_params = have["params"]
    if not st.local and read_index_meta(p.local_index) != have:
        local = Storage(p.work)
        copy_file(st, rel, local, "index.faiss")
        copy_file(st, f"{rel}.json", local, "index.faiss.json")


def _save_side(work: str, name: str, arr: np.ndarray | None) -> str | None:
    if arr is None:
        return None
    path = os.path.join(work, name)
    if not os.path.exists(path):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        Storage(work).write_bytes(name, buf.getvalue())
    return path


def _chunk_tasks(cfg: MineConfig, p: _Plan) -> list[ChunkTask]:
    """One task per ``chunk_size`` queries whose part is not written yet."""
    res = p.res
    cg_path = _save_side(p.work, "corpus_groups.npy", res["corpus_groups"])
    cl_path = _save_side(p.work, "corpus_labels.npy", res["corpus_labels"])
    indptr, pos_ids = res["pos_indptr"], res["pos_ids"]
    max_pos = int(np.diff(indptr).max(initial=0))
    pool = cfg.pool_size or build_strategy(cfg.strategy).pool_size(cfg.k) + max_pos
    p.pool = max(1, min(pool, len(p.c_valid)))
    nq = len(p.q_valid)
    tasks = []
    for c in range(-(-nq // cfg.chunk_size)):
        a, b = c * cfg.chunk_size, min(nq, (c + 1) * cfg.chunk_size)
        part = os.path.join(p.work, f"chunk-{c:05d}.parquet")
        if os.path.exists(part):
            continue
        cnt = np.diff(indptr[a:b + 1])
        pos = np.full((b - a, int(cnt.max(initial=0))), -1, np.int64)
        for i in np.nonzero(cnt)[0]:
            pos[i, : cnt[i]] = pos_ids[indptr[a + i]: indptr[a + i + 1]]

        def sl(x, a=a, b=b):  # rows a:b of an optional per-query array
            return None if x is None else np.ascontiguousarray(x[a:b])
        tasks.append(ChunkTask(
            chunk=c, start=a, stop=b, part_path=part, queries_path=p.q_path,
            corpus_path=p.c_path, index_path=p.local_index, index_expect=p.expect, k=cfg.k,
            pool=p.pool, metric=cfg.metric, seed=cfg.seed, gpu=cfg.index.gpu,
            strategy=strategy_to_dict(cfg.strategy), self_ids=res["self_ids"][a:b].copy(),
            positive_ids=pos, query_groups=sl(res["query_groups"]),
            query_labels=sl(res["query_labels"]), corpus_groups_path=cg_path,
            corpus_labels_path=cl_path))
    return tasks


def _summary(cfg: MineConfig, p: _Plan, st: dict[str, Any], n_chunks: int) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for f in p.failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    return {
        "out": cfg.out, "k": cfg.k, "metric": cfg.metric, "normalize": cfg.normalize,
        "strategy": strategy_to_dict(cfg.strategy), "index": p.index_params,
        "index_path": p.index_path or None, "pool_size": p.pool, "chunks": n_chunks,
        "queries": {"inputs": len(p.qemb), "mined": st["rows"],
                    "failed": int(len(p.qemb) - len(p.q_valid)) + st["lost"],
                    "lost": st["lost"], "short": st["short"], "grown_pool": st["grown"],
                    "without_positive": st["no_positive"]},
        "corpus": {"inputs": len(p.cemb), "indexed": int(len(p.c_valid)),
                   "failed": int(len(p.cemb) - len(p.c_valid))},
        "negatives": st["negatives"], "removed": st["removed"],
        "failures": reasons, "failures_path": p.failures_path,
        "histograms": {"edges": [round(float(e), 6) for e in st["edges"]],
                       "positive": st["hist_pos"].tolist(),
                       "negative": st["hist_neg"].tolist()},
    }


def _commit(cfg: MineConfig, p: _Plan, art: Storage, names: dict[str, str],
            n_chunks: int, lost: bool) -> dict[str, Any]:
    """Parts -> the negatives file, failures, summary and plot (each atomic)."""
    strategy = build_strategy(cfg.strategy)
    metadata = {
        "mmshard.strategy": strategy.name,
        "mmshard.strategy_config": json.dumps(strategy_to_dict(cfg.strategy), sort_keys=True),
        "mmshard.mine_config": json.dumps(mine_config_to_dict(cfg), sort_keys=True,
                                          default=str),
        "mmshard.plan": p.plan,
        "mmshard.score": "inner_product" if cfg.metric == "ip" else "neg_squared_l2",
        "mmshard.format_version": str(FORMAT_VERSION),
    }
    parts = [os.path.join(p.work, f"chunk-{c:05d}.parquet") for c in range(n_chunks)]
    st = write_negatives(art, names["out"], parts, p.qkeys, p.ckeys, metadata,
                         cfg.histogram_bins)
    st["grown"] = sum(_chunk_meta(x).get("grown", 0) for x in parts)
    if lost:
        p.failures_path = write_failures(art, names["failures"], p.failures)
    summary = _summary(cfg, p, st, n_chunks)
    art.write_bytes(names["summary"], json.dumps(summary, indent=2, sort_keys=True,
                                                 default=str).encode())
    if cfg.plot:
        art.write_bytes(names["plot"], histogram_png(
            st["edges"], st["hist_pos"], st["hist_neg"],
            f"{strategy.name}: {st['rows']} queries, k={cfg.k}"))
    return summary


def _chunk_meta(path: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"mmshard.chunk"])


def _result(cfg: MineConfig, art: Storage, names: dict[str, str], summary: dict[str, Any],
            total: int, computed: int) -> MineResult:
    return MineResult(
        out=cfg.out, stats=summary, summary_path=art.path(names["summary"]),
        plot_path=art.path(names["plot"]) if cfg.plot else None,
        failures_path=(art.path(names["failures"]) if art.exists(names["failures"])
                       else None),
        n_queries=summary["queries"]["inputs"], n_mined=summary["queries"]["mined"],
        chunks_total=total, chunks_computed=computed, chunks_skipped=total - computed,
        index_kind=summary["index"]["kind"])


def mine(config: MineConfig, *, executor: Executor | None = None, progress: bool = True,
         storage_options: dict | None = None) -> MineResult:
    """Mine hard negatives for every query (see the module docstring for the steps).

    ``storage_options`` are fsspec options for an ``out``/``index_path`` URL.

    >>> res = mine(MineConfig(queries=EmbeddingSource(path="emb.npy"),
    ...                       out="neg.parquet", k=8))          # doctest: +SKIP
    >>> res.n_mined, res.summary["removed"]                     # doctest: +SKIP
    """
    cfg = config
    art, names = _artifacts(cfg, storage_options)
    plan = plan_fingerprint(cfg)
    done = _up_to_date(art, names, plan)
    if done is not None:
        log.info("%s is up to date; nothing to do", cfg.out)
        return _result(cfg, art, names, done, done["chunks"], 0)
    work = _work_dir(cfg)
    _open_work(work, plan)
    p = _plan_inputs(cfg, plan, work, art, names)
    p.storage_options = storage_options
    executor = executor or LocalExecutor(1)
    _ensure_index(cfg, p, in_process=isinstance(executor, LocalExecutor))
    n_chunks = -(-len(p.q_valid) // cfg.chunk_size)
    todo = _chunk_tasks(cfg, p)
    lost: list[int] = []

    def on_lost(task: ChunkTask, cause: object) -> dict[str, Any]:
        lost.append(task.chunk)
        return lost_chunk(task, cause, p.qkeys, p.failures)

    computed = 0
    try:
        for _, r in run_tasks(executor, run_chunk, todo, on_lost=on_lost,
                              progress=progress and bool(todo), desc="mine"):
            computed += 0 if r.get("skipped") else 1
    finally:
        release_index(p.local_index)
    missing = [c for c in range(n_chunks)
               if not os.path.exists(os.path.join(work, f"chunk-{c:05d}.parquet"))]
    if missing:
        raise JobError(f"{len(missing)} chunk(s) did not finish, e.g. chunk {missing[0]}; "
                       "rerun to resume")
    summary = _commit(cfg, p, art, names, n_chunks, bool(lost))
    shutil.rmtree(work, ignore_errors=True)
    return _result(cfg, art, names, summary, n_chunks, computed)


# ---------------------------------------------------------------------- re-mine


def _move(art: Storage, src: str, dst: str) -> None:
    if art.local:
        os.replace(art.path(src), art.path(dst))
    else:
        copy_file(art, src, art, dst)
        art.remove(src)


def remine(config: MineConfig, *, queries: EmbeddingSource | None = None,
           corpus: EmbeddingSource | None = None, executor: Executor | None = None,
           progress: bool = False, storage_options: dict | None = None) -> MineResult:
    """Re-run :func:`mine` on a newer checkpoint's embeddings and swap ``config.out``
    (and its summary, plot, failures) in: readers see the old file or the new one,
    never a partial one.

    >>> new = remine(cfg, queries=EmbeddingSource(path="emb_step2000.npy"))  # doctest: +SKIP
    """
    art, final = _artifacts(config, storage_options)
    tmp_out = f"{config.out[: -len('.parquet')]}.remine-{os.getpid()}.parquet"
    changes: dict[str, Any] = {"out": tmp_out,
                               "index_path": config.index_path or
                               output_paths(config.out)["index"]}
    if queries is not None:
        changes["queries"] = queries
    if corpus is not None:
        changes["corpus"] = corpus
    cfg = dataclasses.replace(config, **changes)
    res = mine(cfg, executor=executor, progress=progress, storage_options=storage_options)
    _, tmp = _artifacts(cfg, storage_options)
    for name in ("summary", "plot", "failures"):
        if art.exists(tmp[name]):
            _move(art, tmp[name], final[name])
        else:
            art.remove(final[name])
    _move(art, tmp["out"], final["out"])
    summary = json.loads(art.read_bytes(final["summary"]))
    summary["out"] = config.out
    art.write_bytes(final["summary"], json.dumps(summary, indent=2, sort_keys=True,
                                                 default=str).encode())
    return dataclasses.replace(
        res, out=config.out, summary_path=art.path(final["summary"]),
        plot_path=art.path(final["plot"]) if res.plot_path else None,
        failures_path=art.path(final["failures"]) if res.failures_path else None,
        stats=summary)


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
