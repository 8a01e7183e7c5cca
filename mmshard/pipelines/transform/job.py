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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...dataset import Dataset, DatasetIndex, ShardInfo, open_dataset
from ...errors import ConfigError, DataError, JobError, ShardError
from ...storage import Storage
from ..commit import ParquetSink
from ..executor import Executor, make_executor
from ..lock import claim_output, release_output
from ..result import JobResult
from ..task import ShardOutput, lost_rows, part_name, run_tasks
from .fields import FIELD_SETS, FieldSet, build_field_set, decode_medium

__all__ = ["TokenizeConfig", "TransformResult", "tokenize"]

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
    keys: tuple[str, ...] = ()  # the shard's keys from the base manifest (for lost rows)


@dataclass(frozen=True)
class TransformResult(JobResult):
    """``out`` is the dataset; ``stats`` maps each field set to its stats.json."""

    @property
    def root(self) -> str:
        return self.out

    @property
    def failure_rate(self) -> float:
        rates = [s["failed"] / max(s["samples"] + s["failed"], 1) for s in self.stats.values()]
        return max(rates, default=0.0)



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


def _reads_in_place(built: Iterable[FieldSet]) -> bool:
    """Whether videos may come as FileRanges into the local tar: every video field set
    takes one (``FieldSet.file_range``); else each gets the bytes it was written for."""
    return all(fs.file_range for fs in built if fs.modality == "video")


def _read_shard(storage: Storage, task: TransformTask, flush: Callable[[list], None],
                in_place: bool = False) -> tuple[list[str], ShardError | None]:
    """Stream the base shard ``batch_size`` samples at a time into ``flush``; return the
    keys read and, for a corrupt or truncated shard, the error that stopped the read
    (the samples before it are still processed).  ``in_place``: videos of a local
    shard come as FileRanges into the tar, not as bytes (memory flat in video size)."""
    import contextlib

    from ...tario import iter_tar
    from ..task import base_samples

    seen: list[str] = []
    chunk: list[dict[str, Any]] = []
    error: ShardError | None = None
    try:
        with contextlib.ExitStack() as stack:
            if in_place:
                samples = base_samples(storage, task.shard.url, salvage=True)
            else:
                f = stack.enter_context(storage.open_read(task.shard.url))
                samples = iter_tar(f, url=storage.path(task.shard.url))
            for s in samples:
                seen.append(s["__key__"])
                chunk.append(s)
                if len(chunk) >= task.batch_size:
                    flush(chunk)
                    chunk = []
    except ShardError as e:
        error = e
        log.warning("tokenize: %s", e)
    if chunk:
        flush(chunk)
    return seen, error


def run_transform_task(task: TransformTask) -> dict[str, int]:
    """Process one base shard for every requested field set (see module docstring).

    Streams the base shard ``batch_size`` samples at a time (1 on CPU: one sample in
    memory); each medium is decoded once for all field sets that need its modality, and
    field sets with a batched path (log-mel on a GPU) get the chunk in one call.  A
    truncated base shard gives failed rows (``unreadable_shard``) for the samples the
    base manifest lists but the shard no longer yields.
    """
    import contextlib

    t0 = time.perf_counter()
    storage = Storage(task.root, task.storage_options)
    name = _shard_name(task.shard)
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
                    outs[n].write({"__key__": key, **res})
                    ledgers[n].append(_row(key, name, "ok", "", ""))

    with contextlib.ExitStack() as stack:
        outs = {n: stack.enter_context(ShardOutput(storage, f"{n}/{name}.tar", keep_empty=True,
                                                   url=f"{name}.tar")) for n in built}
        seen, error = _read_shard(storage, task, flush, in_place=_reads_in_place(built.values()))
    if error is not None:
        have = set(seen)
        lost = [k for k in task.keys if k not in have] or ["*"]
        for n in built:
            fails[n]["unreadable_shard"] += len(lost)
            ledgers[n] += [_row(k, name, "failed", "unreadable_shard", str(error)) for k in lost]
    for n in built:
        _write_part(storage, n, task, outs[n].info, outs[n].count, fails[n], ledgers[n],
                    time.perf_counter() - t0)
    return {n: outs[n].count for n in built}


def _shard_name(shard: ShardInfo) -> str:
    return shard.url.rsplit("/", 1)[-1].removesuffix(".tar")


