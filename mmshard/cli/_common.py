"""Shared CLI plumbing: the one convention every ``mmshard`` command follows.

- ``--config FILE.yaml`` holds the WHOLE job config (the fields of the job's config
  dataclass, nested options as nested mappings); every flag that is given overrides
  its field (:func:`job_config`).  Flags that set config fields default to None so
  "not given" is visible.
- ``--executor ray|local`` (default ray), ``--address``, ``--workers N`` (parallel
  tasks, >= 1) and ``--no-progress`` on every command that runs tasks
  (:func:`add_executor_args`).
- Exit codes (set once, in :func:`mmshard.cli.main.main`): 0 ok, 2 bad input or config
  (one line, no traceback), 3 failure rate over ``max_failure_rate`` (the job
  committed), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


def _int_at_least(text: str, lo: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {v}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse turns the error into exit 2 naming the flag).

    >>> positive_int("3")
    3
    """
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def add_config_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", metavar="FILE.yaml",
                   help=f"YAML with the whole job config ({what} fields); flags override it")


def add_executor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray (default: embedded local cluster, or --address) or local "
                        "(in-process threads)")
    g.add_argument("--address", default=None,
                   help="join an existing Ray cluster (e.g. auto, 10.0.0.1:6379)")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="parallel tasks (default: all CPUs of the cluster / 1 for local)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def job_config(from_dict: Callable[[dict[str, Any]], T], args: argparse.Namespace,
               flags: Mapping[str, str], *, base: dict[str, Any] | None = None) -> T:
    """The job config: ``--config`` YAML (or ``base``), then every given flag.

    ``flags`` maps an argparse dest to a dotted config path (``"image_size":
    "image.size"``).  Type errors of a hand-written YAML become a ConfigError naming
    the file.
    """
    data = dict(base if base is not None else load_yaml(getattr(args, "config", None)))
    for dest, path in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            set_path(data, path, value)
    try:
        return from_dict(data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        where = f" in {args.config}" if getattr(args, "config", None) else ""
        raise ConfigError(f"bad config{where}: {e}") from e


def make_executor_from_args(args: argparse.Namespace):
    from ..pipelines.executor import make_executor

    if args.executor == "local" and args.address:
        raise ConfigError("--address needs --executor ray")
    return make_executor(args.executor, workers=args.workers, address=args.address)


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read --config {path!r}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path!r} must hold a mapping at the top level")
    return data


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_path(d, "image.size", 256)`` creating nested dicts as needed."""
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """A plain aligned text table."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def eprint(*a: Any) -> None:
    print(*a, file=sys.stderr)
