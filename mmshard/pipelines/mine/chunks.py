"""The mining job's task: one chunk of queries -> one Parquet part file.

A task loads the SAVED index (once per worker process), searches its chunk, lets the
negative strategy pick (growing the candidate pool for queries left short), and writes
``chunk-NNNNN.parquet`` atomically with its counts in the file metadata.  A lost task
(its worker died on every attempt) is accounted for by :func:`lost_chunk`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...samplers.negatives import CandidateBatch, build_strategy, strategy_from_dict
from ...storage import Storage
from ._arrow import list_array, num_array, table
from .faiss_index import exact_scores, load_index, search

__all__ = ["ChunkTask", "lost_chunk", "run_chunk"]


@dataclass(frozen=True)
class ChunkTask:
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
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    return list_array(offsets, num_array(values[mask]))


def _load(p: str | None) -> np.ndarray | None:
    return None if p is None else np.load(p, mmap_mode="r", allow_pickle=False)


def _rows(x: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if x is None else x[rows]


def _select(task: ChunkTask, q: np.ndarray, rows: np.ndarray, pool: int, built: Any,
            corpus: np.ndarray, pos_min: np.ndarray, strategy: Any,
            side: tuple[np.ndarray | None, np.ndarray | None]) -> Any:
    """Search ``pool`` candidates for the chunk's ``rows`` and let the strategy pick."""
    scores, ids = search(built, q[rows], pool, metric=task.metric, refine_vectors=corpus,
                         gpu=task.gpu)
    batch = CandidateBatch(
        ids=ids, scores=scores, query_index=task.start + rows.astype(np.int64),
        corpus_size=int(corpus.shape[0]), self_ids=task.self_ids[rows],
        positive_ids=task.positive_ids[rows], positive_scores=pos_min[rows],
        query_groups=_rows(task.query_groups, rows), corpus_groups=side[0],
        query_labels=_rows(task.query_labels, rows), corpus_labels=side[1], seed=task.seed)
    return strategy.select(batch, task.k)


def _select_growing(task: ChunkTask, q: np.ndarray, built: Any, corpus: np.ndarray,
                    pos_min: np.ndarray) -> tuple[Any, int]:
    """Select negatives; queries left with fewer than k are searched again with a doubled
    pool until they have k or the pool is the whole corpus.  Returns (selection, number
    of queries that needed a larger pool).  Guard counts are those of the first pool."""
    strategy = build_strategy(strategy_from_dict(task.strategy))
    side = (_load(task.corpus_groups_path), _load(task.corpus_labels_path))
    n_corpus = int(corpus.shape[0])
    rows = np.arange(len(q))
    sel = _select(task, q, rows, task.pool, built, corpus, pos_min, strategy, side)
    pool, grown = task.pool, 0
    short = np.nonzero((sel.ids >= 0).sum(axis=1) < task.k)[0]
    grown = len(short) if pool < n_corpus else 0
    while len(short) and pool < n_corpus:
        pool = min(2 * pool, n_corpus)
        again = _select(task, q, short, pool, built, corpus, pos_min, strategy, side)
        for name in ("ids", "scores", "ranks", "levels"):
            full = getattr(sel, name)
            if full is not None:
                full[short] = getattr(again, name)
        short = short[(again.ids >= 0).sum(axis=1) < task.k]
    return sel, grown


def run_chunk(task: ChunkTask) -> dict[str, Any]:
    """Mine one chunk of queries into its part file (idempotent)."""
    if os.path.exists(task.part_path):
        return {"chunk": task.chunk, "skipped": True}
    queries = np.load(task.queries_path, mmap_mode="r", allow_pickle=False)
    corpus = np.load(task.corpus_path, mmap_mode="r", allow_pickle=False)
    q = np.asarray(queries[task.start:task.stop], np.float32)
    built = load_index(task.index_path, expect=task.index_expect)
    pos_scores = exact_scores(q, task.positive_ids, corpus, task.metric, fill=np.nan)
    lowest = np.where(np.isnan(pos_scores), np.inf, pos_scores).min(axis=1, initial=np.inf)
    pos_min = np.where(np.isposinf(lowest), np.nan, lowest).astype(np.float32)
    sel, grown = _select_growing(task, q, built, corpus, pos_min)
    need = (sel.ids >= 0) & np.isnan(sel.scores)
    if need.any():
        sel.scores[need] = exact_scores(q, np.where(need, sel.ids, -1), corpus, task.metric,
                                        fill=np.nan)[need]
    mask = sel.ids >= 0
    both = np.concatenate([sel.scores[mask], pos_min[np.isfinite(pos_min)]])
    meta = {"removed": sel.removed, "rows": int(len(q)), "grown": grown,
            "short": int((mask.sum(axis=1) < task.k).sum()),
            "no_positive": int((~np.isfinite(pos_min)).sum()),
            "score_min": float(both.min()) if both.size else None,
            "score_max": float(both.max()) if both.size else None}
    cols = {
        "query_row": num_array(np.arange(task.start, task.stop, dtype=np.int64)),
        "negative_ids": _list_array(sel.ids, mask),
        "negative_scores": _list_array(sel.scores.astype(np.float32), mask),
        "negative_ranks": _list_array(sel.ranks.astype(np.int32), mask),
        "positive_score": num_array(pos_min, valid=np.isfinite(pos_min)),
    }
    if sel.levels is not None:
        cols["negative_levels"] = _list_array(sel.levels.astype(np.int8), mask)
    _write_part(task.part_path, table(cols), meta)
    return {"chunk": task.chunk, "skipped": False, **meta}


def _write_part(path: str, table: Any, meta: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata({"mmshard.chunk": json.dumps(meta)})
    with Storage(os.path.dirname(path)).atomic_writer(os.path.basename(path)) as f:
        pq.write_table(table, f)


def lost_chunk(task: ChunkTask, cause: object, qkeys: np.ndarray,
                failures: list[dict[str, str]]) -> dict[str, Any]:
    """A chunk whose worker died on every attempt: ``worker_lost`` failure rows for its
    queries and an empty part, so the job completes (a rerun mines them again)."""
    import pyarrow as pa

    detail = f"the task of query chunk {task.chunk} died on every attempt: {cause}"
    failures += [{"key": str(k), "role": "query", "reason": "worker_lost", "detail": detail}
                 for k in qkeys[task.start:task.stop]]
    meta = {"removed": {}, "rows": 0, "short": 0, "no_positive": 0, "grown": 0,
            "score_min": None, "score_max": None, "lost": task.stop - task.start}
    _write_part(task.part_path, pa.table({"query_row": pa.array([], pa.int64())}), meta)
    return {"chunk": task.chunk, "skipped": False, **meta}
