"""``mmshard audit``: leakage between splits (or against an external eval set) and the
dataset's own contract.

Methods, each a row ``method`` in ``audit.parquet``:

- ``exact``: equal sha256 of the primary medium on both sides;
- ``phash`` (or ``dhash``): perceptual hashes within ``threshold`` Hamming bits (multi-index
  hashing; videos by their ``keyframes/`` thumbnails, half of the shorter one's keyframes
  must match); a pair already found exactly is reported once, as ``exact``;
- ``embedding``: cosine >= ``1 - eps`` between embedding vectors (a field set present on
  both sides; FAISS exact inner-product range search, one split pair in memory at a time);
- ``group``: one group id in two splits (inside one dataset; one row per group and split
  pair, with an example key from each side).

Without ``against`` the sides are the dataset's splits (every pair of different splits);
with ``against`` side A is the dataset and side B the other dataset.  ``leaks`` counts
the distinct key pairs found by the content methods plus the leaking groups.  The
contract checks: every group in one split only, and the ledger accounts for every input
(one row per source, ok rows = manifest keys, stats.json counts agree).

Writes ``<out>/audit.parquet`` (``key_a, split_a, key_b, split_b, dataset_b, similarity,
method``) and ``<out>/summary.json``; ``out`` defaults to ``<dataset>/audit``.

>>> r = audit("data/photos", AuditConfig(max_leaks=0))   # doctest: +SKIP
>>> r.passed, r.stats["leaks"], r.stats["problems"]      # doctest: +SKIP
(True, 0, [])
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...dataset import Dataset
from ...errors import ConfigError, ShardError
from ...storage import Storage
from ..executor import Executor, make_executor
from ..result import JobResult
from .dedup import hash_dataset
from .hashing import ShardHashes

__all__ = ["AUDIT_METHODS", "AuditConfig", "AuditResult", "audit", "contract_problems"]

AUDIT_METHODS = ("exact", "phash", "embedding", "group")


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Options of ``mmshard audit``.

    ``methods``: any of exact, phash, embedding, group.  ``hash``: phash or dhash.
    ``field_set``: embedding field set (default: an ``emb*`` field set both sides have;
    the embedding method is skipped when there is none).  ``max_leaks``: the audit fails
    above this many leaks.

    >>> AuditConfig(methods=("exact",), max_leaks=3).max_leaks
    3
    """

    methods: tuple[str, ...] = AUDIT_METHODS
    hash: str = "phash"
    threshold: int = 10
    field_set: str | None = None
    eps: float = 0.05
    max_leaks: int = 0
    keyframes: str = "keyframes"

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        bad = [m for m in self.methods if m not in AUDIT_METHODS]
        if bad or not self.methods:
            raise ConfigError(f"unknown audit method(s) {bad or '(none)'}; allowed: "
                              f"{', '.join(AUDIT_METHODS)}")
        if self.hash not in ("phash", "dhash"):
            raise ConfigError(f"hash must be phash or dhash, got {self.hash!r}")
        if not isinstance(self.threshold, int) or not 0 <= self.threshold <= 32:
            raise ConfigError(f"threshold must be an int in [0, 32], got {self.threshold!r}")
        if not 0 < self.eps < 1:
            raise ConfigError(f"eps must be in (0, 1), got {self.eps!r}")
        if not isinstance(self.max_leaks, int) or self.max_leaks < 0:
            raise ConfigError(f"max_leaks must be an int >= 0, got {self.max_leaks!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditConfig:
        """Inverse of :meth:`to_dict` (``--config FILE.yaml``); unknown keys are refused."""
        from ..._registry import config_from_dict

        return config_from_dict(cls, data)


@dataclass(frozen=True)
class AuditResult(JobResult):
    """``out`` is the audit folder; ``stats`` its summary.json (``leaks``, ``by_pair``,
    ``problems``, ``passed``)."""

    @property
    def passed(self) -> bool:
        return bool(self.stats["passed"])

    @property
    def leaks(self) -> int:
        return int(self.stats["leaks"])


@dataclass
class _Side:
    """One dataset's samples flattened: per sample key/split/sha/group, per hash owner."""

    ds: Dataset
    keys: list[str]
    split: np.ndarray
    sha: np.ndarray
    group: dict[str, str]
    owner: np.ndarray
    hashes: np.ndarray
    splits: list[str] = field(default_factory=list)


def _side(ds: Dataset, parts: list[ShardHashes]) -> _Side:
    keys = [k for p in parts for k in p.keys]
    offsets = np.cumsum([0] + [len(p.keys) for p in parts])
    owner = np.concatenate([p.owner.astype(np.int64) + o for p, o in zip(parts, offsets)]) \
        if parts else np.empty(0, np.int64)
    hashes = np.concatenate([p.hashes for p in parts]) if parts else np.empty(0, np.uint64)
    group: dict[str, str] = {}
    if ds.storage.exists("manifest.parquet"):
        m = ds.read_table("manifest").select(["key", "group"]).to_pydict()
        group = {k: g for k, g in zip(m["key"], m["group"]) if g is not None}
    splits = list(dict.fromkeys(p.split for p in parts))
    return _Side(ds=ds, keys=keys, split=np.array([p.split for p in parts for _ in p.keys]),
                 sha=np.array([s for p in parts for s in p.sha256]), group=group,
                 owner=owner, hashes=hashes, splits=splits)


def _exact_pairs(a: _Side, b: _Side | None) -> tuple[np.ndarray, np.ndarray]:
    ref = b or a
    index: dict[str, list[int]] = {}
    for j, s in enumerate(ref.sha):
        if s:
            index.setdefault(str(s), []).append(j)
    ia, ib = [], []
    for i, s in enumerate(a.sha):
        for j in index.get(str(s), ()) if s else ():
            if b is not None or a.split[i] != a.split[j]:
                ia.append(i)
                ib.append(j)
    return np.array(ia, np.int64), np.array(ib, np.int64)


def _near_pairs(a: _Side, b: _Side | None, threshold: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ...tokenizers.phash import near_pairs

    ref = b or a
    if not len(a.hashes) or not len(ref.hashes):
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    i, j, d = near_pairs(a.hashes, threshold, ref=None if b is None else ref.hashes)
    oa, ob = a.owner[i], ref.owner[j]
    if b is None:
        keep = a.split[oa] != a.split[ob]
        oa, ob, d = oa[keep], ob[keep], d[keep]
    n = np.int64(max(len(ref.keys), 1))
    code = oa * n + ob
    uniq, count = np.unique(code, return_counts=True)
    best = np.minimum.reduceat(d[np.argsort(code, kind="stable")], np.r_[0, np.cumsum(count)[:-1]]
                               ) if len(code) else d
    pa, pb = uniq // n, uniq % n
    na = np.bincount(a.owner, minlength=len(a.keys))[pa]
    nb = np.bincount(ref.owner, minlength=len(ref.keys))[pb]
    ok = count >= np.ceil(np.minimum(na, nb) / 2)
    return pa[ok], pb[ok], best[ok]


def _embedding_vectors(ds: Dataset, field_set: str) -> dict[str, tuple[list[str], np.ndarray]]:
    from .semantic import VectorSource, _normalise

    m = ds.read_table("manifest").select(["key", "split"]).to_pydict()
    split_of = dict(zip(m["key"], m["split"]))
    out: dict[str, tuple[list[str], list[np.ndarray]]] = {}
    for keys, v in VectorSource.from_sidecar(ds, field_set).chunks():
        for k, row in zip(keys, _normalise(v)):
            ks, vs = out.setdefault(split_of.get(k, "?"), ([], []))
            ks.append(k)
            vs.append(row)
    return {s: (ks, np.stack(vs).astype(np.float32)) for s, (ks, vs) in out.items()}


def _range_pairs(qa: np.ndarray, rb: np.ndarray, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(rb.shape[1])
    index.add(np.ascontiguousarray(rb))
    lims, sims, ids = index.range_search(np.ascontiguousarray(qa), threshold)
    qi = np.repeat(np.arange(len(qa)), np.diff(lims.astype(np.int64)))
    return qi.astype(np.int64), ids.astype(np.int64), sims.astype(np.float32)


def _pick_field_set(a: Dataset, b: Dataset | None, config: AuditConfig) -> str | None:
    if config.field_set:
        return config.field_set
    both = {n for n in a.sidecars() if n.startswith("emb")}
    if b is not None:
        both &= {n for n in b.sidecars() if n.startswith("emb")}
    return sorted(both)[0] if len(both) >= 1 else None


def _embedding_rows(a: _Side, b: _Side | None, config: AuditConfig, b_name: str
                    ) -> list[dict]:
    fs = _pick_field_set(a.ds, b.ds if b else None, config)
    if fs is None:
        return []
    va = _embedding_vectors(a.ds, fs)
    vb = va if b is None else _embedding_vectors(b.ds, fs)
    rows = []
    sa = [s for s in a.splits if s in va]
    for x, s1 in enumerate(sa):
        for s2 in (sa[x + 1:] if b is None else list(vb)):
            (ka, xa), (kb, xb) = va[s1], vb[s2]
            i, j, sim = _range_pairs(xa, xb, 1.0 - config.eps)
            rows += [{"key_a": ka[p], "split_a": s1, "key_b": kb[q], "split_b": s2,
                      "dataset_b": b_name, "similarity": float(v), "method": "embedding"}
                     for p, q, v in zip(i, j, sim)]
    return rows


def _ordered(a: _Side, i: int, j: int, b: _Side | None) -> tuple[int, int]:
    """Inside one dataset, put the pair in split order (train before val before test)."""
    if b is None and a.splits.index(a.split[i]) > a.splits.index(a.split[j]):
        return j, i
    return i, j


def _content_rows(a: _Side, b: _Side | None, config: AuditConfig, b_name: str) -> list[dict]:
    ref = b or a
    rows: list[dict] = []
    seen: set[tuple[int, int]] = set()

    def add(i: int, j: int, sim: float, method: str) -> None:
        i, j = _ordered(a, int(i), int(j), b)
        if (i, j) in seen:
            return
        seen.add((i, j))
        rows.append({"key_a": a.keys[i], "split_a": str(a.split[i]), "key_b": ref.keys[j],
                     "split_b": str(ref.split[j]), "dataset_b": b_name,
                     "similarity": sim, "method": method})

    if "exact" in config.methods:
        for i, j in zip(*_exact_pairs(a, b)):
            add(i, j, 1.0, "exact")
    if "phash" in config.methods:
        for i, j, d in zip(*_near_pairs(a, b, config.threshold)):
            add(i, j, 1.0 - int(d) / 64.0, config.hash)
    return rows


def _group_rows(a: _Side) -> list[dict]:
    by_group: dict[str, dict[str, str]] = {}
    for k, s in zip(a.keys, a.split):
        g = a.group.get(k)
        if g is not None:
            by_group.setdefault(g, {}).setdefault(str(s), k)
    rows = []
    for _g, splits in sorted(by_group.items()):
        names = [s for s in a.splits if s in splits]
        for x, s1 in enumerate(names):
            for s2 in names[x + 1:]:
                rows.append({"key_a": splits[s1], "split_a": s1, "key_b": splits[s2],
                             "split_b": s2, "dataset_b": "", "similarity": None,
                             "method": "group"})
    return rows


def contract_problems(ds: Dataset) -> list[str]:
    """The dataset's own contract, re-checked: whole groups per split, and a ledger row
    for every input that agrees with the manifest and stats.json."""
    problems: list[str] = []
    try:
        m = ds.read_table("manifest").select(["key", "split", "group"]).to_pydict()
    except ShardError as e:
        return [str(e)]
    splits_of: dict[str, set[str]] = {}
    for g, s in zip(m["group"], m["split"]):
        if g is not None:
            splits_of.setdefault(g, set()).add(s)
    split_groups = sorted(g for g, s in splits_of.items() if len(s) > 1)
    if split_groups:
        problems.append(f"{len(split_groups)} group(s) span several splits, e.g. "
                        f"{split_groups[0]!r} in {sorted(splits_of[split_groups[0]])}")
    if not ds.storage.exists("ledger.parquet"):
        return problems + [f"{ds.storage.path('ledger.parquet')} is missing"]
    led = ds.read_table("ledger").select(["source", "key", "status"]).to_pydict()
    inputs_only = [i for i, s in enumerate(led["status"]) if s != "ignored"]  # not inputs
    led = {k: [v[i] for i in inputs_only] for k, v in led.items()}
    dup_src = [s for s, c in Counter(led["source"]).items() if c > 1]
    if dup_src:
        problems.append(f"{len(dup_src)} input(s) have several ledger rows, e.g. {dup_src[0]!r}")
    ok = {k for k, s in zip(led["key"], led["status"]) if s == "ok"}
    man = set(m["key"])
    if ok != man:
        problems.append(f"ledger ok keys and manifest keys differ: {len(ok - man)} only in the "
                        f"ledger, {len(man - ok)} only in the manifest")
    if ds.storage.exists("stats.json"):
        st = json.loads(ds.storage.read_bytes("stats.json"))
        status = Counter(led["status"])
        inputs = st.get("inputs")
        if inputs is not None and inputs != len(led["source"]):
            problems.append(f"stats.json says {inputs} inputs, the ledger has "
                            f"{len(led['source'])} rows")
        for k in ("ok", "failed", "duplicate"):
            if k in st and st[k] != status.get(k, 0):
                problems.append(f"stats.json {k}={st[k]} but the ledger has {status.get(k, 0)}")
    return problems


def _summary(rows: list[dict], problems: list[str], config: AuditConfig, n_a: int,
             n_b: int | None) -> dict[str, Any]:
    by_pair = Counter((r["split_a"], r["split_b"], r["method"]) for r in rows)
    content = {(r["key_a"], r["key_b"]) for r in rows if r["method"] != "group"}
    leaks = len(content) + sum(r["method"] == "group" for r in rows)
    return {"config": config.to_dict(), "samples": n_a, "samples_against": n_b,
            "by_pair": [{"split_a": a, "split_b": b, "method": m, "pairs": c}
                        for (a, b, m), c in sorted(by_pair.items())],
            "leaks": leaks, "leaking_keys": len({r["key_a"] for r in rows}),
            "problems": problems, "passed": leaks <= config.max_leaks and not problems}


def audit(dataset: str, config: AuditConfig | None = None, *, against: str | None = None,
          out: str | None = None, executor: Executor | None = None, progress: bool = False,
          storage_options: dict | None = None) -> AuditResult:
    """Audit ``dataset`` (see the module docstring); never raises on leaks, the result
    says whether it passed.

    >>> audit("ds", against="eval_ds", executor=make_executor("local")).passed  # doctest: +SKIP
    True
    """
    config = config or AuditConfig()
    t0 = time.time()
    ds_a = Dataset(dataset, storage_options)
    ds_b = Dataset(against, storage_options) if against else None
    kind = config.hash if "phash" in config.methods else "exact"
    own = executor is None
    executor = executor or make_executor("local")
    try:
        a = _side(ds_a, hash_dataset(ds_a, kind, executor, keyframes=config.keyframes,
                                     progress=progress, desc="audit hash"))
        b = None if ds_b is None else _side(ds_b, hash_dataset(
            ds_b, kind, executor, keyframes=config.keyframes, progress=progress,
            desc="audit hash (against)"))
    finally:
        if own:
            executor.close()
    b_name = ds_b.root if ds_b else ""
    rows = _content_rows(a, b, config, b_name)
    if "embedding" in config.methods:
        rows += _embedding_rows(a, b, config, b_name)
    if "group" in config.methods and b is None:
        rows += _group_rows(a)
    problems = contract_problems(ds_a)
    stats = _summary(rows, problems, config, len(a.keys), len(b.keys) if b else None)
    stats["seconds"] = round(time.time() - t0, 3)
    _write(Storage(out, storage_options) if out else Storage(ds_a.storage.path("audit"),
                                                             storage_options), rows, stats)
    return AuditResult(out=out or ds_a.storage.path("audit"), stats=stats)


def _write(storage: Storage, rows: list[dict], stats: dict[str, Any]) -> None:
    import pyarrow as pa

    from ..commit import ParquetSink

    schema = pa.schema([("key_a", pa.string()), ("split_a", pa.string()), ("key_b", pa.string()),
                        ("split_b", pa.string()), ("dataset_b", pa.string()),
                        ("similarity", pa.float32()), ("method", pa.string())])
    with ParquetSink(storage, "audit.parquet", schema) as sink:
        for s in range(0, len(rows), 65536):
            sink.write(rows[s:s + 65536])
    storage.write_bytes("summary.json", (json.dumps(stats, indent=1, sort_keys=True) + "\n"
                                         ).encode())
