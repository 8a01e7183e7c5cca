"""Planning a mining job: its fingerprint, the prepared vectors (validated, float32,
normalised once) and the positives/groups/labels resolved to corpus and query rows.
Consumes :class:`~.embeddings_io.Embeddings`; emits ``.npy`` files in the working folder
and plain arrays for the chunk tasks."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...samplers.negatives import encode_label_paths
from .config import MineConfig, mine_config_to_dict
from .embeddings_io import Embeddings, read_key_table, source_signature

__all__ = ["FORMAT_VERSION", "plan_fingerprint", "prepare_vectors", "resolve_rows"]

FORMAT_VERSION = 1


def _file_sig(path: str | None) -> Any:
    if not path:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def plan_fingerprint(cfg: MineConfig) -> str:
    import hashlib

    d = mine_config_to_dict(cfg)
    d.pop("out", None)
    d.pop("work_dir", None)
    sig = {"config": d, "version": FORMAT_VERSION,
           "queries": source_signature(cfg.queries),
           "corpus": source_signature(cfg.corpus) if cfg.corpus else None,
           "positives": _file_sig(cfg.positives.path), "groups": _file_sig(cfg.groups),
           "labels": _file_sig(cfg.labels)}
    return hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()


def prepare_vectors(emb: Embeddings, role: str, path: str, *, normalize: bool,
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
    # a memory-mapped working file (local by design: workers mmap it), written under a
    # temporary name and renamed, so a killed job never leaves a half-written copy
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


def resolve_rows(cfg: MineConfig, qkeys_raw: np.ndarray, ckeys_raw: np.ndarray, qkeys: np.ndarray,
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
