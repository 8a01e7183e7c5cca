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
    mine_cmd.add_parser(sub)
    demo_cmd.add_parser(sub)
    dedup_cmd.add_parser(sub)
    audit_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; the one place exit codes are decided (see cli/_common.py):
    0 ok, 2 bad input/config or an output that cannot be written (one line, no
    traceback), 3 failure rate over the limit (the job committed), 1 anything else."""
    from ..pipelines.result import FailureRateError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FailureRateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except MmshardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # C8: a full, read-only or forbidden output is one line, exit 2
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                           errno.EPERM):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}: free space, fix the folder's rights or choose "
              "another --out; committed shards are kept and a rerun resumes", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
