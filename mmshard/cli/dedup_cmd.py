"""``mmshard dedup``: exact, perceptual-hash and semantic near-duplicate sets."""

from __future__ import annotations

import argparse

from ._common import add_executor_args, load_yaml, make_executor_from_args, table

EXAMPLE = """\
example:
  mmshard dedup data/photos                                # pHash, 10 bits of 64
  mmshard dedup data/photos --method exact
  mmshard dedup data/photos --method semantic --field-set emb_jpg --eps 0.05
  python -c "import mmshard; mmshard.Loader('data/photos', batch_size=64, filter='dedup')"
writes data/photos/dedup/{dedup.parquet,keep.parquet,summary.json}; shards are not rewritten.
keep rule: the member with the most pixels, then the most bytes, then the first key.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dedup", help="near-duplicate sets and a keep-list (shards untouched)",
                       description="Find duplicate sets (exact sha256, pHash/dHash by "
                                   "multi-index hashing, or SemDeDup on an embedding field "
                                   "set) and write dedup/dedup.parquet and dedup/keep.parquet.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--config", default=None, help="YAML with DedupConfig fields; flags override")
    p.add_argument("--method", choices=("exact", "phash", "dhash", "semantic"), default=None,
                   help="default phash")
    p.add_argument("--threshold", type=int, default=None,
                   help="phash/dhash: Hamming bits of 64 (default 10)")
    p.add_argument("--field-set", default=None,
                   help="semantic: embedding sidecar (default: the only emb* one) or a "
                        ".parquet with key, vector")
    p.add_argument("--eps", type=float, default=None,
                   help="semantic: duplicates have cosine >= 1 - eps (default 0.05)")
    p.add_argument("--clusters", type=int, default=None,
                   help="semantic: k-means clusters (default: vectors / 1000)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keyframes", default=None,
                   help="sidecar with video keyframes (kf.NNN.jpg) for perceptual hashes")
    p.add_argument("--no-overwrite", action="store_true",
                   help="refuse to replace a dedup/ made with another config")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.curate.dedup import DedupConfig, dedup

    data = load_yaml(args.config)
    for name in ("method", "threshold", "field_set", "eps", "clusters", "seed", "keyframes"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    config = DedupConfig.from_dict(data)
    executor = make_executor_from_args(args)
    try:
        r = dedup(args.dataset, config, executor=executor, progress=not args.no_progress,
                  overwrite=not args.no_overwrite)
    finally:
        executor.close()
    s = r.stats
    print(table([(s["samples"], s["duplicate_sets"], s["duplicates"], s["kept"])],
                ("samples", "duplicate sets", "duplicates", "kept")))
    for reason, n in sorted(s.get("not_hashed", {}).items()):
        print(f"not hashed ({reason}): {n}")
    print(f"wrote {r.out}/dedup.parquet and keep.parquet")
    return 0
