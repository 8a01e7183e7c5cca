"""Merge per-shard part records into the dataset's final files.

Consumes the ``_work/parts/*.json`` records of a finished plan (in plan order) plus the
ledger rows decided at plan time (duplicates); emits ``manifest.parquet``,
``ledger.parquet``, ``index.json`` and ``stats.json``, each written atomically.  The
output depends only on the part records, so a resumed job commits the same bytes as an
uninterrupted one (``stats.json`` alone holds timings).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..dataset import DatasetIndex, ShardInfo
from ..storage import Storage

__all__ = ["DatasetResult", "commit_dataset"]


def _schemas():
    import pyarrow as pa

    manifest = pa.schema([
        ("key", pa.string()), ("split", pa.string()), ("shard", pa.string()),
        ("group", pa.string()), ("modality", pa.string()), ("fields", pa.string()),
        ("size", pa.int64()), ("source_size", pa.int64()), ("sha256", pa.string()),
        ("source", pa.string()), ("label", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("sample_rate", pa.int32()),
        ("channels", pa.int16()), ("duration", pa.float64()), ("fps", pa.float64()),
        ("frames", pa.int64()),
    ])
    ledger = pa.schema([
        ("source", pa.string()), ("key", pa.string()), ("status", pa.string()),
        ("reason", pa.string()), ("detail", pa.string()), ("shard", pa.string()),
        ("split", pa.string()),
    ])
    return manifest, ledger


@dataclass(frozen=True)
class DatasetResult:
    """A finished job that wrote a dataset folder (ingest, clips): where, and stats.json."""

    out: str
    stats: dict[str, Any]

    @property
    def failure_rate(self) -> float:
        return float(self.stats["failure_rate"])


def _write_parquet(storage: Storage, rel: str, rows: Iterable[list[dict[str, Any]]],
                   schema) -> None:
    """Stream row batches into one Parquet file (bounded memory), committed atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.atomic_writer(rel) as f:
        with pq.ParquetWriter(f, schema, compression="zstd") as w:
            wrote = False
            for batch in rows:
                if batch:
                    w.write_table(pa.Table.from_pylist(batch, schema=schema))
                    wrote = True
            if not wrote:
                w.write_table(schema.empty_table())


def commit_dataset(storage: Storage, *, name: str, shard_order: list[str],
                   extra_ledger: list[dict[str, Any]], config: dict[str, Any],
                   run_stats: dict[str, Any],
                   shard_round: dict[str, int] | None = None,
                   latest_round: dict[str, int] | None = None) -> dict[str, Any]:
    """Write manifest, ledger, index and stats from the part records; return the stats.

    ``shard_round``/``latest_round`` describe ``--retry-failed`` rounds: a ledger row of
    a shard from round r is dropped when its key was retried in a later round, so every
    input keeps exactly one ledger row (its latest outcome).
    """
    from .ingest_task import part_name

    manifest_schema, ledger_schema = _schemas()
    shard_round = shard_round or {}
    latest_round = latest_round or {}

    def parts():
        for shard in shard_order:
            yield json.loads(storage.read_bytes(part_name(shard)))

    def current(p: dict[str, Any]) -> list[dict[str, Any]]:
        r = shard_round.get(p["shard"], 0)
        return [row for row in p["ledger"] if latest_round.get(row["key"], 0) <= r]

    _write_parquet(storage, "manifest.parquet", (p["manifest"] for p in parts()),
                   manifest_schema)
    _write_parquet(storage, "ledger.parquet",
                   [*(current(p) for p in parts()), extra_ledger], ledger_schema)

    shard_infos = []
    per_shard = []
    totals: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    splits: dict[str, dict[str, Any]] = {}
    groups: dict[str, set[str]] = {}
    fields: set[str] = set()
    modalities: Counter[str] = Counter()
    for p in parts():
        sp = splits.setdefault(p["split"], {"samples": 0, "shards": 0, "failed": 0, "groups": 0})
        for row in current(p):
            totals[row["status"]] += 1
            if row["status"] == "failed":
                failures[row["reason"]] += 1
                sp["failed"] += 1
        totals["bytes_in"] += p["stats"]["bytes_in"]
        totals["bytes_out"] += p["stats"]["bytes_out"]
        sp["samples"] += p["nsamples"]
        g = groups.setdefault(p["split"], set())
        for row in p["manifest"]:
            g.add(row["group"])
            fields.update(row["fields"].split(","))
            modalities[row["modality"]] += 1
        if p.get("url"):
            sp["shards"] += 1
            shard_infos.append(ShardInfo(url=p["url"], split=p["split"], nsamples=p["nsamples"],
                                         filesize=p["filesize"], sha256=p["sha256"],
                                         failed=p["planned"] - p["nsamples"],
                                         failures=p["failures"]))
        per_shard.append({"shard": p["shard"], "samples": p["nsamples"],
                          "failed": p["planned"] - p["nsamples"], "failures": p["failures"],
                          **p["stats"]})
    for s, g in groups.items():
        splits[s]["groups"] = len(g)
    for r in extra_ledger:
        totals[r["status"]] += 1
        if r["status"] == "failed":
            failures[r["reason"]] += 1
    index = DatasetIndex(name=name, shards=tuple(shard_infos), fields=tuple(sorted(fields)),
                         splits=dict(sorted(splits.items())), config=config)
    storage.write_bytes("index.json", index.to_json())
    inputs = totals["ok"] + totals["failed"] + totals["duplicate"]
    seconds = run_stats.get("seconds") or 0.0
    stats = {
        "name": name, "inputs": inputs, "ok": totals["ok"], "failed": totals["failed"],
        "duplicate": totals["duplicate"],
        "failure_rate": round(totals["failed"] / inputs, 6) if inputs else 0.0,
        "failures_by_reason": dict(sorted(failures.items())),
        "modalities": dict(sorted(modalities.items())),
        "splits": dict(sorted(splits.items())), "shards": len(shard_infos),
        "bytes_in": totals["bytes_in"], "bytes_out": totals["bytes_out"],
        **run_stats,
        "samples_per_s": round(totals["ok"] / seconds, 3) if seconds else None,
        "mb_per_s_in": round(totals["bytes_in"] / 1e6 / seconds, 3) if seconds else None,
        "per_shard": per_shard,
    }
    storage.write_bytes("stats.json", (json.dumps(stats, indent=1, sort_keys=True) + "\n"
                                       ).encode())
    return stats
