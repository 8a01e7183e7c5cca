"""``mmshard ingest``: a thin wrapper over :func:`mmshard.ingest`."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ._common import (
    add_executor_args,
    human_bytes,
    load_yaml,
    make_executor_from_args,
    set_path,
    table,
)

EXAMPLE = """\
examples:
  # a folder of photos with .txt captions, resized to shortest side 256, 90/5/5 split by album
  mmshard ingest photos/ --out data/photos --image-resize shortest --image-size 256 \\
      --image-format jpg --split train=0.9,val=0.05,test=0.05 --group-level 0

  # a CSV manifest (path,caption,speaker) of audio, resampled to 16 kHz mono FLAC
  mmshard ingest clips.csv --out s3://bucket/speech --audio-rate 16000 --audio-mono \\
      --group-column speaker --split train=0.95,val=0.05 --dedup

  # a LAION-style Parquet of image URLs and captions: downloaded politely (4 requests at
  # once and 10/s per host, retries with backoff; robots.txt and X-Robots-Tag noai honoured)
  mmshard ingest urls.parquet --url-column url --caption-column caption --out data/web \
      --image-resize shortest --image-size 256 --image-format jpg --max-file-bytes 20000000 \
      --user-agent "mylab-bot/1.0 (+https://mylab.org/bot)"

  # everything from a YAML config, one flag overridden, on an existing Ray cluster
  mmshard ingest videos/ --out data/videos --config ingest.yaml --max-samples 200 \\
      --address auto
