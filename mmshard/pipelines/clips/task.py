"""The clips shard task: one base shard's videos -> one committed tar of clips plus its
part record, on the shared task skeleton (:mod:`mmshard.pipelines.task`)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..._registry import config_to_dict
from ...dataset import ShardInfo
from ...errors import DataError
from ...keys import VIDEO_EXTS
from ...storage import Storage
from ...tario import TarWriter, iter_tar
from ..task import PartRecord, ShardOutput
from ..task import base_samples as _base_samples
from .config import ClipsConfig
from .cut import cut_clips
from .plan import plan_video_clips

__all__ = ["ClipsTask", "ClipsTaskResult", "run_clips_task", "write_lost_part"]

_SPOOL_BYTES = 32 << 20  # clips of one video kept in RAM up to this, then on disk


@dataclass(frozen=True, kw_only=True)
class ClipsTask:
    out: str
    storage_options: dict
    base: str
    shard: ShardInfo
    name: str
    videos: tuple[tuple[str, str], ...]  # (key, source) of the shard's video samples
    kf_url: str | None
    config: ClipsConfig


@dataclass(frozen=True, kw_only=True)
class ClipsTaskResult:
    shard: str
    videos: int
    failed: int
    clips: int
    seconds: float


def _video_field(sample: dict[str, Any]) -> str | None:
    exts = set(VIDEO_EXTS.values())
    fields = sorted(k for k in sample if not k.startswith("__") and k.rsplit(".", 1)[-1] in exts)
    return fields[0] if fields else None


def _kf_iter(storage: Storage, url: str | None) -> Iterator[dict[str, Any]]:
    if url is None or not storage.exists(url):
        return
    with storage.open_read(url) as f:
        yield from iter_tar(f, url=storage.path(url))


def _clip_samples(key: str, sample: dict[str, Any], task: ClipsTask, spool: TarWriter
                  ) -> list[dict[str, Any]]:
    """Plan and cut one source video; clips go to ``spool``; return their manifest rows."""
    fld = _video_field(sample)
    if fld is None:
        raise DataError("no_video", "the sample has no video field")
    video = sample[fld]
    try:
        src_doc = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        src_doc = {}
    kf = sample.get("__kf__")
    clips, facts = plan_video_clips(key, video, task.config, kf)
    cfg = task.config
    group = str(src_doc.get("group") or key)
    source = str(src_doc.get("source") or key)
    split = task.shard.split
    planner = cfg.planner()
    label = sample.get("cls")
    rows = []
    for clip, mp4, cf in cut_clips(video, clips, cfg):
        sha = hashlib.sha256(mp4).hexdigest()
        doc = {"key": clip.key, "source_key": key, "source": source, "modality": "video",
               "group": group, "split": split, "clip_index": clip.index,
               "start_frame": clip.start_frame, "end_frame": clip.end_frame,
               "start_time": clip.start_time, "end_time": clip.end_time,
               "sha256": sha, "size": len(mp4), **cf,
               "source_facts": facts,
               "planner": {"name": planner.name, "config": config_to_dict(planner.config)},
               "cut": {"method": "reencode", "encoder": "libx264", "crf": cfg.crf,
                       "preset": cfg.preset, "gop": cfg.gop, "max_side": cfg.max_side}}
        if isinstance(src_doc.get("meta"), dict):
            doc["meta"] = src_doc["meta"]
        out = {"__key__": clip.key, "mp4": mp4}
        if "txt" in sample:
            out["txt"] = sample["txt"]
        if label is not None:
            out["cls"] = label
            doc["label"] = label.decode("utf-8", "replace")
        out["json"] = json.dumps(doc, sort_keys=True, ensure_ascii=False)
        spool.write(out)
        stored = sum(len(v) if isinstance(v, bytes) else len(v.encode())
                     for k, v in out.items() if not k.startswith("__"))
        rows.append({"key": clip.key, "split": split, "group": group, "modality": "video",
                     "fields": ",".join(sorted(k for k in out if not k.startswith("__"))),
                     "size": stored, "source_size": len(mp4), "sha256": sha,
                     "source": source, "label": doc.get("label"), "width": cf["width"],
                     "height": cf["height"], "sample_rate": None, "channels": None,
                     "duration": cf["duration"], "fps": cf["fps"], "frames": cf["frames"]})
    return rows


def _next_kf(kf_side: Iterator[dict[str, Any]], pending: list[dict[str, Any]], key: str
             ) -> dict[str, Any] | None:
    """The keyframes of ``key`` from the sidecar, which holds a subsequence of the base
    keys in base order (``pending`` keeps the one sidecar sample read ahead)."""
    if not pending:
        nxt = next(kf_side, None)
        if nxt is None:
            return None
        pending.append(nxt)
    if pending[0]["__key__"] != key:
        return None
    try:
        return json.loads(pending.pop()["kf.json"])
    except (KeyError, ValueError):
        return None


def _spool_clips(key: str, sample: dict[str, Any], task: ClipsTask, spool: Any
                 ) -> list[dict[str, Any]]:
    sw = TarWriter(spool)
    rows = _clip_samples(key, sample, task, sw)
    sw.close()
    return rows


def run_clips_task(task: ClipsTask) -> ClipsTaskResult:
    """Cut every video of one base shard; commit ``shards/<name>.tar`` then the part
    record (its presence marks the shard done).  Idempotent and retryable."""
    t0 = time.perf_counter()
    storage = Storage(task.out, task.storage_options)
    base = Storage(task.base, task.storage_options)
    sources = dict(task.videos)
    part = PartRecord(task.name, task.shard.split, "clips")
    seen: set[str] = set()
    kf_side = _kf_iter(base, task.kf_url) if task.config.mode == "scenes" else iter(())
    kf_pending: list[dict[str, Any]] = []
    with ShardOutput(storage, f"shards/{task.name}.tar") as out:
        for sample in _base_samples(base, task.shard.url):
            key = sample["__key__"]
            if task.kf_url is not None:
                kf = _next_kf(kf_side, kf_pending, key)
                if kf is not None:
                    sample["__kf__"] = kf
            if key not in sources:
                continue
            seen.add(key)
            fld = _video_field(sample)
            part.bytes_in += len(sample[fld]) if fld else 0
            # a video's clips reach the shard only when the whole video succeeded
            with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as spool:
                rows = part.attempt(sources[key], key, _spool_clips, key, sample, task, spool)
                if rows is None:
                    continue
                spool.seek(0)
                for clip in iter_tar(spool):
                    out.write(clip)
            part.ok(sources[key], key, rows, reason="" if rows else "no_clips",
                    detail=f"{len(rows)} clips", committed=bool(rows))
        for key in sorted(set(sources) - seen):
            part.fail(sources[key], key, "missing_sample",
                      f"{key} is in the manifest but not in {task.shard.url}")
    seconds = time.perf_counter() - t0
    part.commit(storage, out.info, planned=len(part.manifest) + part.failed, seconds=seconds)
    return ClipsTaskResult(shard=task.name, videos=len(sources), failed=part.failed,
                           clips=len(part.manifest), seconds=seconds)


def write_lost_part(task: ClipsTask, cause: object) -> ClipsTaskResult:
    """A task that died on every attempt: ``worker_lost`` rows for its videos, no tar."""
    storage = Storage(task.out, task.storage_options)
    PartRecord.lost(storage, task.name, task.shard.split,
                    [(src, key) for key, src in task.videos], cause,
                    tar=f"shards/{task.name}.tar")
    return ClipsTaskResult(shard=task.name, videos=len(task.videos), failed=len(task.videos),
                           clips=0, seconds=0.0)