def _write_part(storage: Storage, field_set: str, task: TransformTask, info: dict[str, Any],
                nsamples: int, fails: Counter[str], ledger: list[dict[str, Any]],
                seconds: float, lost: bool = False) -> None:
    name = _shard_name(task.shard)
    part = {"shard": name, "split": task.shard.split, "url": f"{name}.tar",
            "nsamples": nsamples, "filesize": info["filesize"], "sha256": info["sha256"],
            "base_sha256": task.shard.sha256, "failures": dict(sorted(fails.items())),
            "ledger": ledger, "seconds": round(seconds, 4), "lost": lost}
    storage.write_bytes(part_name(name, f"{_work(field_set)}/parts"),
                        json.dumps(part, sort_keys=True).encode())


def _write_lost_parts(task: TransformTask, cause: object) -> dict[str, int]:
    """A task that died on every attempt: per field set an empty sidecar tar and
    ``worker_lost`` rows for the shard's samples; a rerun recomputes the shard."""
    storage = Storage(task.root, task.storage_options)
    name = _shard_name(task.shard)
    for n, _ in task.field_sets:
        with ShardOutput(storage, f"{n}/{name}.tar", keep_empty=True, url=f"{name}.tar") as out:
            pass
        rows = [{"key": r["key"], "shard": name, "status": r["status"], "reason": r["reason"],
                 "detail": r["detail"]} for r in lost_rows([(k, k) for k in task.keys], name,
                                                           cause)]
        _write_part(storage, n, task, out.info, 0, Counter({"worker_lost": len(rows)}), rows,
                    0.0, lost=True)
    return {n: 0 for n, _ in task.field_sets}


def _row(key: str, shard: str, status: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": key, "shard": shard, "status": status, "reason": reason, "detail": detail}


def _ledger_schema():
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("shard", pa.string()), ("status", pa.string()),
                      ("reason", pa.string()), ("detail", pa.string())])


