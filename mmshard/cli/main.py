"""The ``mmshard`` command: each subcommand builds a config and calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import MmshardError

EPILOG = """\
commands:
  ingest   raw media + captions -> WebDataset shards   (mmshard ingest photos/ --out ds)
  inspect  summarise a dataset                          (mmshard inspect ds)
  verify   re-read and cross-check a dataset            (mmshard verify ds)
  tokenize derived fields as sidecar shards             (mmshard tokenize ds --fields mel)
  fit-codebook  k-means codebook on a field  (mmshard fit-codebook ds --field mfcc --k 500 ...)
  train-vq VQ-VAE image tokenizer from a dataset       (mmshard train-vq ds --k 1024 ...)
  clips    cut videos into clips (a new dataset)        (mmshard clips ds --out clips --window 10)
  embed    embeddings of a field as a sidecar           (mmshard embed ds --encoder hashing ...)
  mine     FAISS hard negatives                         (mmshard mine --queries q --out n.parquet)
  demo     the whole pipeline on a generated corpus     (mmshard demo /tmp/mmshard-demo)
  dedup    near-duplicate sets and a keep-list          (mmshard dedup ds --method phash)
  audit    leakage across splits / against an eval set  (mmshard audit ds --against eval)
  report   self-contained HTML report                   (mmshard report ds --out r.html)
Run `mmshard <command> --help` for its options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    from . import (
        audit_cmd,
        clips_cmd,
        dedup_cmd,
        demo_cmd,
        embed_cmd,
        ingest_cmd,
        inspect_cmd,
        mine_cmd,
        report_cmd,
        tokenize_cmd,
        vq_cmd,
    )

    p = argparse.ArgumentParser(prog="mmshard", description="The data layer for multimodal "
                                "training.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ingest_cmd.add_parser(sub)
    inspect_cmd.add_parsers(sub)
    tokenize_cmd.add_parsers(sub)
    vq_cmd.add_parser(sub)
    clips_cmd.add_parser(sub)
    embed_cmd.add_parser(sub)
    _add_mine(sub, mine_cmd)
    demo_cmd.add_parser(sub)
    dedup_cmd.add_parser(sub)
    audit_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    return p


def _add_mine(sub: argparse._SubParsersAction, mine_cmd) -> None:
    p = sub.add_parser("mine", help="FAISS hard-negative mining with false-negative guards",
                       description="Mine hard negatives for contrastive training from query "
                                   "and corpus embeddings.", epilog=mine_cmd.EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    mine_cmd.add_cli_arguments(p)
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where query chunks run (default local; ray: one task per chunk)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        import json

        from ..pipelines.mine.job import mine
        from ._common import make_executor_from_args

        config = mine_cmd.config_from_args(args)
        executor = make_executor_from_args(args)
        try:
            result = mine(config, executor=executor, progress=not args.no_progress)
        finally:
            executor.close()
        summary = getattr(result, "summary", None)
        print(json.dumps(summary, indent=1, default=str) if summary is not None else result)
        return 0

    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MmshardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
