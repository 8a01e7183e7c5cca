"""The one shard-task skeleton every batch job uses (ingest, clips, tokenize/embed, mine).

A shard task turns its inputs into one committed output and a *part record*:

1. :class:`ShardOutput` writes the shard's tar through ``Storage.atomic_writer`` while
   hashing it (``filesize``/``sha256`` for the index); a tar that ends with no sample is
   discarded, never committed.
2. :class:`PartRecord` gathers the shard's per-item outcome: one ledger row per input
   (``ok`` or ``failed`` with a reason), manifest rows, failure counts.
   :meth:`PartRecord.attempt` runs one item's work and turns a ``DataError`` (or, for a
   decoder bug, any exception: ``internal_error``, logged) into a failed row, so one bad
   input never stops the shard.
3. :meth:`PartRecord.commit` writes ``<parts_dir>/<shard>.json`` *after* the tar was
   renamed into place: its presence means "this shard is done" and a rerun skips it.

Lost tasks (a Ray worker killed on every allowed attempt) are handled by
:func:`run_tasks`, the one loop over an executor's results: it hands a
:class:`~mmshard.pipelines.executor.TaskLost` to the job's ``on_lost`` callback, which
records :func:`lost_rows` (reason ``worker_lost``), so the job completes and accounts for
every input::

    >>> rows = lost_rows([("a.jpg", "a")], "train-000000", "killed", split="train")
    >>> rows[0]["status"], rows[0]["reason"]
    ('failed', 'worker_lost')
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ..errors import DataError, ShardError
from ..storage import Storage
from ..tario import HashingWriter, TarWriter, index_tar, iter_tar
from .executor import Executor, TaskLost

__all__ = ["PARTS_DIR", "PartRecord", "ShardOutput", "av_errors", "base_samples", "ledger_row",
           "lost_rows", "part_name", "run_tasks"]

log = logging.getLogger(__name__)
PARTS_DIR = "_work/parts"
T = TypeVar("T")
R = TypeVar("R")


def base_samples(storage: Storage, url: str, *, salvage: bool = False
                 ) -> Iterator[dict[str, Any]]:
    """The samples of a base shard in tar order, ``{"__key__", "__url__", field: ...}``.

    On local storage a video member stays in the tar: it is a
    :class:`~mmshard.media.video_reader.FileRange` the decoders read in place, so a task's
    memory does not grow with the size of a video; the small members are read as bytes.
    Remote shards are streamed (:func:`~mmshard.tario.iter_tar`, every member as bytes).
    A damaged local tar raises ShardError from its index, or, with ``salvage=True``, is
    streamed instead so the samples before the damage are still yielded (then the error).
    """
    from ..keys import VIDEO_EXTS
    from ..media.video_reader import FileRange

    if storage.local:
        path = storage.path(url)
        exts = set(VIDEO_EXTS.values())
        with open(path, "rb") as f:
            try:
                keys, members = index_tar(f, path)
            except ShardError:
                if not salvage:
                    raise
            else:
                for key, fields in zip(keys, members, strict=True):
                    sample: dict[str, Any] = {"__key__": key, "__url__": path}
                    for fld, (offset, size) in fields.items():
                        if fld.rsplit(".", 1)[-1] in exts:
                            sample[fld] = FileRange(path, offset, size)
                        else:
                            f.seek(offset)
                            sample[fld] = f.read(size)
                    yield sample
                return
    with storage.open_read(url) as f:
        yield from iter_tar(f, url=storage.path(url))


def part_name(shard: str, parts_dir: str = PARTS_DIR) -> str:
    """Where a shard's part record lives.

    >>> part_name("train-000003")
    '_work/parts/train-000003.json'
    """
    return f"{parts_dir}/{shard}.json"


def av_errors() -> tuple[type[BaseException], ...]:
    """The exceptions PyAV/FFmpeg raise on bad media (decode and encode paths); one list,
    kept beside the video reader."""
    from ..media.video_reader import _av_errors

    return _av_errors()


def ledger_row(source: str, key: str, status: str, reason: str = "", detail: str = "",
               shard: str | None = None, split: str | None = None) -> dict[str, Any]:
    """One dataset-ledger row (the ``ledger.parquet`` schema of ingest and clips)."""
    return {"source": source, "key": key, "status": status, "reason": reason,
            "detail": detail, "shard": shard, "split": split}


def lost_rows(inputs: Iterable[tuple[str, str]], shard: str, cause: object, *,
              split: str | None = None) -> list[dict[str, Any]]:
    """Failed ``worker_lost`` ledger rows for ``(source, key)`` inputs of a lost task."""
    detail = f"task for {shard} died on every attempt: {cause}"
    return [ledger_row(src, key, "failed", "worker_lost", detail, None, split)
            for src, key in inputs]


class _AbortEmpty(Exception):
    """Raised inside the atomic writer to discard a tar with no samples."""


class ShardOutput:
    """A shard tar written atomically and hashed as it streams.

    Use as a context manager; ``write(sample)`` adds one sample dict.  On a clean exit
    with at least one sample the tar is renamed into place and :attr:`info` holds
    ``url``/``filesize``/``sha256``; with none it is discarded (``info == {}``) unless
    ``keep_empty``; on an exception nothing is left behind.

    >>> import tempfile
    >>> st = Storage(tempfile.mkdtemp())
    >>> with ShardOutput(st, "shards/a.tar") as out:
    ...     out.write({"__key__": "k", "txt": "hi"})
    >>> out.info["url"], out.count
    ('shards/a.tar', 1)
    """

    def __init__(self, storage: Storage, rel: str, *, keep_empty: bool = False,
                 url: str | None = None) -> None:
        self.storage, self.rel, self.keep_empty = storage, rel, keep_empty
        self.url = url or rel
        self.info: dict[str, Any] = {}
        self.count = 0
        self._ctx: Any = None

    def __enter__(self) -> ShardOutput:
        from .lock import lease_token

        self._lease = lease_token(self.storage)  # the job that owns the output now
        self._ctx = self.storage.atomic_writer(self.rel)
        raw = self._ctx.__enter__()
        self._hw = HashingWriter(raw)
        self._tar = TarWriter(self._hw)  # type: ignore[arg-type]
        return self

    def write(self, sample: dict[str, Any]) -> None:
        self._tar.write(sample)
        self.count = self._tar.count

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        from .lock import check_lease

        if et is not None:
            self._tar.abort()
            return bool(self._ctx.__exit__(et, ev, tb))
        try:
            self._tar.close()
            # never commit for a driver that is gone; checked for an empty tar too, so the
            # task stops before its part record (written after this block) as well
            check_lease(self.storage, self._lease)
            if self._tar.count == 0 and not self.keep_empty:
                raise _AbortEmpty
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)  # removes the temporary
            if isinstance(e, _AbortEmpty):
                return False
            raise
        self._ctx.__exit__(None, None, None)  # the rename: the shard appears
        self.info = {"url": self.url, "filesize": self._hw.n, "sha256": self._hw.hexdigest()}
        return False


class PartRecord:
    """The outcome of one shard task: ledger rows, manifest rows, failure counts.

    >>> p = PartRecord("train-000000", "train", "ingest")
    >>> p.attempt("a.jpg", "a", lambda: 1 / 0) is None
    True
    >>> p.failures
    Counter({'internal_error': 1})
    """

    def __init__(self, shard: str, split: str | None, job: str) -> None:
        self.shard, self.split, self.job = shard, split, job
        self.ledger: list[dict[str, Any]] = []
        self.manifest: list[dict[str, Any]] = []
        self.failures: Counter[str] = Counter()
        self.bytes_in = 0

    def fail(self, source: str, key: str, reason: str, detail: str) -> None:
        self.failures[reason] += 1
        self.ledger.append(ledger_row(source, key, "failed", reason, detail, None, self.split))

    def ok(self, source: str, key: str, rows: Sequence[dict[str, Any]] = (), *,
           reason: str = "", detail: str = "", committed: bool = True) -> None:
        """An input that succeeded; ``rows`` (its manifest rows) get this shard's name."""
        for r in rows:
            r["shard"] = self.shard
        self.manifest.extend(rows)
        self.ledger.append(ledger_row(source, key, "ok", reason, detail,
                                      self.shard if committed else None, self.split))

    def attempt(self, source: str, key: str, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``, or None after recording a failed row for ``key``."""
        try:
            return fn(*args)
        except DataError as e:
            self.fail(source, key, e.reason, str(e).split(": ", 1)[-1])
            log.info("%s %s: %s failed: %s", self.job, self.shard, key, e)
        except Exception as e:  # a decoder bug must not stop the job: counted, logged
            self.fail(source, key, "internal_error", f"{type(e).__name__}: {e}")
            log.warning("%s %s: %s internal error", self.job, self.shard, key, exc_info=True)
        return None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def to_dict(self, info: dict[str, Any], *, planned: int, seconds: float
                ) -> dict[str, Any]:
        return {"shard": self.shard, "split": self.split, "planned": planned,
                "nsamples": len(self.manifest), **info,
                "failures": dict(sorted(self.failures.items())), "ledger": self.ledger,
                "manifest": self.manifest,
                "stats": {"seconds": round(seconds, 4), "bytes_in": self.bytes_in,
                          "bytes_out": info.get("filesize", 0)}}

    def commit(self, storage: Storage, info: dict[str, Any], *, planned: int,
               seconds: float, parts_dir: str = PARTS_DIR) -> dict[str, Any]:
        """Write the part record (after the tar is in place): the shard is done."""
        part = self.to_dict(info, planned=planned, seconds=seconds)
        storage.write_bytes(part_name(self.shard, parts_dir),
                            json.dumps(part, sort_keys=True).encode())
        return part

    @classmethod
    def lost(cls, storage: Storage, shard: str, split: str | None,
             inputs: Sequence[tuple[str, str]], cause: object, *, tar: str | None = None,
             parts_dir: str = PARTS_DIR) -> PartRecord:
        """Account for a task that died on every attempt: ``worker_lost`` rows, no tar."""
        p = cls(shard, split, "lost")
        p.ledger = lost_rows(inputs, shard, cause, split=split)
        p.failures = Counter({"worker_lost": len(p.ledger)}) if p.ledger else Counter()
        if tar:
            storage.remove(tar)
        p.commit(storage, {}, planned=len(inputs), seconds=0.0, parts_dir=parts_dir)
        return p


def run_tasks(executor: Executor, fn: Callable[[T], R], tasks: Sequence[T], *,
              on_lost: Callable[[T, object], R], progress: bool = False, desc: str = "",
              total: int | None = None, initial: int = 0,
              postfix: Callable[[R], dict[str, Any]] | None = None) -> Iterator[tuple[T, R]]:
    """Run ``fn`` over ``tasks``; yield ``(task, result)`` as they finish.

    The one place lost tasks are handled: a ``TaskLost`` result is replaced by
    ``on_lost(task, cause)`` (which writes the lost-task rows), so callers only ever see
    their own result type.  Shows a progress bar when ``progress``.
    """
    from tqdm import tqdm

    bar = tqdm(total=total if total is not None else len(tasks), initial=initial,
               unit="shard", disable=not progress, dynamic_ncols=True, desc=desc)
    try:
        for i, res in executor.imap_unordered(fn, tasks):
            if isinstance(res, TaskLost):
                log.warning("%s: task %d lost: %s", desc, i, res.cause)
                res = on_lost(tasks[i], res.cause)
            if postfix is not None:
                bar.set_postfix(postfix(res), refresh=False)
            bar.update(1)
            yield tasks[i], res
    finally:
        bar.close()
