"""``mmshard tokenize`` and ``mmshard fit-codebook``."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ._common import add_executor_args, load_yaml, make_executor_from_args, table

TOKENIZE_EXAMPLE = """\
examples:
  mmshard tokenize data/speech --fields mel,fbank,spectral          # audio features
  mmshard tokenize data/speech --fields mel --option mel.n_mels=128 --option mel.pad_or_trim=true
  mmshard fit-codebook data/speech --field mfcc --k 500 --out units500.safetensors
  mmshard tokenize data/speech --fields units --codebook units500.safetensors
  mmshard tokenize data/videos --fields keyframes --option keyframes.threshold=0.4
  mmshard fit-codebook data/photos --field jpg --patch 16 --k 1024 --out vq1024.safetensors
  mmshard tokenize data/photos --fields vq --codebook vq1024.safetensors
Field sets: mel (Whisper log-mel), fbank, mfcc, spectral (zcr, energy, centroid, rolloff),
units (discrete audio units), keyframes (shot cuts + thumbnails), frames (sampled frame
thumbnails, --option frames.sampler=tsn), vq (patch VQ ids),
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
    p.add_argument("--fields", required=True, help="comma-separated field sets")
    p.add_argument("--option", action="append", type=_option, default=[],
                   help="FIELDSET.NAME=VALUE tokenizer option (repeatable; JSON values)")
    p.add_argument("--config", help="YAML: {field set: {option: value}}; --option overrides")
    p.add_argument("--codebook", help="codebook/tokenizer file for units or vq")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=None,
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
    f.add_argument("--field", required=True, help="mel|mfcc|fbank|spectral|jpg|png|webp")
    f.add_argument("--k", type=int, required=True)
    f.add_argument("--out", required=True, help="output .safetensors or .npz")
    f.add_argument("--patch", type=int, default=16, help="patch size for image fields")
    f.add_argument("--pca-dim", type=int, default=None, help="PCA projection for image patches")
    f.add_argument("--max-vectors", type=int, default=500_000)
    f.add_argument("--niter", type=int, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=run_fit)


def build_field_sets(args: argparse.Namespace) -> dict[str, dict]:
    names = [n.strip() for n in args.fields.split(",") if n.strip()]
    if not names:
        raise ConfigError("--fields is empty; e.g. --fields mel,fbank")
    conf = load_yaml(args.config)
    out: dict[str, dict] = {n: dict(conf.get(n) or {}) for n in names}
    for fs, opt, value in args.option:
        if fs not in out:
            raise ConfigError(f"--option {fs}.{opt}: {fs!r} is not in --fields {args.fields}")
        out[fs][opt] = value
    if args.codebook:
        for n, key in (("units", "codebook_path"), ("vq", "codebook_path"), ("vqvae", "path")):
            if n in out:
                out[n].setdefault(key, args.codebook)
    return out


def run_tokenize(args: argparse.Namespace) -> int:
    from ..pipelines.transform.job import tokenize

    field_sets = build_field_sets(args)
    executor = make_executor_from_args(args)
    try:
        result = tokenize(args.dataset, field_sets, executor=executor, device=args.device,
                          overwrite=args.overwrite, progress=not args.no_progress,
                          batch_size=args.batch_size)
    finally:
        executor.close()
    print(table([(n, s["ok"], s["failed"], s["skipped"], s["bytes"],
                  ", ".join(f"{k} {v}" for k, v in s["failures_by_reason"].items()))
                 for n, s in result.stats.items()],
                ("field set", "ok", "failed", "skipped", "bytes", "failures")))
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from ..pipelines.train.codebook import fit_codebook

    info = fit_codebook(args.dataset, args.out, field=args.field, k=args.k, patch=args.patch,
                        pca_dim=args.pca_dim, max_vectors=args.max_vectors, niter=args.niter,
                        seed=args.seed)
    print(json.dumps(info.stats, indent=1, default=str))
    return 0
