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
  demo     the whole pipeline on a generated corpus     (mmshard demo /tmp/mmshard-demo)
Run `mmshard <command> --help` for its options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    from . import demo_cmd, ingest_cmd, inspect_cmd

    p = argparse.ArgumentParser(prog="mmshard", description="The data layer for multimodal "
                                "training.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ingest_cmd.add_parser(sub)
    inspect_cmd.add_parsers(sub)
    demo_cmd.add_parser(sub)
    return p


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
