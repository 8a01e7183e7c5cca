"""``mmshard ingest``: raw images, audio, video and captions -> WebDataset shards.

plan -> tasks -> commit.  The driver plans in bounded memory (plan.py: manifests read in
record batches and sorted through spill files; each task reads its shard's inputs from
``_work/plan/``), lists the sources (sorted, stable keys, duplicate
keys refused before any work), optionally hashes content for exact dedup, assigns whole
groups to splits by a stable hash, cuts each split into shards by sample count and
source bytes, runs one task per shard on the executor (skipping shards a previous run
committed), and merges the shards' part records into ``manifest.parquet``,
``ledger.parquet``, ``index.json`` and ``stats.json``.

>>> from mmshard import IngestConfig, ingest                         # doctest: +SKIP
>>> result = ingest(["photos/"], "out/", IngestConfig(max_samples=500),
...                 executor=make_executor("local"))                  # doctest: +SKIP
>>> result.stats["ok"], result.stats["failed"]                        # doctest: +SKIP
(998, 2)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._registry import config_from_dict, config_to_dict
from ...errors import ConfigError, DataError, JobError
from ...media.audio import AudioOptions
from ...media.image import ImageOptions
from ...media.video import VideoOptions
from ...samplers.splits import SplitSpec, assign_split, validate_split_spec
from ...storage import Storage, is_url, open_input
from ..commit import JOB_FILE, DatasetResult, commit_dataset, prepare_output, remove_temporaries
from ..executor import Executor, make_executor
from ..lock import release_output
from ..result import FailureRateError, check_failure_rate
from ..task import PARTS_DIR, run_tasks
from .download import PERMANENT_REASONS, DownloadOptions
from .layout import layout_of
from .plan import BATCH_ROWS, RUN_ROWS, PlannedShard, StreamedPlan, cut_shards, plan_inputs
from .sources import InputItem, SourceOptions
from .task import (
    MediaOptions,
    ShardResult,
    ShardTask,
    run_shard_task,
    write_items,
    write_lost_part,
)

__all__ = ["FailureRateError", "IngestConfig", "IngestResult", "PlanOptions", "PlannedShard",
           "ingest", "plan_shards"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Everything that decides the bytes of the output (execution choices excluded).

    max_samples / max_bytes: a shard closes at whichever comes first (max_bytes counts
    source bytes at plan time, so shard assignment is known before any decoding).
    splits: ``(("train", 0.9), ("val", 0.1))``; whole groups per split by stable hash.
    max_failure_rate: above it the job still commits, then raises FailureRateError.
    """

    sources: SourceOptions = field(default_factory=SourceOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    audio: AudioOptions = field(default_factory=AudioOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    max_samples: int = 1000
    max_bytes: int | None = 1 << 30
    splits: SplitSpec = (("train", 1.0),)
    split_seed: int = 0
    dedup: bool = False
    max_file_bytes: int = 4 << 30
    max_failure_rate: float = 0.5
    name: str = ""

    def __post_init__(self) -> None:
        for name in ("max_samples", "max_bytes", "max_file_bytes", "split_seed"):
            v = getattr(self, name)
            if (v is not None or name != "max_bytes") and (
                    isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        if isinstance(self.max_failure_rate, bool) or not isinstance(
                self.max_failure_rate, (int, float)):
            raise ConfigError(f"max_failure_rate must be a number in [0, 1], got "
                              f"{self.max_failure_rate!r}")
        if self.max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ConfigError(f"max_bytes must be >= 1 or None, got {self.max_bytes}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if self.max_file_bytes < 1:
            raise ConfigError("max_file_bytes must be >= 1")
        object.__setattr__(self, "splits", validate_split_spec(
            tuple((str(n), float(w)) for n, w in self.splits)))

    def to_dict(self) -> dict[str, Any]:
        d = config_to_dict(self)
        d["splits"] = [list(s) for s in self.splits]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestConfig:
        data = dict(data)
        if "splits" in data:
            data["splits"] = tuple(tuple(s) for s in data["splits"])
        return config_from_dict(cls, data)


IngestResult = DatasetResult  # what a finished job returns: out folder + stats.json



def plan_shards(items: Sequence[InputItem], config: IngestConfig) -> list[PlannedShard]:
    """Assign splits by group hash and cut each split into shards of one layout each
    (the field set its samples will have, see layout.py), in key order within a layout.
    (In memory; :func:`.plan.plan_inputs` gives the same shards in bounded memory.)"""
    by_split: dict[str, list[InputItem]] = {name: [] for name, _ in config.splits}
    for it in items:
        by_split[assign_split(it.group or it.key, config.splits, config.split_seed)].append(it)
    laid = ((split, lay, it) for split, its in by_split.items()
            for (lay, _), it in sorted(((layout_of(it, config.image, config.audio), it.key), it)
                                       for it in its))
    return list(cut_shards(laid, config.max_samples, config.max_bytes))


def _hash_chunk(items: tuple[InputItem, ...]) -> list[tuple[str, str | None]]:
    out = []
    for it in items:
        if it.error:
            out.append((it.key, None))
            continue
        h = hashlib.sha256()
        try:
            for fld, uri in it.media:
                one = hashlib.sha256()
                with open_input(uri) as f:  # streamed: a 4 GB video is not read into memory
                    while chunk := f.read(1 << 20):
                        one.update(chunk)
                h.update(fld.encode() + b"\0" + one.digest())
            out.append((it.key, h.hexdigest()))
        except (OSError, DataError):  # DataError: swapped for a FIFO etc. since planning
            out.append((it.key, None))  # the shard task reports why, as a ledger row
    return out


def _dedup(items: list[InputItem], config: IngestConfig, executor: Executor
           ) -> tuple[list[InputItem], list[dict[str, Any]]]:
    chunks = [tuple(items[i:i + 256]) for i in range(0, len(items), 256)]
    hashes: dict[str, str | None] = {}
    for _, res in executor.imap_unordered(_hash_chunk, chunks):
        hashes.update(res)
    first: dict[str, str] = {}
    kept, dup_rows = [], []
    for it in items:  # sorted by key: the first key of a content wins
        h = hashes.get(it.key)
        if h is not None and h in first:
            split = assign_split(it.group or it.key, config.splits, config.split_seed)
            dup_rows.append({"source": it.source, "key": it.key, "status": "duplicate",
                             "reason": "duplicate", "detail": f"same content as {first[h]}",
                             "shard": None, "split": split})
            continue
        if h is not None:
            first[h] = it.key
        kept.append(it)
    return kept, dup_rows


def _fingerprint(config: IngestConfig, sources: Sequence[str]) -> dict[str, Any]:
    # one job whether a source is named by a relative or an absolute path
    norm = [s if is_url(s) else os.path.abspath(s.removeprefix("file://")) for s in sources]
    doc = {"config": config.to_dict(), "sources": norm}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return {**doc, "fingerprint": digest}


def _mismatch(job: dict[str, Any], storage: Storage) -> Callable[[dict[str, Any]], str]:
    def message(old: dict[str, Any]) -> str:
        changed = _diff(old.get("config", {}), job["config"])
        if old.get("sources") != job["sources"]:
            changed.append("sources")
        return (f"{storage.root} was made with a different config (changed: "
                f"{', '.join(changed) or 'unknown'}); rerun with the original arguments to "
                "resume, pass --overwrite to start clean, or choose another --out")
    return message


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}")
    return out


def ingest(sources: Sequence[str], out: str, config: IngestConfig | None = None, *,
           executor: Executor | None = None, progress: bool = False, overwrite: bool = False,
           retry_failed: bool = False, storage_options: dict | None = None,
           download: DownloadOptions | None = None, plan: PlanOptions | None = None
           ) -> IngestResult:
    """Turn ``sources`` into a dataset folder at ``out`` (local path or fsspec URL).

    Reruns with the same arguments resume: committed shards are skipped and the final
    files equal an uninterrupted run's.  ``retry_failed=True`` re-attempts only the
    inputs the ledger marks failed, in new shards (not the permanent download reasons:
    404, opted out, too large ...).  ``download`` says how ``http(s)`` inputs are
    fetched (limits, timeouts, retries, opt-out; see :mod:`.download`).  ``plan`` bounds
    the planner's memory (:class:`PlanOptions`; a 10M-row manifest is planned through
    spill files, see :mod:`.plan`).  ``executor``
    defaults to an embedded local Ray cluster.  Raises SourceError/ConfigError before
    any work on bad sources or arguments, JobError when the output cannot be written or
    was made with another config, and FailureRateError (after committing) when too many
    inputs failed.

    >>> r = ingest(["data/"], "out", IngestConfig(splits=(("train", .9), ("val", .1))),
    ...            executor=make_executor("local"))              # doctest: +SKIP
    """
    config = config or IngestConfig()
    if overwrite and retry_failed:
        raise ConfigError("--retry-failed and --overwrite exclude each other")
    t0 = time.perf_counter()
    storage = Storage(out, storage_options)
    plan_opts = plan or PlanOptions()
    if plan_opts.folder:
        os.makedirs(plan_opts.folder, exist_ok=True)
    own_executor = executor is None
    executor = executor or make_executor("ray")  # a Ray cluster starts while we plan
    try:
        with tempfile.TemporaryDirectory(prefix="mmshard-plan-", dir=plan_opts.folder) as work:
            # every SourceError (bad manifest, duplicate keys ...) is raised here, before any
            # write to the output; the inputs are spilled to ``work``, never all in memory
            planned = plan_inputs(list(sources), config, work, batch_rows=plan_opts.batch_rows,
                                  run_rows=plan_opts.run_rows)
            job = _fingerprint(config, sources)
            if retry_failed and not (storage.exists(JOB_FILE) and storage.exists("ledger.parquet")):
                raise JobError(f"nothing to retry in {storage.root}: no finished ingest there; "
                               "run without --retry-failed first")
            prepare_output(storage, job, overwrite, mismatch=_mismatch(job, storage))
            try:
                names, tasks, rounds, dup_rows = _plan_tasks(planned, storage, config, executor,
                                                             retry_failed, download)
                planned.close()  # the spill is read: nothing left in ``work`` while tasks run
                _run(tasks, executor, progress, total_shards=len(names))
                remove_temporaries(storage)  # what a worker killed mid-write left behind
                name = config.name or os.path.basename(storage.root.rstrip("/")) or "dataset"
                run_stats = {"seconds": round(time.perf_counter() - t0, 3),
                             "executor": type(executor).__name__, "workers": executor.workers,
                             "resumed_shards": len(names) - len(tasks),
                             "retry_rounds": len(rounds), "ignored_files": len(planned.ignored),
                             "download": _download_record(download)}
                shard_round = {s.name: r + 1 for r, rnd in enumerate(rounds) for s in rnd}
                latest_round = {it.key: r + 1 for r, rnd in enumerate(rounds) for s in rnd
                                for it in s.items}
                stats = commit_dataset(storage, name=name, shard_order=names,
                                       extra_ledger=dup_rows + _ignored_rows(planned.ignored),
                                       config=job, run_stats=run_stats, shard_round=shard_round,
                                       latest_round=latest_round, labels=planned.labels)
                storage.remove_tree(PLAN_DIR)  # the tasks' inputs: committed, no longer needed
            finally:
                release_output(storage)  # also after an error: the next run resumes
    finally:
        if own_executor:
            executor.close()
    result = IngestResult(out=storage.root, stats=stats)
    check_failure_rate(result, config.max_failure_rate, storage.path("ledger.parquet"))
    return result


PLAN_DIR = "_work/plan"  # one file of planned inputs per shard still to build


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """How the planner bounds its memory (execution choices: the output is the same for
    any values).  ``folder``: where it spills (default: the system temporary folder);
    ``batch_rows``: manifest rows read at a time; ``run_rows``: inputs held per sort."""

    folder: str | None = None
    batch_rows: int = BATCH_ROWS
    run_rows: int = RUN_ROWS

    def __post_init__(self) -> None:
        for name in ("batch_rows", "run_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")


def _planned(plan: StreamedPlan, config: IngestConfig, executor: Executor
             ) -> tuple[Iterable[PlannedShard], list[dict[str, Any]]]:
    """The shards to build, plus the ``duplicate`` ledger rows of ``--dedup`` (which
    hashes every input's bytes and keeps the inputs in memory)."""
    if not config.dedup:
        return plan.shards(), []
    items = sorted((it for _, _, it in plan.items()), key=lambda it: it.key)
    items, dup_rows = _dedup(items, config, executor)
    return plan_shards(items, config), dup_rows


def _plan_tasks(plan: StreamedPlan, storage: Storage, config: IngestConfig,
                executor: Executor, retry_failed: bool, download: DownloadOptions | None
                ) -> tuple[list[str], list[ShardTask], list[list[PlannedShard]],
                           list[dict[str, Any]]]:
    """(every shard name in plan order, the tasks of those not yet committed, the retry
    rounds, duplicate rows).  Each task's inputs go to a file under ``PLAN_DIR``."""
    shards, dup_rows = _planned(plan, config, executor)
    doc = json.loads(storage.read_bytes(RETRIES_FILE)) if storage.exists(RETRIES_FILE) \
        else {"rounds": []}
    failed = _failed_keys(storage) if retry_failed else None
    needed = {k for r in doc["rounds"] for s in r for k in s["keys"]} | (failed or set())
    done = set(n.removesuffix(".json") for n in storage.listdir(PARTS_DIR))
    media = MediaOptions(image=config.image, audio=config.audio, video=config.video,
                         max_file_bytes=config.max_file_bytes)
    names: list[str] = []
    tasks: list[ShardTask] = []
    by_key: dict[str, InputItem] = {}  # the inputs a retry round may name

    def add(s: PlannedShard) -> None:
        names.append(s.name)
        if s.name not in done:
            ref = f"{PLAN_DIR}/{s.name}.jsonl.gz"
            write_items(storage, ref, s.items)
            tasks.append(ShardTask(out=storage.root, storage_options=storage.storage_options,
                                   shard=s.name, split=s.split, items_ref=ref, media=media,
                                   download=download))

    for s in shards:
        if needed:
            by_key.update((it.key, it) for it in s.items if it.key in needed)
        add(s)
    rounds = _retry_rounds(storage, doc, by_key, list(names), config, failed)
    for rnd in rounds:
        for s in rnd:
            add(s)
    return names, tasks, rounds, dup_rows


def _download_record(download: DownloadOptions | None) -> dict[str, Any]:
    """What stats.json says about URL inputs' politeness (opt-out honoured or not)."""
    d = download or DownloadOptions()
    return {"opt_out_check": d.opt_out_check, "user_agent": d.user_agent,
            "per_host": d.per_host, "host_rate": d.host_rate}


RETRIES_FILE = "_work/retries.json"


def _ignored_rows(paths: Sequence[str]) -> list[dict[str, Any]]:
    """One ``ignored`` ledger row per file that is not an input (not counted in inputs)."""
    detail = ("neither image, audio nor video by extension or content, or a sidecar "
              "without a media file of the same stem")
    return [{"source": p, "key": None, "status": "ignored", "reason": "not_media",
             "detail": detail, "shard": None, "split": None} for p in paths]



def _failed_keys(storage: Storage) -> set[str]:
    """Keys the ledger marks failed for a reason worth retrying (a 404 stays a 404)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    keys: set[str] = set()
    with storage.open_read("ledger.parquet") as f:
        for b in pq.ParquetFile(f).iter_batches(columns=["key", "status", "reason"]):
            retry = pc.and_(pc.equal(b.column("status"), "failed"),
                            pc.invert(pc.is_in(b.column("reason"),
                                               value_set=_pa_strings(PERMANENT_REASONS))))
            keys.update(k for k in b.column("key").filter(pc.fill_null(retry, False))
                        .to_pylist() if k is not None)
    return keys


def _pa_strings(values: Iterable[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


def _retry_rounds(storage: Storage, doc: dict[str, Any], by_key: dict[str, InputItem],
                  base: list[str], config: IngestConfig, failed_keys: set[str] | None
                  ) -> list[list[PlannedShard]]:
    """The ``--retry-failed`` rounds so far (``doc``: retries.json), plus a new one of
    ``failed_keys`` when given (``by_key``: the planned inputs those rounds name).

    A round's plan (shard names and keys) is saved before its tasks run, so a crashed
    retry resumes with the same plan.  New shards continue each split's numbering.
    """
    rounds = [[PlannedShard(s["name"], s["split"], tuple(by_key[k] for k in s["keys"]))
               for s in r] for r in doc["rounds"]]
    if failed_keys is None:
        return rounds
    failed = sorted(k for k in failed_keys if k in by_key)
    if not failed:
        return rounds
    used: dict[str, int] = {}
    for name in base + [s.name for r in rounds for s in r]:
        split, _, n = name.rpartition("-")
        used[split] = max(used.get(split, -1), int(n))
    planned = plan_shards([by_key[k] for k in failed], config)
    renamed = []
    for s in planned:
        split, _, n = s.name.rpartition("-")
        renamed.append(PlannedShard(f"{split}-{used.get(split, -1) + 1 + int(n):06d}", split,
                                    s.items))
    rounds.append(renamed)
    doc["rounds"].append([{"name": s.name, "split": s.split, "keys": [i.key for i in s.items]}
                          for s in renamed])
    storage.write_bytes(RETRIES_FILE, json.dumps(doc, sort_keys=True).encode())
    return rounds


def _run(tasks: list[ShardTask], executor: Executor, progress: bool, total_shards: int) -> None:
    t0 = time.perf_counter()
    seen = {"ok": 0, "failed": 0, "bytes": 0}
    reasons: Counter[str] = Counter()
    throttled: Counter[str] = Counter()

    def postfix(res: ShardResult) -> dict[str, Any]:
        seen["ok"] += res.ok
        seen["failed"] += res.failed
        seen["bytes"] += res.bytes_in
        reasons.update(res.failures)
        throttled.update(res.download.get("throttled_s", {}))
        dt = max(time.perf_counter() - t0, 1e-9)
        shown = {"samples_s": f"{seen['ok'] / dt:.1f}",
                 "MB_s": f"{seen['bytes'] / 1e6 / dt:.1f}", "failed": seen["failed"]}
        if reasons:
            shown["why"] = ",".join(f"{k}:{v}" for k, v in reasons.most_common(3))
        if throttled:  # URL ingest: the hosts whose limits made us wait, most first
            shown["throttled"] = ",".join(f"{h}:{s:.0f}s" for h, s in throttled.most_common(2))
        return shown

    for _ in run_tasks(executor, run_shard_task, tasks, on_lost=write_lost_part,
                       progress=progress, desc="ingest", total=total_shards,
                       initial=total_shards - len(tasks), postfix=postfix):
        pass