"""

# flag dest -> dotted config path
FLAG_TO_CONFIG = {
    "root": "sources.root", "key_column": "sources.key_column",
    "key_scheme": "sources.key_scheme", "path_column": "sources.path_columns",
    "caption_column": "sources.caption_column", "label_column": "sources.label_column",
    "group_column": "sources.group_column", "group_level": "sources.group_level",
    "group_regex": "sources.group_regex", "repeated_paths": "sources.repeated_paths",
    "follow_symlinks": "sources.follow_symlinks", "allow_schemes": "sources.allow_schemes",
    "image_resize": "image.resize", "image_size": "image.size", "image_patch": "image.patch",
    "image_format": "image.format", "image_quality": "image.quality",
    "min_image_size": "image.min_size", "max_pixels": "image.max_pixels",
    "jpeg_draft": "image.jpeg_draft", "upscale": "image.upscale",
    "image_verify": "image.verify",
    "audio_rate": "audio.sample_rate", "audio_mono": "audio.mono",
    "audio_format": "audio.format", "min_audio_duration": "audio.min_duration",
    "max_audio_duration": "audio.max_duration",
    "min_video_duration": "video.min_duration", "max_video_duration": "video.max_duration",
    "max_samples": "max_samples", "max_bytes": "max_bytes", "split": "splits",
    "split_seed": "split_seed", "dedup": "dedup", "max_file_bytes": "max_file_bytes",
    "max_failure_rate": "max_failure_rate", "name": "name",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="raw images/audio/video + captions -> WebDataset shards",
        description="Turn sources (folders, CSV/TSV/JSONL/Parquet manifests, globs, fsspec "
                    "URLs) into a dataset folder: shards/, index.json, manifest.parquet, "
                    "ledger.parquet, stats.json. Reruns resume.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SRC")
    p.add_argument("--out", required=True, help="output folder or URL (s3://...)")
    p.add_argument("--config", help="YAML file with IngestConfig fields; flags override it")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous dataset in --out and start clean")
    p.add_argument("--retry-failed", action="store_true",
                   help="re-attempt only the inputs the ledger marks failed, in new shards")
    p.add_argument("--plan-dir", default=None,
                   help="local folder where planning spills its sorted runs (default: the "
                        "system temporary folder; a 10M-row manifest needs a few GB)")
    p.add_argument("--storage-options", type=_json_object, default=None,
                   help="fsspec options for --out as JSON, e.g. "
                        "'{\"client_kwargs\": {\"endpoint_url\": \"http://127.0.0.1:9000\"}}'")
    s = p.add_argument_group("sources")
    s.add_argument("--root", help="manifest paths resolve under (and may not escape) this "
                                  "folder; default: the manifest's folder")
    s.add_argument("--follow-symlinks", action="store_const", const=True,
                   help="read symbolic links that stay inside the source root (default: "
                        "links are unsafe_path ledger rows)")
    s.add_argument("--allow-schemes", type=lambda v: [x.strip() for x in v.split(",")
                                                      if x.strip()],
                   help="remote URL schemes manifest rows may use (default: "
                        "http,https,s3,gs,az); file:// and local:// always obey --root")
    s.add_argument("--key-column", help="manifest column with unique sample keys")
    s.add_argument("--key-scheme", choices=("path", "hash"),
                   help="keys from relative paths (default) or their hash")
    s.add_argument("--path-column", action="append",
                   help="manifest column(s) with media paths/URLs (repeatable; default: the "
                        "first of path,url,file,image,audio,video ...)")
    s.add_argument("--url-column", dest="path_column", action="append",
                   help="manifest column with http(s) URLs to download (same as --path-column)")
    s.add_argument("--caption-column", help="manifest caption column (default: caption/text)")
    s.add_argument("--label-column", help="manifest label column (default: label/cls)")
    rep = s.add_mutually_exclusive_group()
    rep.add_argument("--group-captions", dest="repeated_paths", action="store_const",
                     const="group", help="manifest rows naming the same media become one "
                     "sample: first caption in txt, all in json.meta.captions")
    rep.add_argument("--sample-per-row", dest="repeated_paths", action="store_const",
                     const="rows", help="one sample per manifest row even when rows repeat a "
                     "path (keys <path>_row<N>)")
    grp = s.add_mutually_exclusive_group()
    grp.add_argument("--group-column", help="manifest column with the group id")
    grp.add_argument("--group-level", type=int,
                     help="group = the N-th directory of the relative path (0 = first)")
    grp.add_argument("--group-regex", help="group = regex match on the relative path "
                                           "(first capture group if any)")
    i = p.add_argument_group("images")
    i.add_argument("--image-resize",
                   choices=("none", "shortest", "longest", "center_crop", "pad_multiple"))
    i.add_argument("--image-size", type=int, help="N for shortest/longest/center_crop; max "
                                                  "longest side for pad_multiple")
    i.add_argument("--image-patch", type=int, help="P for pad_multiple (default 14)")
    i.add_argument("--image-format", choices=("keep", "jpg", "webp", "png"))
    i.add_argument("--image-quality", type=int, help="jpg/webp quality (default 95)")
    i.add_argument("--min-image-size", type=int, help="drop images whose short side is below")
    i.add_argument("--max-pixels", type=int, help="decompression-bomb limit (default 89.5 MP)")
    i.add_argument("--no-jpeg-draft", dest="jpeg_draft", action="store_const", const=False,
                   help="decode JPEGs at full size before resizing (slower)")
    i.add_argument("--upscale", action="store_const", const=True,
                   help="also enlarge images smaller than the target")
    i.add_argument("--image-verify", choices=("decode", "structure"),
                   help="check kept images by a full decode (default) or by header + end "
                        "marker (about 4x faster repacks)")
    a = p.add_argument_group("audio")
    a.add_argument("--audio-rate", type=int, help="resample to this rate (Hz) and store FLAC")
    a.add_argument("--audio-mono", action="store_const", const=True, help="downmix to mono")
    a.add_argument("--audio-format", choices=("keep", "flac"))
    a.add_argument("--min-audio-duration", type=float)
    a.add_argument("--max-audio-duration", type=float)
    v = p.add_argument_group("video")
    v.add_argument("--min-video-duration", type=float)
    v.add_argument("--max-video-duration", type=float)
    o = p.add_argument_group("shards and splits")
    o.add_argument("--max-samples", type=int, help="samples per shard (default 1000)")
    o.add_argument("--max-bytes", type=int, help="source bytes per shard (default 1 GiB)")
    o.add_argument("--split", help="e.g. train=0.9,val=0.05,test=0.05 (whole groups per split)")
    o.add_argument("--split-seed", type=int)
    o.add_argument("--dedup", action="store_const", const=True,
                   help="exact dedup by content hash (duplicates become ledger rows)")
    o.add_argument("--max-file-bytes", type=int, help="larger inputs fail as too_large")
    o.add_argument("--max-failure-rate", type=float,
                   help="exit non-zero when failed/inputs is above this (default 0.5)")
    o.add_argument("--name", help="dataset name in index.json (default: folder name)")
    d = p.add_argument_group("downloads (http/https inputs)")
    d.add_argument("--concurrency", type=int, help="requests open at once per task (64)")
    d.add_argument("--per-host", type=int, help="requests open at once per host (4)")
    d.add_argument("--host-rate", type=float, help="requests started per second per host (10)")
    d.add_argument("--connect-timeout", type=float, help="seconds (10)")
    d.add_argument("--read-timeout", type=float, help="seconds without a byte (30)")
    d.add_argument("--retries", type=int, help="re-attempts of timeouts, resets, 429, 5xx (3)")
    d.add_argument("--user-agent", help="identifies the crawler to hosts; robots.txt groups "
                                        "match its first word")
    d.add_argument("--no-opt-out-check", dest="opt_out_check", action="store_const",
                   const=False, help="ignore robots.txt and X-Robots-Tag noai/noimageai "
                                     "(recorded in stats; default: honour them)")
    add_executor_args(p)
    p.set_defaults(func=run)


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def build_config(args: argparse.Namespace):
    from ..pipelines.ingest.job import IngestConfig
    from ..samplers.splits import parse_split_spec

    data: dict[str, Any] = load_yaml(args.config)
    for dest, path in FLAG_TO_CONFIG.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "split":
            value = [list(s) for s in parse_split_spec(value)]
        set_path(data, path, value)
    from .._registry import config_from_dict
    from ..media.audio import AudioOptions
    from ..media.image import ImageOptions
    from ..media.video import VideoOptions
    from ..pipelines.ingest.sources import SourceOptions

    try:
        kinds = {"sources": SourceOptions, "image": ImageOptions, "audio": AudioOptions,
                 "video": VideoOptions}
        for name, cls in kinds.items():
            if name in data:
                data[name] = config_from_dict(cls, data[name])
        return IngestConfig.from_dict(data)
    except TypeError as e:
        raise ConfigError(f"bad ingest config: {e}") from e


def build_download(args: argparse.Namespace):
    from ..pipelines.ingest.download import DownloadOptions

    names = ("concurrency", "per_host", "host_rate", "connect_timeout", "read_timeout",
             "retries", "user_agent", "opt_out_check")
    return DownloadOptions(**{n: getattr(args, n) for n in names
                              if getattr(args, n, None) is not None})


def summary(stats: dict[str, Any]) -> str:
    rows = [(name, s["samples"], s["groups"], s["shards"], s["failed"])
            for name, s in stats["splits"].items()]
    out = [table(rows, ("split", "samples", "groups", "shards", "failed"))]
    out.append("")
    out.append(f"inputs {stats['inputs']} = ok {stats['ok']} + failed {stats['failed']} + "
               f"duplicate {stats['duplicate']}")
    if stats.get("ignored"):
        out.append(f"ignored {stats['ignored']} file(s) that are not media (not inputs; "
                   "ledger rows with status ignored)")
    if stats["failures_by_reason"]:
        out.append("failures: " + ", ".join(f"{k} {v}" for k, v in
                                            stats["failures_by_reason"].items()))
    rate = stats.get("samples_per_s")
    out.append(f"{stats['shards']} shards, {human_bytes(stats['bytes_in'])} in -> "
               f"{human_bytes(stats['bytes_out'])} out in {stats['seconds']:.1f} s"
               + (f" ({rate:.1f} samples/s)" if rate else ""))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.ingest.job import FailureRateError, PlanOptions, ingest

    config = build_config(args)
    executor = make_executor_from_args(args)
    try:
        result = ingest(args.sources, args.out, config, executor=executor,
                        progress=not args.no_progress, overwrite=args.overwrite,
                        retry_failed=args.retry_failed, storage_options=args.storage_options,
                        download=build_download(args),
                        plan=PlanOptions(folder=args.plan_dir))
    except FailureRateError as e:
        print(summary(e.result.stats))
        print(f"error: {e}")
        return 3
    finally:
        executor.close()
    print(summary(result.stats))
    print(f"dataset: {result.out}")
    return 0
