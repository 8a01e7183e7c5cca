"""Re-read a dataset and check that index, shards, manifest, ledger and stats agree.

``verify_dataset(root)`` returns a list of problems (empty when all is well):
every indexed shard exists with the recorded size and sha256, holds exactly the
indexed number of samples, in the manifest's key order, each with a ``json`` whose key
matches; keys are unique across the dataset; every manifest row is an ``ok`` ledger row
and vice versa; and inputs = ok + failed + duplicate.  Every field set (sidecar folder)
must have been computed from the base shards as they are now (C2: each sidecar shard
entry's ``base_sha256`` equals the base shard's sha256; a stale sidecar is a problem
naming field set and shard; entries without it, from older mmshard, pass with a
warning), and its shards must exist with their recorded sha256 and hold only keys of
their base shard, in its order.  Tar member names are checked on every read.

>>> verify_dataset("out")                                   # doctest: +SKIP
[]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from .dataset import Dataset, open_dataset
from .errors import ShardError

__all__ = ["inspect_dataset", "verify_dataset"]

log = logging.getLogger(__name__)


def _sha256(ds: Dataset, rel: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with ds.storage.open_read(rel) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _verify_sidecars(ds: Dataset, by_shard: dict[str, list[str]],
                     bad: Callable[[str], None]) -> None:
    """The C2 provenance and the bytes of every field set (see the module doc)."""
    try:
        sidecars = ds.sidecars()
    except ShardError as e:
        bad(str(e))
        return
    base = {sh.url.rsplit("/", 1)[-1]: sh for sh in ds.index.shards}
    for fs, index in sorted(sidecars.items()):
        unrecorded = 0
        for s in index.shards:
            name = s.url.rsplit("/", 1)[-1]
            b = base.get(name)
            if b is None:
                bad(f"field set {fs!r}: shard {name} has no base shard in index.json")
                continue
            if s.base_sha256 is None:
                unrecorded += 1
            elif s.base_sha256 != b.sha256:
                bad(f"field set {fs!r}, shard {name}: stale sidecar: computed from a base "
                    f"shard with sha256 {s.base_sha256[:12]}..., the base shard is now "
                    f"{b.sha256[:12]}...; recompute it (mmshard tokenize ... --overwrite) or "
                    f"delete {fs}/")
                continue
            rel = f"{fs}/{name}"
            if not ds.storage.exists(rel):
                bad(f"field set {fs!r}: {rel} listed in {fs}/index.json but missing")
                continue
            if s.sha256 and _sha256(ds, rel)[0] != s.sha256:
                bad(f"field set {fs!r}: {rel} sha256 differs from {fs}/index.json")
            try:
                keys = [x["__key__"] for x in ds.iter_shard(b, fs)]
            except ShardError as e:
                bad(f"field set {fs!r}: {e}")
                continue
            order = {k: i for i, k in enumerate(by_shard.get(name.removesuffix(".tar"), []))}
            pos = [order.get(k, -1) for k in keys]
            if -1 in pos or pos != sorted(pos):
                bad(f"field set {fs!r}: {rel} holds keys not in its base shard or out of "
                    "base order")
        if unrecorded:
            log.warning("field set %r of %s records no base_sha256 for %d shard(s) (made by an "
                        "older mmshard): it cannot be checked for staleness", fs, ds.root,
                        unrecorded)


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
        digest, size = _sha256(ds, sh.url)
        if size != sh.filesize:
            bad(f"{sh.url}: size {size} != index {sh.filesize}")
        if digest != sh.sha256:
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
    _verify_sidecars(ds, by_shard, bad)
    extra = set(by_shard) - indexed
    if extra:
        bad(f"manifest rows point at shards not in index.json: {sorted(extra)[:5]}")
    ignored = sum(r["status"] == "ignored" for r in ledger)  # files that are not inputs
    ledger = [r for r in ledger if r["status"] != "ignored"]
    ok_keys = [r["key"] for r in ledger if r["status"] == "ok"]
    if ds.index.config.get("job") == "clips":
        # a clips dataset's ledger has one row per source video, its manifest one per clip
        # (key "<source key>_cNNNN"): every clip must come from an ok source video
        orphans = {r["key"] for r in manifest} - {
            r["key"] for r in manifest if r["key"].rsplit("_c", 1)[0] in set(ok_keys)}
        if orphans:
            bad(f"clips whose source video is not an ok ledger row: {sorted(orphans)[:5]}")
    elif Counter(ok_keys) != Counter(r["key"] for r in manifest):
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
