"""Leakage-safe split assignment by a stable hash of the group id.

Whole groups go to one split (a video's clips, a speaker's utterances), decided by
``sha256(seed, group)`` alone: the same group lands in the same split in every run, on
every machine, whatever else is in the dataset.

>>> spec = parse_split_spec("train=0.9,val=0.05,test=0.05")
>>> spec
(('train', 0.9), ('val', 0.05), ('test', 0.05))
>>> assign_split("speaker-17", spec) == assign_split("speaker-17", spec)
True
"""

from __future__ import annotations

import hashlib
import math
import re

from ..errors import ConfigError

__all__ = ["assign_split", "parse_split_spec", "split_unit"]

SplitSpec = tuple[tuple[str, float], ...]
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def parse_split_spec(text: str) -> SplitSpec:
    """Parse ``"train=0.9,val=0.1"`` (the CLI edge); weights must sum to 1."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError("--split is empty; example: --split train=0.9,val=0.05,test=0.05")
    out = []
    for p in parts:
        name, eq, w = p.partition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = float("nan")
        if not eq or not math.isfinite(weight):
            raise ConfigError(f"bad split {p!r} in {text!r}; expected name=weight, "
                              "e.g. train=0.9,val=0.1")
        out.append((name.strip(), weight))
    return validate_split_spec(tuple(out))


def validate_split_spec(spec: SplitSpec) -> SplitSpec:
    names = [n for n, _ in spec]
    if len(set(names)) != len(names):
        raise ConfigError(f"split names repeat: {names}")
    for name, w in spec:
        if not _NAME.match(name):
            raise ConfigError(f"split name {name!r} must match [A-Za-z0-9_]+")
        if w < 0:
            raise ConfigError(f"split weight of {name!r} is negative: {w}")
    total = sum(w for _, w in spec)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split weights must sum to 1, got {total:g} ({spec})")
    return tuple((n, float(w)) for n, w in spec)


def split_unit(group: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) from (seed, group), stable across runs and machines."""
    h = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(group: str, spec: SplitSpec, seed: int = 0) -> str:
    """The split of ``group`` under ``spec`` (cumulative weights over split_unit)."""
    u = split_unit(group, seed)
    acc = 0.0
    for name, w in spec:
        acc += w
        if u < acc:
            return name
    return spec[-1][0]
