"""Manifests that name the same media in several rows (COCO-style: one row per caption).

``SourceOptions.repeated_paths`` decides what such rows become:

- ``error`` (default): refused before any work, naming the paths and both fixes below
  (a ``--key-column`` with unique values also works: then every row is its own sample);
- ``rows`` (``--sample-per-row``): one sample per row.  Every row of that manifest gets the
  key ``<path key>_row<N>`` (N = the row's index in the manifest; ``--key-scheme hash``:
  the hash of ``<path>#row<N>``), the ledger source ``<path>#row<N>``, and its own copy
  of the media bytes.  (``--dedup`` would
  then keep only the first row of each medium: do not combine them.)
- ``group`` (``--group-captions``): the rows that name the same media (same resolved
  paths) become one sample: ``txt`` holds the first caption, ``json.meta.captions`` all
  of them in row order and ``json.meta.rows`` their row indices; the other columns
  (label, group, metadata) come from the first row.

>>> from mmshard.pipelines.ingest.sources import InputItem
>>> rows = [InputItem(key="cat", source="/d/cat", media=(("jpg", "/d/cat.jpg"),), caption=c)
...         for c in ("a cat", "a small cat")]
>>> [it.key for it in resolve_repeated(rows, "rows", "path", "m.csv")]
['cat_row0', 'cat_row1']
>>> one, = resolve_repeated(rows, "group", "path", "m.csv")
>>> one.caption, one.meta["captions"]
('a cat', ['a cat', 'a small cat'])
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...errors import SourceError
from ...keys import MAX_KEY_LEN, hash_key

if TYPE_CHECKING:  # sources.py imports this module
    from .sources import InputItem

__all__ = ["REPEATED_PATHS", "merged_sample", "repeated_error", "resolve_repeated", "row_sample"]

REPEATED_PATHS = ("error", "rows", "group")


def _row_key(it: InputItem, i: int, scheme: str) -> str:
    if scheme == "hash":
        return hash_key(f"{it.source}#row{i}")
    key = f"{it.key}_row{i}"
    return key if len(key) <= MAX_KEY_LEN else hash_key(f"{it.source}#row{i}")


def resolve_repeated(items: Sequence[InputItem], mode: str, key_scheme: str, src: str
                     ) -> list[InputItem]:
    """Apply ``mode`` to the rows (``items``, in manifest order) of one manifest."""
    by_media: dict[tuple, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if it.media and it.media[0][1]:  # rows with an empty path stay apart
            by_media[it.media].append(i)
    repeated = {m: ix for m, ix in by_media.items() if len(ix) > 1}
    if not repeated:
        return list(items)
    if mode == "rows":  # the ledger's source names the row: one ledger row per input
        return [row_sample(it, i, key_scheme) for i, it in enumerate(items)]
    if mode == "group":
        out, done = [], set()
        for i, it in enumerate(items):
            ix = by_media.get(it.media, [i])
            if i in done:
                continue
            done.update(ix)
            if len(ix) == 1:
                out.append(it)
                continue
            out.append(merged_sample(it, [items[j].caption for j in ix], ix))
        return out
    raise repeated_error(src, len(repeated), list(repeated.items())[:3])


def repeated_error(src: str, count: int, first: list[tuple[tuple, list[int]]]
                   ) -> SourceError:
    """The refusal of ``count`` repeated media paths; ``first``: the first three
    ``(media, rows)`` in order of their first row."""
    shown = "; ".join(f"{m[0][1]} (rows {', '.join(map(str, ix[:4]))})" for m, ix in first[:3])
    return SourceError(
        f"manifest {src!r}: {count} media path(s) appear in several rows: {shown}. "
        "For one sample per medium with all its captions pass --group-captions; for one "
        "sample per row (keys <path>_row<N>) pass --sample-per-row; or give a --key-column "
        "with unique values")


def row_sample(it: InputItem, i: int, key_scheme: str) -> InputItem:
    """Row ``i`` of a ``rows``-mode manifest as its own sample (key and source name it)."""
    return dataclasses.replace(it, key=_row_key(it, i, key_scheme), source=f"{it.source}#row{i}")


def merged_sample(first: InputItem, captions: list[str | None], rows: list[int]
                  ) -> InputItem:
    """The one ``group``-mode sample of the rows ``rows`` naming the media of ``first``
    (the first of them), with the captions of all of them in row order."""
    caps = [c for c in captions if c is not None]
    meta = {**first.meta, "captions": caps, "rows": rows}
    return dataclasses.replace(first, caption=caps[0] if caps else None, meta=meta)
