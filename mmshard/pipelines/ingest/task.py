"""The ingest shard task: inputs -> one committed tar plus its part record.

Consumes a :class:`ShardTask` (the shard's planned inputs, in key order) and emits a
:class:`ShardResult` summary.  Side effects, both atomic: ``shards/<name>.tar`` (only when
at least one input succeeded) and then ``_work/parts/<name>.json`` holding the shard's
ledger rows, manifest rows and stats.  The part record is written last, so its presence
means the shard is committed: a rerun skips it.  Tasks are idempotent and retryable.

Within a task the inputs are built on ``threads`` threads (0: the worker's CPU count, at
most 4; PIL's decode, resize and encode release the GIL) over a bounded window, and
written, ledgered and logged in plan order: the shard's bytes do not depend on the
thread count, and the last task of a job still uses every core of its worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import DataError
from ...keys import modality_of
from ...media.audio import AudioOptions, process_audio
from ...media.image import ImageOptions, ProcessedMedia, process_image
from ...media.video import VideoOptions, process_video
from ...storage import Storage, open_input
from ..task import PartRecord, ShardOutput, part_name
from .download import DownloadOptions, fetch_urls, is_http
from .sources import InputItem

__all__ = ["MediaOptions", "ShardResult", "ShardTask", "part_name", "read_items",
           "run_shard_task", "write_items", "write_lost_part"]

log = logging.getLogger(__name__)
_MODALITY_ORDER = {"video": 0, "image": 1, "audio": 2}


@dataclass(frozen=True, kw_only=True)
class MediaOptions:
    """Per-modality processing options plus the per-file byte limit."""

    image: ImageOptions
    audio: AudioOptions
    video: VideoOptions
    max_file_bytes: int


@dataclass(frozen=True, kw_only=True)
class ShardTask:
    """One shard to build.  Its inputs are ``items``, or (what the planner sends, so the
    driver never holds every shard's inputs) ``items_ref``: the path, in the output
    storage, of the file :func:`write_items` wrote them to."""

    out: str
    storage_options: dict
    shard: str
    split: str
    items: tuple[InputItem, ...] = ()
    items_ref: str | None = None
    media: MediaOptions
    download: DownloadOptions | None = None  # how http(s) inputs are fetched (download.py)
    threads: int = 0  # inputs built concurrently in the task (0: CPUs, at most 4)

    def load_items(self, storage: Storage | None = None) -> tuple[InputItem, ...]:
        """The shard's inputs, in plan order."""
        if self.items_ref is None:
            return self.items
        return read_items(storage or Storage(self.out, self.storage_options), self.items_ref)


_ITEM_FIELDS = ("key", "source", "media", "sidecars", "caption", "label", "label_id",
                "group", "meta", "size", "error")


def write_items(storage: Storage, rel: str, items: tuple[InputItem, ...]) -> None:
    """Write one shard's planned inputs (gzipped JSON lines, atomically) for its task."""
    import gzip

    lines = [json.dumps([getattr(it, f) for f in _ITEM_FIELDS], ensure_ascii=False)
             for it in items]
    storage.write_bytes(rel, gzip.compress("\n".join(lines).encode("utf-8"), 1, mtime=0))


def read_items(storage: Storage, rel: str) -> tuple[InputItem, ...]:
    """The inputs :func:`write_items` wrote (tuples restored, so they equal the plan's)."""
    import gzip

    text = gzip.decompress(storage.read_bytes(rel)).decode("utf-8")
    out = []
    for line in text.split("\n") if text else ():
        key, source, media, side, cap, lab, lab_id, group, meta, size, err = json.loads(line)
        out.append(InputItem(key=key, source=source, media=tuple(map(tuple, media)),
                             sidecars=tuple(map(tuple, side)), caption=cap, label=lab,
                             label_id=lab_id, group=group, meta=meta, size=size,
                             error=tuple(err) if err is not None else None))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class ShardResult:
    shard: str
    ok: int
    failed: int
    bytes_in: int
    bytes_out: int
    seconds: float
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    download: dict[str, Any] = dataclasses.field(default_factory=dict)  # fetch_urls stats


def _read(uri: str, limit: int) -> bytes:
    with open_input(uri) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError("too_large", f"{uri} is larger than max_file_bytes={limit}")
    return data


def _sniff(data: bytes) -> str:
    """Field for media whose name had no known extension (URLs like ``/img?id=3``)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        fmt = Image.open(io.BytesIO(data)).format or ""
        return {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}.get(fmt, "jpg")
    except (UnidentifiedImageError, OSError):
        pass
    head = data[:12]
    if head[:4] in (b"RIFF",) and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or head[:2] == b"\xff\xfb":
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    raise DataError("unsupported_format", "cannot tell the media type of a file without a "
                    "known extension")


def _process_media(field: str, data: bytes, opts: MediaOptions) -> ProcessedMedia:
    modality = modality_of(field.rsplit(".", 1)[-1])
    if modality == "image":
        return process_image(data, opts.image)
    if modality == "audio":
        pm = process_audio(data, opts.audio)
        if pm.data is data:  # kept as is: the source extension names it best
            return ProcessedMedia(field.rsplit(".", 1)[-1], pm.data, pm.facts)
        return pm
    if modality == "video":
        return process_video(data, opts.video, field.rsplit(".", 1)[-1])
    raise DataError("unsupported_format", f"field {field!r} is not image, audio or video")


def _read_media(uri: str, opts: MediaOptions, fetched: Mapping[str, Any] | None) -> bytes:
    try:
        return fetched[uri].read() if fetched and uri in fetched else \
            _read(uri, opts.max_file_bytes)
    except FileNotFoundError as e:
        raise DataError("missing_file", f"{uri} does not exist") from e
    except PermissionError as e:
        raise DataError("permission_denied", f"cannot read {uri}: {e}") from e
    except IsADirectoryError as e:
        raise DataError("not_a_file", f"{uri} is a directory") from e
    except OSError as e:
        raise DataError("read_error", f"cannot read {uri}: {e}") from e


def _media(item: InputItem, sample: dict[str, Any], opts: MediaOptions,
           fetched: Mapping[str, Any] | None) -> tuple[dict[str, dict[str, Any]], int]:
    """Read and process each medium into ``sample``; (per-field facts, source bytes)."""
    media_meta: dict[str, dict[str, Any]] = {}
    bytes_in = 0
    for field, uri in item.media:
        data = _read_media(uri, opts, fetched)
        bytes_in += len(data)
        if field == "auto" or field.endswith(".auto"):
            field = _sniff(data)
        pm = _process_media(field, data, opts)
        prefix = field.rsplit(".", 1)[0] + "." if "." in field else ""
        out_field = prefix + pm.field
        if out_field in sample:
            raise DataError("duplicate_field", f"two media map to field {out_field!r}")
        sample[out_field] = pm.data
        media_meta[out_field] = {"source": uri, "sha256": hashlib.sha256(data).hexdigest(),
                                 "size": len(data), "modality": modality_of(pm.field),
                                 **pm.facts}
    return media_meta, bytes_in


def _sidecars(item: InputItem) -> tuple[str | None, str | None, dict[str, Any]]:
    """(caption, label, meta) from the item and its .txt/.cls/.json sidecar files."""
    meta: dict[str, Any] = dict(item.meta)
    caption, label = item.caption, item.label
    for ext, uri in item.sidecars:
        try:
            raw = _read(uri, 16 * 1024 * 1024)
        except OSError as e:
            raise DataError("read_error", f"cannot read sidecar {uri}: {e}") from e
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError("bad_sidecar", f"sidecar {uri} is not UTF-8") from e
        if ext == "txt":
            caption = text.rstrip("\n")
        elif ext == "cls":
            label = text.strip()
        elif ext == "json":
            try:
                extra = json.loads(text)
            except ValueError as e:
                raise DataError("bad_sidecar", f"sidecar {uri} is not valid JSON: {e}") from e
            if not isinstance(extra, dict):
                raise DataError("bad_sidecar", f"sidecar {uri} must hold a JSON object")
            meta.update(extra)
    return caption, label, meta


def _label_id(item: InputItem, label: str | None) -> int | None:
    label_id = item.label_id
    if label is not None and label_id is None:  # no plan-time vocabulary (labels.py)
        if not (label.isascii() and label.isdigit()):
            raise DataError("bad_label", f"label {label!r} has no id: labels are assigned "
                            "ids at plan time (mmshard.pipelines.ingest.labels)")
        label_id = int(label)
    return label_id


def build_sample(item: InputItem, split: str, opts: MediaOptions,
                 fetched: Mapping[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and process one input: (tar sample dict, manifest row).  Raises DataError.

    ``fetched``: URL -> :class:`~.download.Fetched` for inputs already downloaded."""
    if item.error:
        raise DataError(*item.error)
    sample: dict[str, Any] = {"__key__": item.key}
    media_meta, bytes_in = _media(item, sample, opts, fetched)
    caption, label, meta = _sidecars(item)
    primary = min(media_meta, key=lambda f: (_MODALITY_ORDER.get(media_meta[f]["modality"], 9),
                                             f))
    pmeta = media_meta[primary]
    facts = {k: v for k, v in pmeta.items() if k not in ("source", "modality")}
    doc: dict[str, Any] = {
        "key": item.key, "source": item.source if len(media_meta) > 1 else pmeta["source"],
        "modality": pmeta["modality"],
        "modalities": sorted({m["modality"] for m in media_meta.values()}),
        "group": item.group, "split": split, **facts,
    }
    if len(media_meta) > 1:
        doc["media"] = media_meta
    if meta:
        doc["meta"] = meta
    if caption is not None:
        sample["txt"] = caption
    label_id = _label_id(item, label)
    if label is not None:
        sample["cls"] = str(label_id)  # WebDataset .cls: an integer class index
        doc["label"] = label
        doc["label_id"] = label_id
    sample["json"] = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    stored = sum(len(v) if isinstance(v, bytes) else len(v.encode()) for k, v in sample.items()
                 if not k.startswith("__"))
    row = {
        "key": item.key, "split": split, "group": item.group, "modality": pmeta["modality"],
        "fields": ",".join(sorted(k for k in sample if not k.startswith("__"))),
        "size": stored, "source_size": bytes_in, "sha256": pmeta["sha256"],
        "source": doc["source"], "label": label, "label_id": label_id,
        "width": pmeta.get("width"), "height": pmeta.get("height"),
        "sample_rate": pmeta.get("sample_rate"), "channels": pmeta.get("channels"),
        "duration": pmeta.get("duration"), "fps": pmeta.get("fps"), "frames": pmeta.get("frames"),
    }
    return sample, row


def _replay(result: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise error
    return result


def _built(task: ShardTask, items: tuple[InputItem, ...], part: PartRecord,
           fetched: Mapping[str, Any] | None
           ) -> Iterator[tuple[dict[str, Any], dict[str, Any]] | None]:
    """``build_sample`` of each input in plan order (None for a failed one, recorded in
    ``part`` in plan order), computed ``threads`` at a time, at most 2 x threads ahead."""
    threads = task.threads or min(4, os.cpu_count() or 1)
    if threads <= 1 or len(items) < 2:
        for item in items:
            yield part.attempt(item.source, item.key, build_sample, item, task.split,
                               task.media, fetched)
        return

    def one(item: InputItem) -> tuple[Any, BaseException | None]:
        try:
            return build_sample(item, task.split, task.media, fetched), None
        except Exception as e:  # raised again in plan order, through part.attempt
            return None, e

    with cf.ThreadPoolExecutor(threads, thread_name_prefix="mmshard-item") as pool:
        ahead = 2 * threads
        window = deque(pool.submit(one, it) for it in items[:ahead])
        for i, item in enumerate(items):
            res, err = window.popleft().result()
            if i + ahead < len(items):
                window.append(pool.submit(one, items[i + ahead]))
            yield part.attempt(item.source, item.key, _replay, res, err)


def run_shard_task(task: ShardTask) -> ShardResult:
    """Process one shard's inputs and commit the tar and part record (see module doc)."""
    t0 = time.perf_counter()
    storage = Storage(task.out, task.storage_options)
    part = PartRecord(task.shard, task.split, "ingest")
    items = task.load_items(storage)
    urls = [u for it in items if not it.error for _, u in it.media if is_http(u)]
    # the shard's URLs are fetched concurrently first; plan order then decides the tar
    with fetch_urls(urls, task.download, max_file_bytes=task.media.max_file_bytes) as got, \
            ShardOutput(storage, f"shards/{task.shard}.tar") as out:
        for item, built in zip(items, _built(task, items, part, got), strict=True):
            if built is None:
                continue
            sample, row = built
            out.write(sample)
            part.bytes_in += row["source_size"]
            part.ok(item.source, item.key, [row])
    seconds = time.perf_counter() - t0
    part.commit(storage, out.info, planned=len(items), seconds=seconds)
    return ShardResult(shard=task.shard, ok=len(part.manifest), failed=part.failed,
                       bytes_in=part.bytes_in, bytes_out=out.info.get("filesize", 0),
                       seconds=seconds, failures=dict(part.failures),
                       download=got.stats if urls else {})


def write_lost_part(task: ShardTask, cause: object) -> ShardResult:
    """Account for a shard whose task died on every attempt: one failed ledger row per
    input (reason ``worker_lost``), no tar.  ``--retry-failed`` can re-attempt them."""
    storage = Storage(task.out, task.storage_options)
    items = task.load_items(storage)
    PartRecord.lost(storage, task.shard, task.split,
                    [(it.source, it.key) for it in items], cause,
                    tar=f"shards/{task.shard}.tar")
    return ShardResult(shard=task.shard, ok=0, failed=len(items), bytes_in=0, bytes_out=0,
                       seconds=0.0)
