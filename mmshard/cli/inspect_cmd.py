"""``mmshard inspect`` and ``mmshard verify``."""

from __future__ import annotations

import argparse

from ._common import human_bytes, non_negative_int, table

INSPECT_EXAMPLE = """\
example:
  mmshard inspect data/photos            # counts, sizes, failures, a few rows
  mmshard inspect data/photos --rows 20
"""
VERIFY_EXAMPLE = """\
example:
  mmshard verify data/photos && echo sound
exit status: 0 when index, shards, manifest, ledger and stats agree; 1 otherwise
(the first mismatches are printed).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarise a dataset folder",
                       description="Print counts per split and modality, sizes, failures by "
                                   "reason and a few sample rows.", epilog=INSPECT_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--rows", type=non_negative_int, default=5, help="sample rows to show")
    p.set_defaults(func=run_inspect)
    v = sub.add_parser("verify", help="re-read every shard and check the dataset agrees",
                       description="Re-read every shard; check index.json sizes/sha256/"
                                   "counts, manifest order, ledger and stats agree.",
                       epilog=VERIFY_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("dataset")
    v.set_defaults(func=run_verify)


def run_inspect(args: argparse.Namespace) -> int:
    from ..verify import inspect_dataset

    info = inspect_dataset(args.dataset, rows=args.rows)
    print(f"dataset {info['name']}: {info['shards']} shards; fields: {', '.join(info['fields'])}"
          + (f"; sidecars: {', '.join(info['sidecars'])}" if info["sidecars"] else ""))
    print()
    print(table([(r["split"], r["modality"], r["samples"], human_bytes(r["bytes"]))
                 for r in info["by_split_modality"]], ("split", "modality", "samples", "bytes")))
    print()
    print("ledger: " + ", ".join(f"{k} {v}" for k, v in sorted(info["status"].items())))
    if info["failures"]:
        print()
        print(table(list(info["failures"].items()), ("failure reason", "count")))
        print()
        print(table([(r["key"], r["reason"], r["detail"][:70]) for r in info["failed_examples"]],
                    ("failed key", "reason", "detail")))
    if info["samples"]:
        print()
        cols = tuple(info["samples"][0])
        print(table([tuple("" if r[c] is None else r[c] for c in cols) for r in info["samples"]],
                    cols))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..verify import verify_dataset

    problems = verify_dataset(args.dataset)
    if problems:
        print(f"{args.dataset}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"{args.dataset}: ok")
    return 0
