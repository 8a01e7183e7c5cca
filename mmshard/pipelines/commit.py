"""Merge per-shard part records into the dataset's final files.

Consumes the ``_work/parts/*.json`` records of a finished plan (in plan order) plus the
ledger rows decided at plan time (duplicates); emits ``manifest.parquet``,
``ledger.parquet``, ``index.json`` and ``stats.json``, each written atomically.  The
output depends only on the part records, so a resumed job commits the same bytes as an
uninterrupted one (``stats.json`` alone holds timings).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..dataset import DatasetIndex, ShardInfo
from ..storage import Storage
from .result import JobResult
from .task import PARTS_DIR, part_name

__all__ = ["FINAL_FILES", "JOB_FILE", "DatasetResult", "ParquetSink", "commit_dataset",
           "prepare_output"]

JOB_FILE = "_work/job.json"
FINAL_FILES = ("index.json", "manifest.parquet", "ledger.parquet", "stats.json", "labels.json")


def _schemas():
    import pyarrow as pa

    manifest = pa.schema([
        ("key", pa.string()), ("split", pa.string()), ("shard", pa.string()),
        ("group", pa.string()), ("modality", pa.string()), ("fields", pa.string()),
        ("size", pa.int64()), ("source_size", pa.int64()), ("sha256", pa.string()),
        ("source", pa.string()), ("label", pa.string()), ("label_id", pa.int64()),
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
class DatasetResult(JobResult):
    """A finished job that wrote a dataset folder (ingest, clips): where, and stats.json."""


def prepare_output(storage: Storage, job: dict[str, Any], overwrite: bool, *,
                   mismatch: Callable[[dict[str, Any]], str]) -> None:
    """Claim a dataset folder for a job (ingest, clips) and record its fingerprint.

    First the output lock is taken (:func:`mmshard.pipelines.lock.claim_output`: one job
    per output; a second live one fails fast naming the holder), so all that follows runs
    under it.  ``overwrite`` removes everything the previous dataset owned (field sets,
    dedup, labels included); a folder made by this job with the same
    ``job["fingerprint"]`` is resumed; another fingerprint raises JobError with
    ``mismatch(old_job)`` as the message; a dataset the job did not start is refused.
    Stale ``.tmp-*`` files of a killed run are removed.
    """
    from ..errors import JobError
    from .lock import claim_output

    claim_output(storage, job=str(job.get("job") or "mmshard job"))
    if overwrite:
        remove_dataset(storage)
    elif storage.exists(JOB_FILE):
        old = json.loads(storage.read_bytes(JOB_FILE))
        if old.get("fingerprint") != job["fingerprint"]:
            raise JobError(mismatch(old))
    elif storage.exists("index.json") or any(
            not n.startswith(".tmp-") for n in storage.listdir("shards")):
        raise JobError(f"{storage.root} already holds a dataset that this job did not start; "
                       "pass --overwrite to replace it or choose another output")
    storage.write_bytes(JOB_FILE, json.dumps(job, indent=1, sort_keys=True).encode())
    remove_temporaries(storage)


def remove_dataset(storage: Storage) -> None:
    """Delete everything a dataset folder's jobs wrote (base shards, final files, field
    sets: every folder holding an index.json, dedup/, labels.json, _work/); other files
    are left alone.  Call only under the output lock."""
    from .lock import LOCK_FILE

    for rel in (*FINAL_FILES, "labels.json"):
        storage.remove(rel)
    for name in storage.listdir(""):
        if name in ("shards", "dedup") or (
                not name.startswith((".", "_")) and storage.exists(f"{name}/index.json")):
            storage.remove_tree(name)
    for name in storage.listdir("_work"):  # all job state but the lock this job holds
        rel = f"_work/{name}"
        if rel != LOCK_FILE:
            storage.remove_tree(rel)
            if storage.exists(rel):
                storage.remove(rel)


def remove_temporaries(storage: Storage) -> None:
    """Delete what a killed writer left (only safe while one job owns the folder)."""
    for folder in ("", "shards", "_work", PARTS_DIR):
        storage.remove_temporaries(folder)


class ParquetSink:
    """Row batches streamed into one Parquet file (bounded memory), committed atomically
    when the ``with`` block ends cleanly; an empty sink still writes the schema."""

    def __init__(self, storage: Storage, rel: str, schema) -> None:
        self._ctx = storage.atomic_writer(rel)
        self.schema = schema
        self._w = None
        self._wrote = False

    def __enter__(self) -> ParquetSink:
        import pyarrow.parquet as pq

        f = self._ctx.__enter__()
        self._w = pq.ParquetWriter(f, self.schema, compression="zstd")
        return self

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        if rows:
            self._w.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            self._wrote = True

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is None and not self._wrote:
                self._w.write_table(self.schema.empty_table())
            self._w.close()
        except BaseException as e:  # e.g. disk full on the footer: the temporary goes
            self._ctx.__exit__(*(exc if exc[0] is not None else (type(e), e, e.__traceback__)))
            raise
        self._ctx.__exit__(*exc)


class _DistinctCount:
    """How many distinct strings were seen, in 8 bytes per string however many rows (a
    10M-row dataset whose groups are its keys): a 64-bit BLAKE2b of each, so two distinct
    groups count as one only on a hash collision (about 3e-6 at 10M groups; the count is
    the same for every run)."""

    def __init__(self) -> None:
        self._parts: list[Any] = []
        self._base = self._pending = 0

    def add(self, values: Iterable[str | None]) -> None:
        import numpy as np

        digests = b"".join(hashlib.blake2b(
            b"s" + v.encode("utf-8") if isinstance(v, str) else repr(v).encode(),
            digest_size=8).digest() for v in values)
        self._parts.append(np.unique(np.frombuffer(digests, dtype=np.uint64)))
        self._pending += len(self._parts[-1])
        if self._pending > max(1 << 20, self._base):  # fold (amortised): repeats cost nothing
            self._parts = [np.unique(np.concatenate(self._parts))]
            self._base, self._pending = len(self._parts[0]), 0

    def count(self) -> int:
        import numpy as np

        return int(len(np.unique(np.concatenate(self._parts)))) if self._parts else 0


class _Tally:
    """What the commit gathers from the part records in its one pass."""

    def __init__(self) -> None:
        self.shard_infos: list[ShardInfo] = []
        self.per_shard: list[dict[str, Any]] = []
        self.totals: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.splits: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, _DistinctCount] = {}
        self.fields: set[str] = set()
        self.modalities: Counter[str] = Counter()
        self.layouts: dict[str, list[str]] = {}  # field set -> its shards (README: readers)

    def rows(self, rows: list[dict[str, Any]], sp: dict[str, Any] | None = None) -> None:
        for row in rows:
            self.totals[row["status"]] += 1
            if row["status"] == "failed":
                self.failures[row["reason"]] += 1
                if sp is not None:
                    sp["failed"] += 1

    def part(self, p: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        sp = self.splits.setdefault(p["split"],
                                    {"samples": 0, "shards": 0, "failed": 0, "groups": 0})
        self.rows(rows, sp)
        self.totals["bytes_in"] += p["stats"]["bytes_in"]
        self.totals["bytes_out"] += p["stats"]["bytes_out"]
        sp["samples"] += p["nsamples"]
        self.groups.setdefault(p["split"], _DistinctCount()).add(
            row["group"] for row in p["manifest"])
        for row in p["manifest"]:
            self.fields.update(row["fields"].split(","))
            self.modalities[row["modality"]] += 1
        if p.get("url"):
            sp["shards"] += 1
            lay = ",".join(sorted({f for r in p["manifest"] for f in r["fields"].split(",")}))
            self.layouts.setdefault(lay, []).append(p["url"])
            self.shard_infos.append(ShardInfo(
                url=p["url"], split=p["split"], nsamples=p["nsamples"],
                filesize=p["filesize"], sha256=p["sha256"],
                failed=p["planned"] - p["nsamples"], failures=p["failures"]))
        self.per_shard.append({"shard": p["shard"], "samples": p["nsamples"],
                               "failed": p["planned"] - p["nsamples"],
                               "failures": p["failures"], **p["stats"]})

    def stats(self, name: str, run_stats: dict[str, Any]) -> dict[str, Any]:
        totals = self.totals
        inputs = totals["ok"] + totals["failed"] + totals["duplicate"]
        seconds = run_stats.get("seconds") or 0.0
        return {
            "name": name, "inputs": inputs, "ok": totals["ok"], "failed": totals["failed"],
            "duplicate": totals["duplicate"], "ignored": totals["ignored"],
            "failure_rate": round(totals["failed"] / inputs, 6) if inputs else 0.0,
            "failures_by_reason": dict(sorted(self.failures.items())),
            "modalities": dict(sorted(self.modalities.items())),
            "splits": dict(sorted(self.splits.items())), "shards": len(self.shard_infos),
            "bytes_in": totals["bytes_in"], "bytes_out": totals["bytes_out"],
            **run_stats,
            "samples_per_s": round(totals["ok"] / seconds, 3) if seconds else None,
            "mb_per_s_in": round(totals["bytes_in"] / 1e6 / seconds, 3) if seconds else None,
            "per_shard": self.per_shard,
        }


def commit_dataset(storage: Storage, *, name: str, shard_order: list[str],
                   extra_ledger: list[dict[str, Any]], config: dict[str, Any],
                   run_stats: dict[str, Any],
                   shard_round: dict[str, int] | None = None,
                   latest_round: dict[str, int] | None = None,
                   labels: Any = None) -> dict[str, Any]:
    """Write manifest, ledger, index and stats from the part records; return the stats.

    ``labels`` (an ingest ``LabelVocab``) is written to ``labels.json`` and summarised in
    ``index.json`` (``provenance.labels``).  ``provenance.layouts`` maps each field set
    to its shards (every shard holds one field set: see ingest/layout.py).

    ``shard_round``/``latest_round`` describe ``--retry-failed`` rounds: a ledger row of
    a shard from round r is dropped when its key was retried in a later round, so every
    input keeps exactly one ledger row (its latest outcome).
    """
    manifest_schema, ledger_schema = _schemas()
    shard_round = shard_round or {}
    latest_round = latest_round or {}
    t = _Tally()
    with ParquetSink(storage, "manifest.parquet", manifest_schema) as man, \
            ParquetSink(storage, "ledger.parquet", ledger_schema) as led:
        for shard in shard_order:  # one pass over the part records: bounded memory
            p = json.loads(storage.read_bytes(part_name(shard)))
            man.write(p["manifest"])
            r = shard_round.get(p["shard"], 0)
            rows = [row for row in p["ledger"] if latest_round.get(row["key"], 0) <= r]
            led.write(rows)
            t.part(p, rows)
        led.write(extra_ledger)
    for s, g in t.groups.items():
        t.splits[s]["groups"] = g.count()
    t.rows(extra_ledger)
    provenance: dict[str, Any] = {"layouts": dict(sorted(t.layouts.items()))}
    if labels is not None:
        storage.write_bytes("labels.json", labels.to_json())
        provenance["labels"] = labels.summary()
    index = DatasetIndex(name=name, shards=tuple(t.shard_infos), fields=tuple(sorted(t.fields)),
                         splits=dict(sorted(t.splits.items())), config=config,
                         provenance=provenance)
    storage.write_bytes("index.json", index.to_json())
    stats = t.stats(name, run_stats)
    storage.write_bytes("stats.json", (json.dumps(stats, indent=1, sort_keys=True) + "\n"
                                       ).encode())
    from .lock import release_output

    release_output(storage)  # committed: the job is over, the folder is free again
    return stats
