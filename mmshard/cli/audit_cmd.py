"""``mmshard audit``: cross-split (or against an eval set) leakage and the dataset contract."""

from __future__ import annotations

import argparse

from ._common import add_executor_args, load_yaml, make_executor_from_args, table

EXAMPLE = """\
example:
  mmshard audit data/photos                                # train vs val vs test
  mmshard audit data/photos --against data/eval --max-leaks 0 || echo "eval set leaks"
  mmshard audit data/photos --methods exact,phash --threshold 6
writes data/photos/audit/{audit.parquet,summary.json} (or --out DIR).
exit status: 0 when leaks <= --max-leaks and the contract holds; 1 otherwise.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="leakage between splits or against an eval set",
                       description="Find exact, perceptual-hash and embedding near "
                                   "duplicates across splits (or against another dataset), "
                                   "groups in several splits, and ledger mismatches.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--against", default=None, help="an external dataset (e.g. the eval set)")
    p.add_argument("--config", default=None, help="YAML with AuditConfig fields; flags override")
    p.add_argument("--methods", default=None,
                   help="comma list of exact, phash, embedding, group (default all)")
    p.add_argument("--hash", choices=("phash", "dhash"), default=None, help="default phash")
    p.add_argument("--threshold", type=int, default=None, help="Hamming bits of 64 (10)")
    p.add_argument("--field-set", default=None, help="embedding field set (default: an emb* "
                                                     "set both sides have)")
    p.add_argument("--eps", type=float, default=None, help="embedding: cosine >= 1 - eps (0.05)")
    p.add_argument("--max-leaks", type=int, default=None, help="fail above this many (default 0)")
    p.add_argument("--out", default=None, help="output folder (default DATASET/audit)")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.curate.audit import AuditConfig, audit

    data = load_yaml(args.config)
    if args.methods is not None:
        data["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in ("hash", "threshold", "field_set", "eps", "max_leaks"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    config = AuditConfig.from_dict(data)
    executor = make_executor_from_args(args)
    try:
        r = audit(args.dataset, config, against=args.against, out=args.out, executor=executor,
                  progress=not args.no_progress)
    finally:
        executor.close()
    s = r.stats
    rows = [(x["split_a"], x["split_b"], x["method"], x["pairs"]) for x in s["by_pair"]]
    print(table(rows or [("-", "-", "-", 0)], ("split a", "split b", "method", "pairs")))
    for p in s["problems"]:
        print(f"contract: {p}")
    verdict = "passed" if r.passed else "FAILED"
    print(f"{verdict}: {s['leaks']} leak(s) (max {config.max_leaks}), "
          f"{len(s['problems'])} contract problem(s); pairs in {r.out}/audit.parquet")
    return 0 if r.passed else 1
