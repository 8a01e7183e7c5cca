"""``mmshard clips``: cut the videos of a dataset into clips, as a new dataset.

plan -> tasks -> commit, like ingest.  The driver reads the base dataset's manifest
(which samples are videos, in which shard), then runs one task per base shard that holds
videos.  A task streams its base shard; for each video it plans clips with a planner
from :mod:`mmshard.tokenizers.clips` (``fixed`` windows, or ``scenes`` from the
``keyframes/`` sidecar when the dataset has one, else from
:class:`~mmshard.tokenizers.keyframes.KeyframeDetector`), cuts every clip into its own
small MP4 in ONE decoding pass over the video, and writes the clips to
``<out>/shards/<base shard name>.tar``.  The commit writes ``index.json``,
``manifest.parquet`` (one row per clip), ``ledger.parquet`` (one row per SOURCE video:
ok, or failed with a reason) and ``stats.json`` with :func:`~mmshard.pipelines.commit.
commit_dataset`, exactly as ingest does.

Clip samples: key ``<source key>_c0003``; ``mp4``; ``json`` with the source key and
source, start/end frame (end exclusive) and time, fps, size, sha256 and byte size, the
planner and encoder settings; ``txt``/``cls`` copied from the source.  Their group is the
source video's group, and their split is the source's split (so every clip of a video
stays in the one split that ingest gave the video by its group: no leakage, and no
re-sharding across tasks).

Cutting: decode + re-encode with libx264 (fixed preset and crf, ``threads=1``), never
packet remuxing.  Remuxing can only start a clip at a keyframe (GOPs of several seconds
in the wild) or needs an edit list that many loaders ignore, so clip boundaries would
not be the planned frames; re-encoding is frame accurate, normalises every clip to
H.264/yuv420p with the source's timestamps (VFR kept), and with one encoder thread the
output bytes depend only on the input, the settings and the libx264/FFmpeg build.
Audio is not carried into clips.

Memory does not grow with a video's length: frames are decoded in order and handed to
the encoders of the clips that contain them (at most ``ceil(window/stride)`` open at
once); a finished clip is spooled to a temporary file, and the video's clips are copied
into the shard only when the whole video succeeded (a video that fails half-way leaves
no clips behind).

>>> r = extract_clips("ds", "ds_clips", mode="fixed", window_s=4.0,
...                   executor=make_executor("local"))             # doctest: +SKIP
>>> r.stats["ok"], r.stats["clips"]                                # doctest: +SKIP
(12, 97)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._registry import config_from_dict, config_to_dict
from ...dataset import ShardInfo, open_dataset
from ...errors import ConfigError, DataError, JobError, ShardError
from ...keys import VIDEO_EXTS
from ...storage import Storage
from ...tario import HashingWriter, TarWriter, iter_tar
from ...tokenizers.clips import (
    Clip,
    FixedWindowConfig,
    FixedWindowPlanner,
    SceneClipConfig,
    SceneClipPlanner,
)
from ...tokenizers.keyframes import KeyframesConfig
from ..commit import DatasetResult, commit_dataset, prepare_output, remove_temporaries
from ..executor import Executor, TaskLost, make_executor

__all__ = ["ClipsConfig", "ClipsResult", "cut_clips", "extract_clips", "plan_video_clips"]

log = logging.getLogger(__name__)
MODES = ("fixed", "scenes")
TAILS = ("drop", "keep", "shift")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
PARTS_DIR = "_work/parts"
_SPOOL_BYTES = 32 << 20  # clips of one video kept in RAM up to this, then on disk


@dataclass(frozen=True, kw_only=True)
class ClipsConfig:
    """Everything that decides the bytes of a clips dataset.

    Planning: ``mode`` ``fixed`` (windows of ``window_s`` every ``stride_s``, default
    ``window_s``; ``tail`` drop | keep | shift the last partial window; clips shorter
    than ``min_clip_s`` dropped) or ``scenes`` (one clip per scene, ``trim_s`` off both
    ends, shorter than ``min_clip_s`` dropped, longer than ``max_clip_s`` split evenly;
    scenes come from the ``keyframes_field_set`` sidecar when the dataset has it, else
    from the detector with ``detector`` options).

    Encoding: libx264 ``preset``/``crf``, ``gop`` keyframe interval in frames (0: the
    encoder's default), ``max_side`` downscale (0: source size), one encoder thread.

    >>> ClipsConfig(mode="scenes", min_clip_s=1.0, max_clip_s=20.0).mode
    'scenes'
    """

    mode: str = "fixed"
    window_s: float = 10.0
    stride_s: float | None = None
    tail: str = "keep"
    min_clip_s: float = 0.0
    max_clip_s: float | None = None
    trim_s: float = 0.0
    keyframes_field_set: str = "keyframes"
    detector: KeyframesConfig = field(default_factory=KeyframesConfig)
    crf: int = 20
    preset: str = "veryfast"
    gop: int = 0
    max_side: int = 0
    max_failure_rate: float = 0.5
    name: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.tail not in TAILS:
            raise ConfigError(f"tail must be one of {', '.join(TAILS)}; got {self.tail!r}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(X264_PRESETS)}; got "
                              f"{self.preset!r}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be an int in [0, 51], got {self.crf!r}")
        for name in ("gop", "max_side"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name} must be an int >= 0 (0: default), got {v!r}")
        if 0 < self.max_side < 16:
            raise ConfigError(f"max_side must be 0 or >= 16 pixels, got {self.max_side}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if isinstance(self.detector, dict):
            object.__setattr__(self, "detector",
                               config_from_dict(KeyframesConfig, self.detector))
        self.planner()  # the planner's own checks (window, stride, lengths)

    def planner(self) -> FixedWindowPlanner | SceneClipPlanner:
        """The clip planner these options describe."""
        if self.mode == "fixed":
            if self.min_clip_s > self.window_s:
                raise ConfigError(f"min_clip_s ({self.min_clip_s}) must be <= window_s "
                                  f"({self.window_s}) in fixed mode")
            return FixedWindowPlanner(FixedWindowConfig(
                length_s=self.window_s, stride_s=self.stride_s, tail=self.tail,
                min_length_s=self.min_clip_s))
        return SceneClipPlanner(SceneClipConfig(trim_s=self.trim_s,
                                                min_length_s=self.min_clip_s,
                                                max_length_s=self.max_clip_s))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipsConfig:
        return config_from_dict(cls, dict(data))


ClipsResult = DatasetResult  # what a finished job returns: out folder + stats.json

# ---- planning one video -----------------------------------------------------------------

def plan_video_clips(key: str, video: bytes, config: ClipsConfig,
                     kf: dict[str, Any] | None = None) -> tuple[list[Clip], dict[str, Any]]:
    """Probe ``video`` and plan its clips: ``(clips, facts)``.

    ``facts`` holds fps, num_frames, duration, width, height, codec and whether the
    scenes came from a sidecar (``scenes_from``).  Raises DataError for undecodable
    video or a ``kf`` dict that does not fit it.

    >>> clips, facts = plan_video_clips("v", open("v.mp4", "rb").read(),
    ...                                 ClipsConfig(window_s=2.0))   # doctest: +SKIP
    """
    from ...media.video_reader import VideoReader

    with VideoReader(video, backend="pyav") as vr:
        meta = vr.meta
        ts = vr.timestamps()
        facts = {"fps": round(meta.fps, 6), "num_frames": meta.num_frames,
                 "duration": round(meta.duration, 6), "width": meta.width,
                 "height": meta.height, "codec": meta.codec, "is_vfr": meta.is_vfr}
        planner = config.planner()
        if isinstance(planner, FixedWindowPlanner):
            return planner.plan(key, num_frames=meta.num_frames, fps=meta.fps,
                                timestamps=ts), facts
        if kf is None:
            from ...tokenizers.keyframes import KeyframeDetector

            kf, _ = KeyframeDetector(config.detector).detect(vr)
            facts["scenes_from"] = "detector"
        else:
            facts["scenes_from"] = "sidecar"
            if int(kf.get("num_frames", -1)) != meta.num_frames:
                raise DataError("bad_keyframes", f"kf.json counts {kf.get('num_frames')} "
                                f"frames, the video has {meta.num_frames}; recompute the "
                                "keyframes sidecar")
    return planner.plan(key, kf, timestamps=ts), facts


# ---- cutting ----------------------------------------------------------------------------

def _even(x: float) -> int:
    return max(2, int(x) - int(x) % 2)


class _ClipEncoder:
    """One open clip: an MP4 muxer + libx264 encoder writing into memory."""

    def __init__(self, clip: Clip, rate: Any, time_base: Any, size: tuple[int, int],
                 config: ClipsConfig) -> None:
        import av

        self.clip = clip
        self.buf = io.BytesIO()
        self.out = av.open(self.buf, "w", format="mp4")
        st = self.out.add_stream("libx264", rate=rate)
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        st.time_base = time_base
        st.codec_context.time_base = time_base
        opts = {"crf": str(config.crf), "preset": config.preset, "threads": "1"}
        if config.gop:
            opts.update(g=str(config.gop), keyint_min=str(min(config.gop, 25)))
        st.options = opts
        self.stream = st
        self.size = size
        self.pts0: int | None = None
        self.frames = 0
        self.last_pts = 0

    def add(self, frame: Any, pts: int) -> None:
        if self.pts0 is None:
            self.pts0 = pts
        w, h = self.size
        f = frame.reformat(width=w, height=h, format="yuv420p")
        f.pts = pts - self.pts0
        f.time_base = self.stream.time_base
        self.last_pts = f.pts
        for p in self.stream.encode(f):
            self.out.mux(p)
        self.frames += 1

    def finish(self) -> bytes:
        for p in self.stream.encode(None):
            self.out.mux(p)
        self.out.close()
        return self.buf.getvalue()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - best effort cleanup of a failed clip
            pass


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, ValueError, OSError, IndexError, EOFError)


def cut_clips(video: bytes, clips: Sequence[Clip], config: ClipsConfig | None = None
              ) -> Iterator[tuple[Clip, bytes, dict[str, Any]]]:
    """Cut ``clips`` (frame ranges of ``video``) into MP4s in one decoding pass.

    Yields ``(clip, mp4_bytes, facts)`` in clip order as each clip completes; ``facts``
    holds frames, width, height, fps, duration, codec.  Frames are decoded once, in
    presentation order, and passed to every open clip that contains them, so memory
    holds the open encoders only.  Decoding stops after the last clip's last frame.
    Raises DataError when the video does not decode or ends before a clip does.

    >>> for clip, mp4, facts in cut_clips(data, plan):          # doctest: +SKIP
    ...     print(clip.key, facts["frames"], len(mp4))
    """
    import av

    config = config or ClipsConfig()
    order = sorted(clips, key=lambda c: (c.start_frame, c.index))
    if not order:
        return
    need = max(c.end_frame for c in order)
    errors = _av_errors()
    try:
        container = av.open(io.BytesIO(video), "r")
    except errors as e:
        raise DataError("undecodable_video", f"cannot open as a video container: {e}") from e
    active: list[_ClipEncoder] = []
    done: dict[int, tuple[Clip, bytes, dict[str, Any]]] = {}
    emit_order = sorted(c.index for c in order)
    nxt_emit = 0
    try:
        if not container.streams.video:
            raise DataError("no_video_stream", "the container has no video stream")
        st = container.streams.video[0]
        st.thread_type = "AUTO"
        tb = st.time_base
        rate = st.average_rate or st.guessed_rate or 25
        w, h = st.codec_context.width, st.codec_context.height
        scale = 1.0 if not config.max_side else min(1.0, config.max_side / max(w, h))
        size = (_even(w * scale), _even(h * scale))
        p = 0
        i = -1
        frames = container.decode(st)
        while i + 1 < need:
            try:
                frame = next(frames)
            except StopIteration:
                raise DataError("undecodable_video", f"the stream ends at frame {i + 1}, "
                                f"before frame {need} (truncated file?)") from None
            except errors as e:
                raise DataError("undecodable_video", f"decoding frame {i + 1} failed: {e}"
                                ) from e
            i += 1
            pts = frame.pts if frame.pts is not None else i
            while p < len(order) and order[p].start_frame <= i:
                active.append(_ClipEncoder(order[p], rate, tb, size, config))
                p += 1
            still = []
            for enc in active:
                enc.add(frame, pts)
                if i + 1 >= enc.clip.end_frame:
                    c = enc.clip
                    data = enc.finish()
                    done[c.index] = (c, data, {
                        "frames": enc.frames, "width": size[0], "height": size[1],
                        "fps": round(float(rate), 6),
                        "duration": round(c.end_time - c.start_time, 6), "codec": "h264"})
                else:
                    still.append(enc)
            active = still
            while nxt_emit < len(emit_order) and emit_order[nxt_emit] in done:
                yield done.pop(emit_order[nxt_emit])
                nxt_emit += 1
    finally:
        for enc in active:
            enc.abort()
        container.close()


# ---- the shard task ---------------------------------------------------------------------

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



class _AbortEmpty(Exception):
    """Raised inside the atomic writer to discard a tar with no clips."""


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


def _ledger(source: str, key: str, task: ClipsTask, status: str, reason: str, detail: str,
            shard: str | None) -> dict[str, Any]:
    return {"source": source, "key": key, "status": status, "reason": reason,
            "detail": detail, "shard": shard, "split": task.shard.split}


def run_clips_task(task: ClipsTask) -> ClipsTaskResult:
    """Cut every video of one base shard; commit ``shards/<name>.tar`` then the part
    record (its presence marks the shard done).  Idempotent and retryable."""
    t0 = time.perf_counter()
    out = Storage(task.out, task.storage_options)
    base = Storage(task.base, task.storage_options)
    sources = dict(task.videos)
    ledger: list[dict[str, Any]] = []
    manifest: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    bytes_in = 0
    seen: set[str] = set()
    tar_rel = f"shards/{task.name}.tar"
    info: dict[str, Any] = {}
    kf_side = _kf_iter(base, task.kf_url) if task.config.mode == "scenes" else iter(())
    kf_next: dict[str, Any] | None = None
    try:
        with out.atomic_writer(tar_rel) as raw:
            hw = HashingWriter(raw)
            writer = TarWriter(hw)  # type: ignore[arg-type]
            with base.open_read(task.shard.url) as f:
                for sample in iter_tar(f, url=base.path(task.shard.url)):
                    key = sample["__key__"]
                    if task.kf_url is not None:
                        # the sidecar holds a subsequence of the base keys, in base order
                        if kf_next is None:
                            kf_next = next(kf_side, None)
                        if kf_next is not None and kf_next["__key__"] == key:
                            try:
                                sample["__kf__"] = json.loads(kf_next["kf.json"])
                            except (KeyError, ValueError):
                                pass
                            kf_next = None
                    if key not in sources:
                        continue
                    seen.add(key)
                    fld = _video_field(sample)
                    bytes_in += len(sample[fld]) if fld else 0
                    with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as spool:
                        sw = TarWriter(spool)  # type: ignore[arg-type]
                        try:
                            rows = _clip_samples(key, sample, task, sw)
                        except DataError as e:
                            failures[e.reason] += 1
                            ledger.append(_ledger(sources[key], key, task, "failed", e.reason,
                                                  str(e).split(": ", 1)[-1], None))
                            continue
                        except Exception as e:  # a decoder bug must not stop the job
                            failures["internal_error"] += 1
                            ledger.append(_ledger(sources[key], key, task, "failed",
                                                  "internal_error", f"{type(e).__name__}: {e}",
                                                  None))
                            log.warning("clips %s: %s internal error", task.name, key,
                                        exc_info=True)
                            continue
                        sw.close()
                        spool.seek(0)
                        for clip in iter_tar(spool):
                            writer.write(clip)
                    for r in rows:
                        r["shard"] = task.name
                    manifest.extend(rows)
                    ledger.append(_ledger(sources[key], key, task, "ok",
                                          "" if rows else "no_clips", f"{len(rows)} clips",
                                          task.name if rows else None))
            for key in sorted(set(sources) - seen):
                failures["missing_sample"] += 1
                ledger.append(_ledger(sources[key], key, task, "failed", "missing_sample",
                                      f"{key} is in the manifest but not in {task.shard.url}",
                                      None))
            writer.close()
            if writer.count == 0:
                raise _AbortEmpty
            info = {"url": tar_rel, "filesize": hw.n, "sha256": hw.hexdigest()}
    except _AbortEmpty:
        info = {}
    failed = sum(failures.values())
    seconds = time.perf_counter() - t0
    part = {"shard": task.name, "split": task.shard.split,
            "planned": len(manifest) + failed, "nsamples": len(manifest), **info,
            "failures": dict(sorted(failures.items())), "ledger": ledger,
            "manifest": manifest,
            "stats": {"seconds": round(seconds, 4), "bytes_in": bytes_in,
                      "bytes_out": info.get("filesize", 0)}}
    out.write_bytes(f"{PARTS_DIR}/{task.name}.json", json.dumps(part, sort_keys=True).encode())
    return ClipsTaskResult(shard=task.name, videos=len(sources), failed=failed,
                           clips=len(manifest), seconds=seconds)


def _write_lost_part(task: ClipsTask, cause: object) -> None:
    out = Storage(task.out, task.storage_options)
    detail = f"task for shard {task.name} died on every attempt: {cause}"
    ledger = [_ledger(src, key, task, "failed", "worker_lost", detail, None)
              for key, src in task.videos]
    part = {"shard": task.name, "split": task.shard.split, "planned": len(ledger),
            "nsamples": 0, "failures": {"worker_lost": len(ledger)}, "ledger": ledger,
            "manifest": [], "stats": {"seconds": 0.0, "bytes_in": 0, "bytes_out": 0}}
    out.remove(f"shards/{task.name}.tar")
    out.write_bytes(f"{PARTS_DIR}/{task.name}.json", json.dumps(part, sort_keys=True).encode())


# ---- the driver -------------------------------------------------------------------------

def _video_keys(ds: Any) -> dict[str, list[tuple[str, str]]]:
    """Base shard name -> [(key, source)] of its video samples, from the manifest."""
    try:
        table = ds.read_table("manifest")
    except ShardError as e:
        raise JobError(f"{ds.root} has no manifest.parquet; clips need a dataset made by "
                       "`mmshard ingest`") from e
    out: dict[str, list[tuple[str, str]]] = {}
    cols = table.select(["key", "shard", "modality", "source"]).to_pylist()
    for r in cols:
        if r["modality"] == "video":
            out.setdefault(r["shard"], []).append((r["key"], r["source"] or r["key"]))
    return out


def extract_clips(dataset: str, out: str, config: ClipsConfig | None = None, *,
                  executor: Executor | None = None, progress: bool = False,
                  overwrite: bool = False, storage_options: dict | None = None,
                  **options: Any) -> ClipsResult:
    """Cut every video of ``dataset`` into clips and write them as a new dataset at ``out``.

    Pass a :class:`ClipsConfig` or its fields as keywords (``mode="scenes"``,
    ``window_s=4.0``, ``stride_s=2.0``, ``min_clip_s=1.0`` ...), not both.  One task per
    base shard with videos runs on ``executor`` (default: an embedded Ray cluster).
    Reruns resume (committed shards are skipped); other options on an existing output
    raise JobError unless ``overwrite``.  Bad videos become failed ledger rows; above
    ``max_failure_rate`` the job commits, then raises
    :class:`~mmshard.pipelines.ingest.job.FailureRateError`.

    >>> r = extract_clips("ds", "clips", mode="scenes", min_clip_s=1.0,
    ...                   executor=make_executor("local"))         # doctest: +SKIP
    >>> r.stats["clips"], r.stats["failures_by_reason"]              # doctest: +SKIP
    (41, {'undecodable_video': 1})
    """
    if config is not None and options:
        raise ConfigError("give extract_clips a ClipsConfig or its options as keywords, "
                          f"not both (got config and {sorted(options)})")
    if config is None:
        config = config_from_dict(ClipsConfig, options)
    t0 = time.perf_counter()
    ds = open_dataset(dataset, storage_options)
    storage = Storage(out, storage_options)
    if storage.root == ds.root:
        raise ConfigError("the clips output must be a new folder, not the base dataset")
    kf_fs = config.keyframes_field_set if config.mode == "scenes" else ""
    kf_index = None
    if kf_fs and ds.storage.exists(f"{kf_fs}/index.json"):
        kf_index = hashlib.sha256(ds.storage.read_bytes(f"{kf_fs}/index.json")).hexdigest()
    job = {"config": config.to_dict(), "dataset": ds.root,
           "base_index": hashlib.sha256(ds.storage.read_bytes("index.json")).hexdigest(),
           "keyframes_index": kf_index}
    job["fingerprint"] = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
    videos = _video_keys(ds)
    prepare_output(storage, job, overwrite, mismatch=lambda old: (
        f"{storage.root} was made by a clips job with other options or from another base "
        "dataset; rerun with the original arguments to resume, pass overwrite=True "
        "(--overwrite) to start clean, or choose another output"))
    shards = []
    for sh in ds.index.shards:
        name = sh.url.rsplit("/", 1)[-1].removesuffix(".tar")
        if videos.get(name):
            shards.append((name, sh))
    done = {n.removesuffix(".json") for n in storage.listdir(PARTS_DIR)}
    tasks = [ClipsTask(out=storage.root, storage_options=storage.storage_options,
                       base=ds.root, shard=sh, name=name, videos=tuple(videos[name]),
                       kf_url=f"{kf_fs}/{name}.tar" if kf_index else None, config=config)
             for name, sh in shards if name not in done]
    own = executor is None
    executor = executor or make_executor("ray")
    try:
        from tqdm import tqdm

        with tqdm(total=len(shards), initial=len(shards) - len(tasks), unit="shard",
                  disable=not progress, desc="clips") as bar:
            for i, res in executor.imap_unordered(run_clips_task, tasks):
                if isinstance(res, TaskLost):
                    _write_lost_part(tasks[i], res.cause)
                bar.update(1)
        workers = executor.workers
        kind = type(executor).__name__
    finally:
        if own:
            executor.close()
    remove_temporaries(storage)  # what a worker killed mid-write left behind
    name = config.name or f"{ds.index.name or 'dataset'}-clips"
    clips = 0
    for n, _ in shards:
        clips += json.loads(storage.read_bytes(f"{PARTS_DIR}/{n}.json"))["nsamples"]
    skipped = ds.index.num_samples - sum(len(v) for v in videos.values())
    run_stats = {"seconds": round(time.perf_counter() - t0, 3), "executor": kind,
                 "workers": workers, "resumed_shards": len(shards) - len(tasks),
                 "mode": config.mode, "clips": clips, "non_video_samples": max(skipped, 0),
                 "clips_per_video": round(clips / max(sum(len(v) for v in videos.values()),
                                                      1), 3)}
    stats = commit_dataset(storage, name=name, shard_order=[n for n, _ in shards],
                           extra_ledger=[], config=job, run_stats=run_stats)
    result = ClipsResult(out=storage.root, stats=stats)
    if result.failure_rate > config.max_failure_rate:
        from ..ingest.job import FailureRateError

        raise FailureRateError(
            f"{stats['failed']} of {stats['inputs']} videos failed "
            f"({result.failure_rate:.1%} > max_failure_rate {config.max_failure_rate:.1%}); "
            f"reasons: {stats['failures_by_reason']}; see {storage.path('ledger.parquet')}",
            result)  # type: ignore[arg-type]
    return result
