"""``mmshard clips``: a thin wrapper over :func:`mmshard.pipelines.clips.job.extract_clips`."""

from __future__ import annotations

import argparse
import json

from ._common import add_config_arg, add_executor_args, job_config, make_executor_from_args, table

EXAMPLE = """\
examples:
  # 10 s clips every 5 s (overlapping), the last partial window kept if >= 2 s
  mmshard clips data/videos --out data/video_clips --window 10 --stride 5 --min-clip 2

  # one clip per detected scene (uses data/videos/keyframes/ when `mmshard tokenize
  # --fields keyframes` made it), scenes under 1 s dropped, over 20 s split
  mmshard clips data/videos --out data/scene_clips --mode scenes --min-clip 1 --max-clip 20

  # everything from YAML (ClipsConfig fields), smaller clips, on a Ray cluster
  mmshard clips data/videos --out s3://bucket/clips --config clips.yaml --max-side 256 \\
      --address auto
Clips are cut frame-accurately (decode + libx264 re-encode, fixed preset/crf, one thread:
the same input gives the same bytes). Output: a dataset folder like ingest's, keys
<video key>_c0000..., one ledger row per source video; clips keep their video's split
and group. Reruns resume.
"""

# flag dest -> ClipsConfig field
FLAG_TO_CONFIG = {
    "mode": "mode", "window": "window_s", "stride": "stride_s", "tail": "tail",
    "min_clip": "min_clip_s", "max_clip": "max_clip_s", "trim": "trim_s",
    "keyframes_field_set": "keyframes_field_set", "crf": "crf", "preset": "preset",
    "gop": "gop", "max_side": "max_side", "max_failure_rate": "max_failure_rate",
    "name": "name",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``mmshard clips`` on the main parser's subcommands."""
    p = sub.add_parser("clips", help="cut a dataset's videos into clips (a new dataset)",
                       description="Cut every video of a dataset into fixed windows or "
                                   "scene clips, each its own MP4, written as a new "
                                   "dataset folder (one task per base shard).",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="a dataset folder made by `mmshard ingest`")
    p.add_argument("--out", required=True, help="output folder or URL for the clips dataset")
    add_config_arg(p, "ClipsConfig")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous clips dataset in --out and start clean")
    g = p.add_argument_group("planning")
    g.add_argument("--mode", choices=("fixed", "scenes"), default=None,
                   help="fixed windows (default) or one clip per scene")
    g.add_argument("--window", type=float, default=None,
                   help="fixed: clip length in seconds (default 10)")
    g.add_argument("--stride", type=float, default=None,
                   help="fixed: seconds between clip starts (default: --window)")
    g.add_argument("--tail", choices=("drop", "keep", "shift"), default=None,
                   help="fixed: the last partial window (default keep)")
    g.add_argument("--min-clip", type=float, default=None, help="drop clips shorter (s)")
    g.add_argument("--max-clip", type=float, default=None, help="scenes: split longer (s)")
    g.add_argument("--trim", type=float, default=None, help="scenes: seconds off both ends")
    g.add_argument("--keyframes-field-set", default=None,
                   help="scenes: sidecar with kf.json to use when present (default "
                        "keyframes; '' always runs the detector)")
    e = p.add_argument_group("encoding")
    e.add_argument("--crf", type=int, default=None, help="libx264 crf (default 20)")
    e.add_argument("--preset", default=None, help="libx264 preset (default veryfast)")
    e.add_argument("--gop", type=int, default=None,
                   help="keyframe interval in frames (default: libx264's)")
    e.add_argument("--max-side", type=int, default=None,
                   help="downscale so the longest side is at most this (default: keep)")
    p.add_argument("--max-failure-rate", type=float, default=None)
    p.add_argument("--name", default=None, help="dataset name in index.json")
    add_executor_args(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The :class:`ClipsConfig` of ``--config`` YAML overridden by the given flags."""
    from ..pipelines.clips.job import ClipsConfig

    return job_config(ClipsConfig.from_dict, args, FLAG_TO_CONFIG)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.clips.job import extract_clips
    from ..pipelines.result import FailureRateError

    config = config_from_args(args)
    executor = make_executor_from_args(args)
    try:
        result = extract_clips(args.dataset, args.out, config, executor=executor,
                               overwrite=args.overwrite, progress=not args.no_progress)
    except FailureRateError as e:  # committed; main() prints the error and exits 3
        _print(e.result.stats)
        raise
    finally:
        executor.close()
    _print(result.stats)
    print(f"wrote {result.out}")
    return 0


def _print(s: dict) -> None:
    print(table([(s["inputs"], s["ok"], s["failed"], s["clips"], s["shards"],
                  json.dumps(s["failures_by_reason"]))],
                ("videos", "ok", "failed", "clips", "shards", "failures")))
