"""Re-read a dataset and check that index, shards, manifest, ledger and stats agree.

``verify_dataset(root)`` returns a list of problems (empty when all is well):
every indexed shard exists with the recorded size and sha256, holds exactly the
indexed number of samples, in the manifest's key order, each with a ``json`` whose key
matches; keys are unique across the dataset; every manifest row is an ``ok`` ledger row
and vice versa; and inputs = ok + failed + duplicate.

>>> verify_dataset("out")                                   # doctest: +SKIP
[]
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from typing import Any

from .dataset import open_dataset
from .errors import ShardError

__all__ = ["inspect_dataset", "verify_dataset"]


def verify_dataset(root: str, *, max_problems: int = 50,
                   storage_options: dict | None = None) -> list[str]:
    """All disagreements found (at most ``max_problems``), [] if the dataset is sound."""
    problems: list[str] = []

    def bad(msg: str) -> None:
        if len(problems) < max_problems:
            problems.append(msg)

    try:
        ds = open_dataset(root, storage_options)
    except ShardError as e:
        return [str(e)]
    manifest = ds.read_table("manifest").to_pylist()
    ledger = ds.read_table("ledger").to_pylist()
    by_shard: dict[str, list[str]] = defaultdict(list)
    for row in manifest:
        by_shard[row["shard"]].append(row["key"])
    seen: set[str] = set()
    indexed = set()
    for sh in ds.index.shards:
        name = sh.url.rsplit("/", 1)[-1].removesuffix(".tar")
        indexed.add(name)
        if not ds.storage.exists(sh.url):
            bad(f"{sh.url}: listed in index.json but missing")
            continue
        h = hashlib.sha256()
        size = 0
        with ds.storage.open_read(sh.url) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        if size != sh.filesize:
            bad(f"{sh.url}: size {size} != index {sh.filesize}")
        if h.hexdigest() != sh.sha256:
            bad(f"{sh.url}: sha256 differs from index.json")
        keys = []
        try:
            for s in ds.iter_shard(sh):
                keys.append(s["__key__"])
                if "json" not in s:
                    bad(f"{sh.url}: sample {s['__key__']} has no json")
                    continue
                try:
                    doc = json.loads(s["json"])
                except ValueError:
                    bad(f"{sh.url}: sample {s['__key__']} json does not parse")
                    continue
                if doc.get("key") != s["__key__"]:
                    bad(f"{sh.url}: json key {doc.get('key')!r} != member key {s['__key__']!r}")
        except ShardError as e:
            bad(str(e))
        if len(keys) != sh.nsamples:
            bad(f"{sh.url}: {len(keys)} samples, index says {sh.nsamples}")
        if keys != by_shard.get(name, []):
            bad(f"{sh.url}: keys/order differ from manifest.parquet")
        dup = seen.intersection(keys)
        if dup:
            bad(f"{sh.url}: keys also in another shard: {sorted(dup)[:5]}")
        seen.update(keys)
    extra = set(by_shard) - indexed
    if extra:
        bad(f"manifest rows point at shards not in index.json: {sorted(extra)[:5]}")
    ignored = sum(r["status"] == "ignored" for r in ledger)  # files that are not inputs
    ledger = [r for r in ledger if r["status"] != "ignored"]
    ok_keys = [r["key"] for r in ledger if r["status"] == "ok"]
    if Counter(ok_keys) != Counter(r["key"] for r in manifest):
        bad("ledger ok rows and manifest rows are not the same keys")
    status = Counter(r["status"] for r in ledger)
    unknown = set(status) - {"ok", "failed", "duplicate"}
    if unknown:
        bad(f"ledger has unknown statuses {sorted(unknown)}")
    if ds.storage.exists("stats.json"):
        stats = json.loads(ds.storage.read_bytes("stats.json"))
        if stats.get("inputs") != len(ledger):
            bad(f"stats.json inputs {stats.get('inputs')} != ledger rows {len(ledger)}")
        for k in ("ok", "failed", "duplicate"):
            if stats.get(k) != status.get(k, 0):
                bad(f"stats.json {k} {stats.get(k)} != ledger {status.get(k, 0)}")
        if stats.get("ignored", 0) != ignored:
            bad(f"stats.json ignored {stats.get('ignored', 0)} != ledger ignored rows {ignored}")
    if len(set(r["key"] for r in ledger)) != len(ledger):
        bad("ledger has more than one row for some input")
    return problems


def inspect_dataset(root: str, *, rows: int = 5, storage_options: dict | None = None
                    ) -> dict[str, Any]:
    """Counts per split and modality, sizes, failures by reason and a few sample rows."""
    ds = open_dataset(root, storage_options)
    manifest = ds.read_table("manifest")
    ledger = ds.read_table("ledger").to_pylist()
    m = manifest.to_pylist()
    per: Counter[tuple[str, str]] = Counter((r["split"], r["modality"]) for r in m)
    size: Counter[tuple[str, str]] = Counter()
    for r in m:
        size[(r["split"], r["modality"])] += r["size"]
    return {
        "name": ds.index.name,
        "shards": len(ds.index.shards),
        "fields": list(ds.index.fields),
        "sidecars": sorted(ds.sidecars()),
        "by_split_modality": [
            {"split": s, "modality": mod, "samples": n, "bytes": size[(s, mod)]}
            for (s, mod), n in sorted(per.items())],
        "status": dict(Counter(r["status"] for r in ledger)),
        "failures": dict(Counter(r["reason"] for r in ledger if r["status"] == "failed")
                         .most_common()),
        "failed_examples": [{"key": r["key"], "reason": r["reason"], "detail": r["detail"]}
                            for r in ledger if r["status"] == "failed"][:rows],
        "samples": [{k: r[k] for k in ("key", "split", "shard", "group", "modality", "fields",
                                       "size", "width", "height", "duration") if k in r}
                    for r in m[:rows]],
    }
