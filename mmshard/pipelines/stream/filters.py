"""Loader filters (C4): plan an epoch without some samples, shards untouched.

``filter=`` takes one of:

- ``"dedup"``: each dataset's ``dedup/keep.parquet`` (written by ``mmshard dedup``);
- a path to a keep-list: ``.parquet`` with a ``key`` column, or ``.txt`` with one key
  per line (keys of other datasets or splits are ignored);
- a callable taking a manifest row (dict) and returning True to keep the sample.

The result is a bool mask per dataset (True = keep) that the planner applies before
the epoch is partitioned, so order, equal batches per rank and exact resume work as
if the removed samples did not exist.

>>> keep_from_keys(np.array(["a", "b", "c"], dtype=object), {"c", "a"}).tolist()
[True, False, True]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ...errors import ConfigError, ShardError
from ...storage import Storage, open_input
from .source import ResolvedSource, manifest_rows

__all__ = ["filter_fingerprint", "keep_from_keys", "keep_mask"]

FILTER_KINDS = ("'dedup'", "a keep-list path (.parquet with a key column, .txt)",
                "a callable(manifest row) -> bool")


def keep_from_keys(keys: np.ndarray, wanted: Iterable[str]) -> np.ndarray:
    """True where ``keys[i]`` is in ``wanted``."""
    want = set(map(str, wanted))
    return np.fromiter((str(k) in want for k in keys.tolist()), dtype=bool, count=keys.size)


def _read_keys(path: str, storage_options: dict | None = None) -> list[str]:
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            with open_input(path, storage_options) as f:
                table = pq.read_table(f)
            if "key" not in table.column_names:
                raise ConfigError(f"keep-list {path} has no 'key' column (columns: "
                                  f"{', '.join(table.column_names)})")
            return [str(k) for k in table.column("key").to_pylist()]
        if path.endswith(".txt"):
            with open_input(path, storage_options) as f:
                return [ln.strip() for ln in f.read().decode("utf-8").splitlines()
                        if ln.strip()]
    except OSError as e:
        raise ShardError(f"cannot read keep-list {path}: {e}") from e
    raise ConfigError(f"keep-list {path!r} must end in .parquet or .txt")


def keep_mask(src: ResolvedSource, spec: str | Callable[[dict[str, Any]], bool] | None
              ) -> np.ndarray | None:
    """The keep mask of one resolved source (None = no filter)."""
    if spec is None:
        return None
    keys = src.meta.keys
    if keys is None:
        raise ConfigError(f"source {src.name!r} has no sample keys: a filter needs a dataset "
                          "folder or a ShardListSource without nsamples")
    if callable(spec):
        return np.fromiter((bool(spec(r)) for r in manifest_rows(src)), dtype=bool,
                           count=keys.size)
    if not isinstance(spec, str):
        raise ConfigError(f"filter must be one of {', '.join(FILTER_KINDS)}; got "
                          f"{type(spec).__name__}")
    if spec == "dedup":
        if src.root is None:
            raise ConfigError("filter='dedup' needs a dataset folder (it reads dedup/keep.parquet)")
        store = Storage(src.root, src.storage_options)
        if not store.exists("dedup/keep.parquet"):
            raise ConfigError(f"{store.path('dedup/keep.parquet')} not found: run "
                              f"`mmshard dedup {src.root}` first")
        return keep_from_keys(keys, _read_keys(store.path("dedup/keep.parquet"),
                                               src.storage_options))
    return keep_from_keys(keys, _read_keys(spec, src.storage_options))


def filter_fingerprint(masks: list[np.ndarray | None]) -> list[Any]:
    """What a resumed loader must match: kept counts and a digest of the masks."""
    h = hashlib.sha256()
    for m in masks:
        h.update(b"-" if m is None else np.packbits(m).tobytes())
    return [None if m is None else int(m.sum()) for m in masks] + [h.hexdigest()[:16]]
