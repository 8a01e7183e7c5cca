"""Shared CLI plumbing: YAML config + flag overrides, executor flags, summary tables."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError


def add_executor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray (default: embedded local cluster, or --address) or local "
                        "(in-process threads)")
    g.add_argument("--address", default=None,
                   help="join an existing Ray cluster (e.g. auto, 10.0.0.1:6379)")
    g.add_argument("--workers", type=int, default=None,
                   help="parallel tasks (default: all CPUs of the cluster / 1 for local)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


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
