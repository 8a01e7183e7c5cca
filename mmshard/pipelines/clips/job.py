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
Each clip carries the source's first audio stream cut to its span (AAC; see cut.py).

Memory does not grow with a video's length: on local storage a task decodes each video
in place inside the base shard tar (a :class:`~mmshard.media.video_reader.FileRange`, never
the video's bytes in memory; remote shards are streamed into memory one sample at a
time), frames are decoded in order and handed to
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
import json
import time
from typing import Any

from ..._registry import config_from_dict
from ...dataset import open_dataset
from ...errors import ConfigError, JobError, ShardError
from ...storage import Storage
from ..commit import DatasetResult, commit_dataset, prepare_output, remove_temporaries
from ..executor import Executor, make_executor
from ..result import check_failure_rate
from ..task import PARTS_DIR, part_name, run_tasks
from .config import ClipsConfig
from .cut import cut_clips
from .plan import plan_video_clips
from .task import ClipsTask, run_clips_task, write_lost_part

__all__ = ["ClipsConfig", "ClipsResult", "ClipsTask", "cut_clips", "extract_clips",
           "plan_video_clips", "run_clips_task"]

ClipsResult = DatasetResult  # what a finished job returns: out folder + stats.json


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
    job = {"job": "clips", "config": config.to_dict(), "dataset": ds.root,
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
        for _ in run_tasks(executor, run_clips_task, tasks, on_lost=write_lost_part,
                           progress=progress, desc="clips", total=len(shards),
                           initial=len(shards) - len(tasks)):
            pass
        workers = executor.workers
        kind = type(executor).__name__
    finally:
        if own:
            executor.close()
    remove_temporaries(storage)  # what a worker killed mid-write left behind
    name = config.name or f"{ds.index.name or 'dataset'}-clips"
    clips = 0
    for n, _ in shards:
        clips += json.loads(storage.read_bytes(part_name(n)))["nsamples"]
    skipped = ds.index.num_samples - sum(len(v) for v in videos.values())
    run_stats = {"seconds": round(time.perf_counter() - t0, 3), "executor": kind,
                 "workers": workers, "resumed_shards": len(shards) - len(tasks),
                 "mode": config.mode, "clips": clips, "non_video_samples": max(skipped, 0),
                 "clips_per_video": round(clips / max(sum(len(v) for v in videos.values()),
                                                      1), 3)}
    stats = commit_dataset(storage, name=name, shard_order=[n for n, _ in shards],
                           extra_ledger=[], config=job, run_stats=run_stats)
    result = ClipsResult(out=storage.root, stats=stats)
    check_failure_rate(result, config.max_failure_rate, storage.path("ledger.parquet"),
                       unit="videos")
    return result
