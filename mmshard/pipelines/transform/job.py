"""``mmshard tokenize``: add derived fields to a dataset as sidecar shards.

plan -> tasks -> commit, like ingest.  One task per base shard reads the shard once,
decodes each sample's medium once per modality and runs every requested field set on
it, writing one sidecar tar per field set: ``<dataset>/<field-set>/<shard>.tar`` with
the same keys in the same order as the base shard (a sample whose medium fails to
decode, or that has none, is left out of the sidecar and gets a ledger row).  Then each
field set gets ``index.json`` (with the tokenizer provenance), ``ledger.parquet`` and
``stats.json``.  Reruns skip shards already done; a changed config is refused.

>>> tokenize("out/", {"mel": {"n_mels": 80}}, executor=make_executor("local"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...dataset import Dataset, DatasetIndex, ShardInfo, open_dataset
from ...errors import ConfigError, DataError, JobError
from ...storage import Storage
from ...tario import HashingWriter, TarWriter
from ..commit import ParquetSink
from ..executor import Executor, TaskLost, make_executor
from .fields import FIELD_SETS, build_field_set, decode_medium

__all__ = ["TransformResult", "tokenize"]

log = logging.getLogger(__name__)


def _work(field_set: str) -> str:
    return f"_work/transform/{field_set}"


@dataclass(frozen=True, kw_only=True)
class TransformTask:
    root: str
    storage_options: dict
    shard: ShardInfo
    field_sets: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    device: str
    batch_size: int = 1


@dataclass(frozen=True)
class TransformResult:
    """Per field set: the contents of its stats.json."""

    root: str
    stats: dict[str, dict[str, Any]]



def _compute_chunk(fs: Any, media: list[Any]) -> list[Any]:
    """Outputs (dict of bytes), DataError, or None (no such medium) per sample."""
    out: list[Any] = [None] * len(media)
    ok = [i for i, m in enumerate(media) if m is not None and not isinstance(m, DataError)]
    for i, m in enumerate(media):
        if isinstance(m, DataError):
            out[i] = m
    if fs.compute_batch is not None and len(ok) > 1:
        try:
            for i, res in zip(ok, fs.compute_batch([media[i] for i in ok]), strict=True):
                out[i] = res
            return out
        except DataError:
            pass  # one bad item: redo one by one so the error lands on that sample
    for i in ok:
        try:
            out[i] = fs.compute(media[i])
        except DataError as e:
            out[i] = e
    return out


def _decode_all(sample: dict[str, Any], modalities: set[str]) -> dict[str, Any]:
    media: dict[str, Any] = {}
    for m in modalities:
        try:
            media[m] = decode_medium(sample, m)
        except DataError as e:
            media[m] = e
    return media


def run_transform_task(task: TransformTask) -> dict[str, int]:
    """Process one base shard for every requested field set (see module docstring).

    Streams the base shard ``batch_size`` samples at a time (1 on CPU: one sample in
    memory); each medium is decoded once for all field sets that need its modality, and
    field sets with a batched path (log-mel on a GPU) get the chunk in one call.
    """
    import contextlib

    from ...tario import iter_tar

    t0 = time.perf_counter()
    storage = Storage(task.root, task.storage_options)
    name = task.shard.url.rsplit("/", 1)[-1].removesuffix(".tar")
    built = {fs: build_field_set(fs, dict(opts), task.device) for fs, opts in task.field_sets}
    modalities = {fs.modality for fs in built.values()}
    ledgers: dict[str, list[dict[str, Any]]] = {n: [] for n in built}
    fails: dict[str, Counter[str]] = {n: Counter() for n in built}

    def flush(chunk: list[dict[str, Any]]) -> None:
        decoded = [_decode_all(s, modalities) for s in chunk]
        for n, fs in built.items():
            try:
                results = _compute_chunk(fs, [d[fs.modality] for d in decoded])
            except Exception as e:  # a tokenizer bug must not stop the job: counted
                log.warning("tokenize %s/%s failed", n, name, exc_info=True)
                results = [DataError("internal_error", f"{type(e).__name__}: {e}")] * len(chunk)
            for s, res in zip(chunk, results, strict=True):
                key = s["__key__"]
                if res is None:
                    ledgers[n].append(_row(key, name, "skipped", f"no_{fs.modality}", ""))
                elif isinstance(res, DataError):
                    fails[n][res.reason] += 1
                    ledgers[n].append(_row(key, name, "failed", res.reason, str(res)))
                else:
                    writers[n].write({"__key__": key, **res})
                    ledgers[n].append(_row(key, name, "ok", "", ""))

    with contextlib.ExitStack() as stack:
        hashers, writers = {}, {}
        for n in built:
            raw = stack.enter_context(storage.atomic_writer(f"{n}/{name}.tar"))
            hashers[n] = HashingWriter(raw)
            writers[n] = TarWriter(hashers[n])  # type: ignore[arg-type]
        chunk: list[dict[str, Any]] = []
        with storage.open_read(task.shard.url) as f:
            for s in iter_tar(f, url=storage.path(task.shard.url)):
                chunk.append(s)
                if len(chunk) >= task.batch_size:
                    flush(chunk)
                    chunk = []
        if chunk:
            flush(chunk)
        for w in writers.values():
            w.close()
    counts: dict[str, int] = {}
    for n in built:
        part = {"shard": name, "split": task.shard.split, "url": f"{name}.tar",
                "nsamples": writers[n].count, "filesize": hashers[n].n,
                "sha256": hashers[n].hexdigest(), "failures": dict(sorted(fails[n].items())),
                "ledger": ledgers[n], "seconds": round(time.perf_counter() - t0, 4)}
        storage.write_bytes(f"{_work(n)}/parts/{name}.json",
                            json.dumps(part, sort_keys=True).encode())
        counts[n] = writers[n].count
    return counts


def _row(key: str, shard: str, status: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": key, "shard": shard, "status": status, "reason": reason, "detail": detail}


def _ledger_schema():
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("shard", pa.string()), ("status", pa.string()),
                      ("reason", pa.string()), ("detail", pa.string())])


def tokenize(dataset: str, field_sets: Mapping[str, Mapping[str, Any]], *,
             executor: Executor | None = None, device: str = "cpu", overwrite: bool = False,
             progress: bool = False, storage_options: dict | None = None,
             batch_size: int | None = None) -> TransformResult:
    """Write sidecar field sets (``{"mel": {...options}, "units": {"codebook_path": p}}``)
    for every shard of ``dataset``.  Returns per-field-set stats.

    ``batch_size`` samples are decoded and tokenized together (default 1 on CPU, 16 on
    CUDA, where log-mel runs as one batched STFT); results do not depend on it.

    Raises ConfigError for unknown field sets or options (before any work), JobError when
    a field set already exists with another config (pass ``overwrite=True``).
    """
    if not field_sets:
        raise ConfigError(f"no field sets given; known: {', '.join(FIELD_SETS.names())}")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked but torch sees no CUDA device")
    batch_size = batch_size or (1 if device == "cpu" else 16)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    ds = open_dataset(dataset, storage_options)
    specs: dict[str, tuple[tuple[str, Any], ...]] = {}
    provenance: dict[str, dict[str, Any]] = {}
    outputs: dict[str, tuple[str, ...]] = {}
    for name, opts in field_sets.items():
        FIELD_SETS.get(dict(opts).get("kind", name))  # unknown names fail, listing known ones
        fs = build_field_set(name, opts, device)  # bad options fail before any work
        specs[name] = tuple(sorted(dict(opts).items()))
        provenance[name] = fs.provenance
        outputs[name] = fs.outputs
    storage = ds.storage
    for name in specs:
        _prepare(storage, name, {"options": dict(specs[name]), "provenance": provenance[name]},
                 overwrite)
    own = executor is None
    executor = executor or make_executor("ray")
    t0 = time.perf_counter()
    try:
        tasks = []
        for sh in ds.index.shards:
            shard = sh.url.rsplit("/", 1)[-1].removesuffix(".tar")
            todo = tuple((n, specs[n]) for n in specs
                         if not storage.exists(f"{_work(n)}/parts/{shard}.json"))
            if todo:
                tasks.append(TransformTask(root=storage.root, storage_options=storage
                                           .storage_options, shard=sh, field_sets=todo,
                                           device=device, batch_size=batch_size))
        from tqdm import tqdm

        with tqdm(total=len(ds.index.shards), initial=len(ds.index.shards) - len(tasks),
                  unit="shard", disable=not progress, desc="tokenize") as bar:
            for i, res in executor.imap_unordered(run_transform_task, tasks):
                if isinstance(res, TaskLost):
                    raise JobError(f"tokenize task for {tasks[i].shard.url} died on every "
                                   f"attempt: {res.cause}; rerun to resume")
                bar.update(1)
    finally:
        if own:
            executor.close()
    seconds = round(time.perf_counter() - t0, 3)
    for n in specs:  # leftovers of a worker killed mid-write (its task was retried)
        storage.remove_temporaries(n)
        storage.remove_temporaries(f"{_work(n)}/parts")
    stats = {n: _commit(ds, n, provenance[n], dict(specs[n]), outputs[n], seconds)
             for n in specs}
    return TransformResult(root=storage.root, stats=stats)


def _prepare(storage: Storage, name: str, job: dict[str, Any], overwrite: bool) -> None:
    rel = f"{_work(name)}/job.json"
    blob = json.dumps(job, sort_keys=True, default=str).encode()
    if overwrite:
        storage.remove_tree(name)
        storage.remove_tree(_work(name))
    elif storage.exists(rel) and storage.read_bytes(rel) != blob:
        raise JobError(f"field set {name!r} in {storage.root} was made with other options or "
                       "another tokenizer version; pass --overwrite to recompute it")
    storage.write_bytes(rel, blob)
    storage.remove_temporaries(name)


def _commit(ds: Dataset, name: str, provenance: dict[str, Any], options: dict[str, Any],
            outputs: tuple[str, ...], seconds: float) -> dict[str, Any]:
    storage = ds.storage
    status: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    shards, per_shard = [], []
    with ParquetSink(storage, f"{name}/ledger.parquet", _ledger_schema()) as ledger:
        for sh in ds.index.shards:  # one streaming pass over the part records
            shard = sh.url.rsplit("/", 1)[-1].removesuffix(".tar")
            p = json.loads(storage.read_bytes(f"{_work(name)}/parts/{shard}.json"))
            ledger.write(p["ledger"])
            status.update(r["status"] for r in p["ledger"])
            failures.update(p["failures"])
            shards.append(ShardInfo(url=p["url"], split=p["split"], nsamples=p["nsamples"],
                                    filesize=p["filesize"], sha256=p["sha256"],
                                    failed=sum(p["failures"].values()),
                                    failures=p["failures"]))
            per_shard.append({"shard": p["shard"], "samples": p["nsamples"],
                              "seconds": p["seconds"]})
    idx = DatasetIndex(name=f"{ds.index.name}/{name}", shards=tuple(shards), field_set=name,
                       fields=outputs if status.get("ok") else (),
                       config={"options": options}, provenance=provenance)
    storage.write_bytes(f"{name}/index.json", idx.to_json())
    stats = {"field_set": name, "samples": sum(s.nsamples for s in shards),
             "ok": status.get("ok", 0), "failed": status.get("failed", 0),
             "skipped": status.get("skipped", 0),
             "failures_by_reason": dict(sorted(failures.items())),
             "bytes": sum(s.filesize for s in shards), "seconds": seconds,
             "per_shard": per_shard}
    storage.write_bytes(f"{name}/stats.json", json.dumps(stats, indent=1, sort_keys=True)
                        .encode())
    return stats
