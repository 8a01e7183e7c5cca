"""``mmshard embed``: embeddings as a sidecar field set (a thin wrapper over tokenize)."""

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

EXAMPLE = """\
examples:
  mmshard embed data/photos --encoder pixels --field jpg            # -> data/photos/emb_jpg/
  mmshard embed data/photos --encoder hashing --field txt --encoder-option dim=256
  mmshard embed data/photos --encoder sentence-transformers:/models/all-MiniLM-L6-v2 --field txt
  mmshard embed data/photos --encoder mypkg.encoders:make_encoder --field jpg --name emb_mine
Built-in encoders need no weights: pixels (image), hashing (text), mel_stats (audio).
Each sample's <name>.npy holds one vector (L2-normalised unless --no-normalize).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="write embeddings of a field as a sidecar field set",
                       description="Embed one field of every sample with an encoder, one "
                                   "task per shard; writes <dataset>/<name>/ sidecar shards.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    add_config_arg(p, "TokenizeConfig with one emb field set (field_sets: {emb_txt: "
                      "{kind: emb, encoder: ..., field: ...}}, device, batch_size)")
    p.add_argument("--encoder", help="pixels|hashing|mel_stats, sentence-transformers:PATH, "
                                     "open_clip:ARCH:WEIGHTS or package.module:factory")
    p.add_argument("--field", help="field to embed: jpg|png|webp|txt|flac|wav")
    p.add_argument("--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                   help="encoder keyword argument (repeatable; JSON values), e.g. dim=256")
    p.add_argument("--name", help="field set / member name (default emb_<field>)")
    p.add_argument("--dtype", choices=("float32", "float16"))
    p.add_argument("--no-normalize", action="store_const", const=True, help="keep raw vectors")
    p.add_argument("--device", help="cpu (default) or cuda[:N]")
    p.add_argument("--batch-size", type=positive_int, help="samples per call")
    p.add_argument("--overwrite", action="store_true")
    add_executor_args(p)
    p.set_defaults(func=run)


def embed_config(args: argparse.Namespace):
    """The :class:`TokenizeConfig` (one ``emb`` field set) of ``--config`` and the flags."""
    from ..pipelines.transform.job import TokenizeConfig

    conf = load_yaml(args.config)
    sets = dict(conf.get("field_sets") or {})
    if len(sets) > 1:
        raise ConfigError(f"embed writes one field set; --config has {sorted(sets)}")
    old_name, spec = next(iter(sets.items())) if sets else (None, {})
    spec = {"kind": "emb", **spec}
    for key, value in (("encoder", args.encoder), ("field", args.field),
                       ("dtype", args.dtype)):
        if value is not None:
            spec[key] = value
    if args.no_normalize:
        spec["normalize"] = False
    for text in args.encoder_option:
        key, eq, value = text.partition("=")
        if not eq or not key:
            raise ConfigError(f"--encoder-option wants KEY=VALUE, got {text!r}")
        try:
            spec[key] = json.loads(value)
        except ValueError:
            spec[key] = value
    spec.setdefault("dtype", "float32")
    spec.setdefault("normalize", True)
    if not spec.get("encoder") or not spec.get("field"):
        raise ConfigError("embed needs --encoder and --field (or them in --config)")
    name = args.name or old_name or f"emb_{spec['field']}"
    conf["field_sets"] = {name: spec}
    return job_config(TokenizeConfig.from_dict, args,
                      {"device": "device", "batch_size": "batch_size"}, base=conf), name


def run(args: argparse.Namespace) -> int:
    from ..pipelines.transform.job import tokenize

    config, name = embed_config(args)
    executor = make_executor_from_args(args)
    try:
        result = tokenize(args.dataset, config, executor=executor, overwrite=args.overwrite,
                          progress=not args.no_progress)
    finally:
        executor.close()
    s = result.stats[name]
    print(table([(name, s["ok"], s["failed"], s["skipped"], s["bytes"])],
                ("field set", "ok", "failed", "skipped", "bytes")))
    return 0
