"""``mmshard tokenize`` and ``mmshard fit-codebook``."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ._common import (
    add_config_arg,
    add_executor_args,
    job_config,
    load_yaml,
    make_executor_from_args,
    positive_int,
    table,
)

TOKENIZE_EXAMPLE = """\
examples:
  mmshard tokenize data/speech --fields mel,fbank,spectral          # audio features
  mmshard tokenize data/speech --fields mel --option mel.n_mels=128 --option mel.pad_or_trim=true
  mmshard fit-codebook data/speech --field mfcc --k 500 --out units500.safetensors
  mmshard tokenize data/speech --fields units --codebook units500.safetensors
  mmshard tokenize data/videos --fields keyframes --option keyframes.threshold=0.4
  mmshard fit-codebook data/photos --field jpg --patch 16 --k 1024 --out vq1024.safetensors
  mmshard tokenize data/photos --fields vq --codebook vq1024.safetensors
  mmshard tokenize data/photos --fields vq --codebook vq1024.safetensors \
      --option vq.resize=max_patches --option vq.max_patches=1024   # <= 1024 ids per image
Field sets: mel (Whisper log-mel), fbank, mfcc, spectral (zcr, energy, centroid, rolloff),
units (discrete audio units), keyframes (shot cuts + thumbnails), frames (sampled frame
thumbnails, --option frames.sampler=tsn), vq (patch VQ ids; resize policy --option
vq.resize=NAME plus its options, default longest side 512),
vqvae (VQ-VAE ids, --codebook CKPT), tokenizer (a plug-in: --option tokenizer.factory=m:f).
Each writes <dataset>/<field-set>/<shard>.tar with the base shard's keys, plus index.json,
ledger.parquet and stats.json. Reruns resume.
"""

FIT_EXAMPLE = """\
examples:
  mmshard fit-codebook data/speech --field mfcc --k 500 --out units500.safetensors
  mmshard fit-codebook data/photos --field jpg --patch 16 --k 8192 --out vq8192.safetensors
"""


def _option(text: str) -> tuple[str, str, object]:
    name, eq, value = text.partition("=")
    fs, dot, opt = name.partition(".")
    if not eq or not dot:
        raise argparse.ArgumentTypeError(f"--option wants FIELDSET.NAME=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return fs, opt, parsed


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="add derived fields (mel, units, keyframes, vq ...)",
                       description="Write sidecar shards with derived fields for every shard "
                                   "of a dataset, one task per shard.",
                       epilog=TOKENIZE_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--fields", help="comma-separated field sets (default: those of --config)")
    p.add_argument("--option", action="append", type=_option, default=[],
                   help="FIELDSET.NAME=VALUE tokenizer option (repeatable; JSON values)")
    add_config_arg(p, "TokenizeConfig: field_sets, device, batch_size; a plain "
                      "{field set: {option: value}} mapping is read as field_sets")
    p.add_argument("--codebook", help="codebook/tokenizer file for units or vq")
    p.add_argument("--device", default=None, help="cpu (default) or cuda[:N]")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples tokenized per call (default 1 on CPU, 16 on CUDA)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute field sets that exist with other options")
    add_executor_args(p)
    p.set_defaults(func=run_tokenize)

    f = sub.add_parser("fit-codebook", help="fit a k-means codebook on a dataset field",
                       description="Fit a FAISS k-means codebook on feature frames of a "
                                   "sidecar field set, or on image patches.",
                       epilog=FIT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("dataset")
    f.add_argument("--out", required=True, help="output .safetensors or .npz (or s3://...)")
    add_config_arg(f, "FitCodebookConfig")
    f.add_argument("--field", help="mel|mfcc|fbank|spectral|jpg|png|webp")
    f.add_argument("--k", type=positive_int)
    f.add_argument("--patch", type=positive_int, help="patch size for image fields (default 16)")
    f.add_argument("--pca-dim", type=positive_int, help="PCA projection for image patches")
    f.add_argument("--max-vectors", type=positive_int, help="default 500000")
    f.add_argument("--niter", type=positive_int, help="default 20")
    f.add_argument("--seed", type=int)
    f.set_defaults(func=run_fit)


def _yaml_config(args: argparse.Namespace) -> dict:
    conf = load_yaml(args.config)
    if conf and "field_sets" not in conf:  # the plain {field set: options} form
        conf = {"field_sets": conf}
    return conf


def build_field_sets(args: argparse.Namespace, conf: dict | None = None) -> dict[str, dict]:
    """Field sets of ``--fields`` (default: the config's) with their options: the
    config's, then ``--option``, then ``--codebook``."""
    conf_sets = dict((conf if conf is not None else _yaml_config(args)).get("field_sets") or {})
    if args.fields is None:
        names = list(conf_sets)
        if not names:
            raise ConfigError("give --fields (e.g. --fields mel,fbank) or field_sets in --config")
    else:
        names = [n.strip() for n in args.fields.split(",") if n.strip()]
        if not names:
            raise ConfigError("--fields is empty; e.g. --fields mel,fbank")
    out: dict[str, dict] = {n: dict(conf_sets.get(n) or {}) for n in names}
    for fs, opt, value in args.option:
        if fs not in out:
            raise ConfigError(f"--option {fs}.{opt}: {fs!r} is not in --fields {args.fields}")
        out[fs][opt] = value
    if args.codebook:
        for n, key in (("units", "codebook_path"), ("vq", "codebook_path"), ("vqvae", "path")):
            if n in out:
                out[n].setdefault(key, args.codebook)
    return out


def tokenize_config(args: argparse.Namespace):
    """The :class:`TokenizeConfig` of ``--config`` with ``--fields``/``--option``/
    ``--device``/``--batch-size`` applied."""
    from ..pipelines.transform.job import TokenizeConfig

    conf = _yaml_config(args)
    conf["field_sets"] = build_field_sets(args, conf)
    return job_config(TokenizeConfig.from_dict, args,
                      {"device": "device", "batch_size": "batch_size"}, base=conf)


def run_tokenize(args: argparse.Namespace) -> int:
    from ..pipelines.transform.job import tokenize

    config = tokenize_config(args)
    executor = make_executor_from_args(args)
    try:
        result = tokenize(args.dataset, config, executor=executor, overwrite=args.overwrite,
                          progress=not args.no_progress)
    finally:
        executor.close()
    print(table([(n, s["ok"], s["failed"], s["skipped"], s["bytes"],
                  ", ".join(f"{k} {v}" for k, v in s["failures_by_reason"].items()))
                 for n, s in result.stats.items()],
                ("field set", "ok", "failed", "skipped", "bytes", "failures")))
    return 0


FIT_FLAGS = {"field": "field", "k": "k", "patch": "patch", "pca_dim": "pca_dim",
             "max_vectors": "max_vectors", "niter": "niter", "seed": "seed"}


def run_fit(args: argparse.Namespace) -> int:
    from ..pipelines.train.codebook import FitCodebookConfig, fit_codebook

    config = job_config(FitCodebookConfig.from_dict, args, FIT_FLAGS)
    info = fit_codebook(args.dataset, args.out, config)
    print(json.dumps(info.stats, indent=1, default=str))
    return 0
