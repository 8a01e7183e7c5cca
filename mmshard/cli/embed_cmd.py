"""``mmshard embed``: embeddings as a sidecar field set (a thin wrapper over tokenize)."""

from __future__ import annotations

import argparse

from ._common import add_executor_args, make_executor_from_args, table

EXAMPLE = """\
examples:
  mmshard embed data/photos --encoder pixels --field jpg            # -> data/photos/emb_jpg/
  mmshard embed data/photos --encoder hashing --field txt --dtype float16
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
    p.add_argument("--encoder", required=True,
                   help="pixels|hashing|mel_stats, sentence-transformers:PATH, "
                        "open_clip:ARCH:WEIGHTS or package.module:factory")
    p.add_argument("--field", required=True, help="field to embed: jpg|png|webp|txt|flac|wav")
    p.add_argument("--name", help="field set / member name (default emb_<field>)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--no-normalize", action="store_true", help="keep raw vectors")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.transform.job import tokenize

    name = args.name or f"emb_{args.field}"
    spec = {"kind": "emb", "encoder": args.encoder, "field": args.field,
            "dtype": args.dtype, "normalize": not args.no_normalize}
    executor = make_executor_from_args(args)
    try:
        result = tokenize(args.dataset, {name: spec}, executor=executor, device=args.device,
                          overwrite=args.overwrite, progress=not args.no_progress)
    finally:
        executor.close()
    s = result.stats[name]
    print(table([(name, s["ok"], s["failed"], s["skipped"], s["bytes"])],
                ("field set", "ok", "failed", "skipped", "bytes")))
    return 0