@dataclass(frozen=True, kw_only=True)
class TokenizeConfig:
    """One tokenize/embed job: which field sets with which options, on which device.

    ``field_sets`` maps an output name to its options (``{"mel": {"n_mels": 80}}``;
    ``"kind"`` names the registered field set when the output name is custom, as
    ``{"emb_txt": {"kind": "emb", "encoder": "hashing", "field": "txt"}}``).
    ``batch_size`` samples are decoded and tokenized together (None: 1 on CPU, 16 on
    CUDA, where log-mel runs as one batched STFT); results do not depend on it.

    >>> TokenizeConfig(field_sets={"mel": {"n_mels": 80}}).effective_batch_size
    1
    >>> TokenizeConfig(field_sets={"mel": {}}, batch_size=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mmshard.errors.ConfigError: batch_size must be an int >= 1 ... got 0
    """

    field_sets: Mapping[str, Mapping[str, Any]]
    device: str = "cpu"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.field_sets:
            raise ConfigError(f"no field sets given; known: {', '.join(FIELD_SETS.names())}")
        fs = {str(n): dict(o or {}) for n, o in dict(self.field_sets).items()}
        for n, o in fs.items():
            FIELD_SETS.get(o.get("kind", n))  # unknown names fail, listing known ones
        object.__setattr__(self, "field_sets", fs)
        if not isinstance(self.device, str) or (
                self.device != "cpu" and not self.device.startswith("cuda")):
            raise ConfigError(f"device must be cpu or cuda[:N], got {self.device!r}")
        b = self.batch_size
        if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b < 1):
            raise ConfigError(f"batch_size must be an int >= 1 (or None for the device "
                              f"default), got {b!r}")

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or (1 if self.device == "cpu" else 16)

    def to_dict(self) -> dict[str, Any]:
        return {"field_sets": {n: dict(o) for n, o in self.field_sets.items()},
                "device": self.device, "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizeConfig:
        from ..._registry import config_from_dict

        return config_from_dict(cls, dict(data))


def _manifest_keys(ds: Dataset) -> dict[str, list[str]]:
    """Base shard name -> its keys in the base manifest ({} without a manifest)."""
    try:
        table = ds.read_table("manifest")
    except Exception:  # noqa: BLE001 - a dataset without a manifest: keys unknown
        return {}
    out: dict[str, list[str]] = {}
    for r in table.select(["key", "shard"]).to_pylist():
        out.setdefault(r["shard"], []).append(r["key"])
    return out


def _done(storage: Storage, field_set: str, shard: str) -> bool:
    """A shard is done for a field set when its part record exists and is not lost."""
    rel = part_name(shard, f"{_work(field_set)}/parts")
    if not storage.exists(rel):
        return False
    return not json.loads(storage.read_bytes(rel)).get("lost")


def tokenize(dataset: str, config: TokenizeConfig | Mapping[str, Mapping[str, Any]], *,
             executor: Executor | None = None, overwrite: bool = False,
             progress: bool = False, storage_options: dict | None = None,
             device: str | None = None, batch_size: int | None = None) -> TransformResult:
    """Write the sidecar field sets of ``config`` for every shard of ``dataset``.

    ``config`` is a :class:`TokenizeConfig`, or (shorthand) its ``field_sets`` mapping
    with ``device``/``batch_size`` as keywords.  Returns per-field-set stats.  Raises
    ConfigError for unknown field sets or options (before any work), JobError when a
    field set already exists with another config (pass ``overwrite=True``).

    >>> tokenize("out/", TokenizeConfig(field_sets={"mel": {"n_mels": 80}}),
    ...          executor=make_executor("local"))                # doctest: +SKIP
    """
    if isinstance(config, TokenizeConfig):
        if device is not None or batch_size is not None:
            raise ConfigError("give device/batch_size in the TokenizeConfig, not as keywords")
        cfg = config
    else:
        cfg = TokenizeConfig(field_sets=config, device=device or "cpu", batch_size=batch_size)
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked but torch sees no CUDA device")
    batch = cfg.effective_batch_size
    ds = open_dataset(dataset, storage_options)
    specs: dict[str, tuple[tuple[str, Any], ...]] = {}
    provenance: dict[str, dict[str, Any]] = {}
    outputs: dict[str, tuple[str, ...]] = {}
    for name, opts in cfg.field_sets.items():
        fs = build_field_set(name, opts, cfg.device)  # bad options fail before any work
        specs[name] = tuple(sorted(dict(opts).items()))
        provenance[name] = fs.provenance
        outputs[name] = fs.outputs
    storage = ds.storage
    claim_output(storage, job="tokenize")  # one job per dataset; tasks check the lease
    try:
        for name in specs:
            _prepare(storage, name, {"options": dict(specs[name]), "provenance": provenance[name]},
                     overwrite)
        own = executor is None
        executor = executor or make_executor("ray")
        t0 = time.perf_counter()
        try:
            keys = _manifest_keys(ds)
            tasks = []
            for sh in ds.index.shards:
                shard = _shard_name(sh)
                todo = tuple((n, specs[n]) for n in specs if not _done(storage, n, shard))
                if todo:
                    tasks.append(TransformTask(root=storage.root, storage_options=storage
                                               .storage_options, shard=sh, field_sets=todo,
                                               device=cfg.device, batch_size=batch,
                                               keys=tuple(keys.get(shard, ()))))
            n_shards = len(ds.index.shards)
            for _ in run_tasks(executor, run_transform_task, tasks, on_lost=_write_lost_parts,
                               progress=progress, desc="tokenize", total=n_shards,
                               initial=n_shards - len(tasks)):
                pass
        finally:
            if own:
                executor.close()
        seconds = round(time.perf_counter() - t0, 3)
        for n in specs:  # leftovers of a worker killed mid-write (its task was retried)
            storage.remove_temporaries(n)
            storage.remove_temporaries(f"{_work(n)}/parts")
        stats = {n: _commit(ds, n, provenance[n], dict(specs[n]), outputs[n], seconds)
                 for n in specs}
        return TransformResult(out=storage.root, stats=stats)
    finally:
        release_output(storage)


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
            p = json.loads(storage.read_bytes(part_name(shard, f"{_work(name)}/parts")))
            ledger.write(p["ledger"])
            status.update(r["status"] for r in p["ledger"])
            failures.update(p["failures"])
            shards.append(ShardInfo(url=p["url"], split=p["split"], nsamples=p["nsamples"],
                                    filesize=p["filesize"], sha256=p["sha256"],
                                    failed=sum(p["failures"].values()),
                                    failures=p["failures"],
                                    base_sha256=p.get("base_sha256") or sh.sha256))
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
