"""The ingest planner in bounded memory: sources -> shards, never holding every input.

A 10-million-row URL table is planned with a memory ceiling set by ``run_rows`` (records
held at once per sort), not by the table:

1. each manifest is read in record batches (Parquet ``iter_batches``, pyarrow's streaming
   CSV and JSON readers) and every row becomes an input with the very function the
   in-memory reader uses (``sources.manifest_row``), spilled in row order; rows naming
   the same media (``--group-captions``/``--sample-per-row``/refused) are found from a
   64-bit hash per row (numpy) and confirmed exactly by an external sort of the
   candidates only.  Folder trees are listed in memory, as before (their listing is the
   file system's size anyway);
2. an external sort by ``(key, position)`` gives the key order: failed inputs that share
   a key are renamed (``sources._separate_failed``'s rule), duplicate keys are refused
   with the same message, ``.cls`` sidecars are read and the label set gathered;
3. an external sort by ``(split, layout, key)`` then yields the inputs in the order
   ``plan_shards`` cuts them, one shard at a time, with label ids from the vocabulary.

The contract, checked by tests/pipelines/test_plan_stream.py: the shards (names,
members, order, every field of every input) equal :func:`job.plan_shards` over
``collect_inputs`` + ``assign_label_ids``, for any reader batch size and run size.

Memory: one batch of rows, ``run_rows`` records per sort, one block per spilled run while
merging, 9 bytes per manifest row of hashes, the label names, and the inputs of one
shard.  A CSV whose column types change after its first block (pyarrow infers CSV types
over the whole file) is read whole instead, with a warning.

>>> import tempfile
>>> from mmshard.pipelines.ingest.job import IngestConfig
>>> plan = plan_inputs(["photos/"], IngestConfig(), tempfile.mkdtemp())  # doctest: +SKIP
>>> [s.name for s in plan.shards()]                                      # doctest: +SKIP
['train-000000']
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import SourceError
from ...keys import disambiguate_key
from ...samplers.splits import assign_split
from .captions import merged_sample, repeated_error, row_sample
from .extsort import ExternalSorter, SpillFile
from .labels import LabelVocab, build_vocab, read_cls_sidecars
from .layout import layout_of
from .sources import (
    InputItem,
    SourceOptions,
    bad_key,
    bad_keys_error,
    duplicate_keys_error,
    is_manifest,
    manifest_columns,
    manifest_row,
    tree_source_items,
)

if TYPE_CHECKING:  # job.py imports this module
    from .job import IngestConfig

__all__ = ["PlannedShard", "StreamedPlan", "cut_shards", "plan_inputs"]

log = logging.getLogger(__name__)
BATCH_ROWS = 16_384
RUN_ROWS = 100_000


@dataclass(frozen=True)
class PlannedShard:
    """One shard of the plan: its name, split and inputs (in the order they are written)."""

    name: str
    split: str
    items: tuple[InputItem, ...]


def cut_shards(laid: Iterable[tuple[str, str, InputItem]], max_samples: int,
               max_bytes: int | None) -> Iterator[PlannedShard]:
    """Cut ``(split, layout, item)`` triples, already in plan order (splits in turn,
    then layout, then key), into shards: a shard closes at ``max_samples`` inputs, at a
    new layout, or before ``max_bytes`` source bytes would be exceeded; names count per
    split (``train-000000`` ...)."""
    cur: list[InputItem] = []
    cur_split, cur_lay, cur_bytes, n = None, None, 0, 0
    for split, lay, it in laid:
        if split != cur_split:
            if cur:
                yield PlannedShard(f"{cur_split}-{n:06d}", cur_split, tuple(cur))
            cur, cur_split, cur_bytes, n = [], split, 0, 0
        elif cur and (len(cur) >= max_samples or lay != cur_lay or (
                max_bytes is not None and cur_bytes + it.size > max_bytes)):
            yield PlannedShard(f"{cur_split}-{n:06d}", cur_split, tuple(cur))
            n, cur, cur_bytes = n + 1, [], 0
        cur.append(it)
        cur_bytes += it.size
        cur_lay = lay
    if cur:
        yield PlannedShard(f"{cur_split}-{n:06d}", cur_split, tuple(cur))


# ------------------------------------------------------------------ records
def pack(it: InputItem) -> tuple:
    """An input as a plain tuple (what the sorts spill)."""
    return (it.key, it.source, it.media, it.sidecars, it.caption, it.label, it.label_id,
            it.group, it.meta, it.size, it.error)


def unpack(t: tuple) -> InputItem:
    return InputItem(key=t[0], source=t[1], media=t[2], sidecars=t[3], caption=t[4],
                     label=t[5], label_id=t[6], group=t[7], meta=t[8], size=t[9], error=t[10])


_KEY, _SOURCE, _MEDIA, _CAPTION, _GROUP, _ERROR = 0, 1, 2, 4, 7, 10


class _Retype(Exception):
    """A streamed CSV column changed type after its first block: read the file whole."""


def _manifest_batches(src: str, batch_rows: int, whole: bool) -> Iterator[Any]:
    """Yield the manifest's column names, then lists of row dicts (one per batch)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    from ...storage import open_input
    from .sources import _read_manifest

    lower = src.lower().split("?", 1)[0]
    csv = not lower.endswith((".parquet", ".jsonl", ".ndjson"))
    if whole:
        table = _read_manifest(src)
        yield table.column_names
        for b in table.to_batches(max_chunksize=batch_rows):
            yield b.to_pylist()
        return
    started = False
    try:
        with open_input(src) as f:
            if lower.endswith(".parquet"):
                pf = pq.ParquetFile(f, pre_buffer=False)  # one row group read at a time
                yield pf.schema_arrow.names
                started = True
                for rg in range(pf.num_row_groups):
                    for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg]):
                        yield b.to_pylist()
                return
            if not csv:
                reader = pajson.open_json(f)
            else:
                reader = pacsv.open_csv(
                    f, parse_options=pacsv.ParseOptions(
                        delimiter="\t" if lower.endswith(".tsv") else ","),
                    convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
            yield reader.schema.names
            started = True
            for b in reader:
                yield b.to_pylist()
    except FileNotFoundError as e:
        raise SourceError(f"manifest {src!r} not found") from e
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        if csv and started and isinstance(e, pa.ArrowInvalid):
            raise _Retype(str(e)) from e
        raise SourceError(f"cannot read manifest {src!r}: {e}") from e


@dataclass
class _RawManifest:
    """One manifest's rows as inputs, spilled in row order, with a media hash per row."""

    src: str
    raw: SpillFile
    hashes: np.ndarray  # int64 hash of the media tuple
    eligible: np.ndarray  # rows that may repeat (a non-empty first path)
    explicit_keys: bool


def _read_manifest_rows(src: str, si: int, opts: SourceOptions, work: str, batch_rows: int
                        ) -> _RawManifest:
    for whole in (False, True):
        raw = SpillFile(os.path.join(work, f"raw-{si}.pkl"))
        hashes: list[np.ndarray] = []
        eligible: list[np.ndarray] = []
        bad: list[str] = []
        nbad = i = 0
        try:
            batches = _manifest_batches(src, batch_rows, whole)
            mc = manifest_columns(src, next(batches), opts)
            for rows in batches:
                its = [manifest_row(row, i + j, mc, opts) for j, row in enumerate(rows)]
                i += len(its)
                hashes.append(np.fromiter((hash(it.media) for it in its), np.int64, len(its)))
                eligible.append(np.fromiter((bool(it.media and it.media[0][1]) for it in its),
                                            np.bool_, len(its)))
                for it in its:
                    if mc.key_col and bad_key(it.key):
                        nbad += 1
                        bad += [it.key] if len(bad) < 5 else []
                    raw.append(pack(it))
        except _Retype as e:
            raw.remove()
            log.warning("manifest %s: a column changes type after the first block (%s); "
                        "reading it whole", src, e)
            continue
        if nbad:
            raw.remove()
            raise bad_keys_error(bad, nbad, mc)
        raw.close()
        return _RawManifest(src, raw, _cat(hashes, np.int64), _cat(eligible, np.bool_),
                            bool(mc.key_col))
    raise AssertionError("unreachable")  # pragma: no cover


def _cat(arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _repeat_candidates(m: _RawManifest) -> np.ndarray | None:
    """Rows whose media hash another eligible row shares (None: no row can repeat)."""
    h = m.hashes[m.eligible]
    if h.size < 2:
        return None
    s = np.sort(h)
    dup = np.unique(s[1:][s[1:] == s[:-1]])
    if not dup.size:
        return None
    return m.eligible & np.isin(m.hashes, dup)


def _manifest_records(m: _RawManifest, si: int, opts: SourceOptions, work: str,
                      run_rows: int) -> Iterator[tuple[tuple[int, int], tuple]]:
    """``((source index, position), record)`` of one manifest, after the repeated-path
    rule of ``opts.repeated_paths`` (captions.py; any order: the caller sorts)."""
    cand = None if m.explicit_keys else _repeat_candidates(m)
    if cand is None:
        for i, rec in enumerate(m.raw):
            yield (si, i), rec
        return
    sorter = ExternalSorter(os.path.join(work, f"media-{si}"), run_rows, "media")
    for i, rec in enumerate(m.raw):
        if cand[i]:
            sorter.add((rec[_MEDIA], i), rec)
    groups = ((media, [(k[1], r) for k, r in g])
              for media, g in groupby(sorter.items(), key=lambda kv: kv[0][0]))
    mode = opts.repeated_paths
    if mode in ("error", "rows"):
        count, first = 0, []  # the three repeated media with the smallest first row
        for media, rows in groups:
            if len(rows) > 1:
                count += 1
                entry = (rows[0][0], media, [i for i, _ in rows[:4]])
                if len(first) < 3:
                    heapq.heappush(first, (-entry[0], entry))
                elif entry[0] < -first[0][0]:
                    heapq.heapreplace(first, (-entry[0], entry))
        sorter.remove()
        if count and mode == "error":
            shown = sorted(e for _, e in first)
            raise repeated_error(m.src, count, [(media, ix) for _, media, ix in shown])
        for i, rec in enumerate(m.raw):
            yield (si, i), (pack(row_sample(unpack(rec), i, opts.key_scheme)) if count
                            else rec)
        return
    for i, rec in enumerate(m.raw):  # group: the rows that cannot repeat, as they are
        if not cand[i]:
            yield (si, i), rec
    for _, rows in groups:
        i0, rec0 = rows[0]
        if len(rows) == 1:
            yield (si, i0), rec0
        else:
            merged = merged_sample(unpack(rec0), [r[_CAPTION] for _, r in rows],
                                   [i for i, _ in rows])
            yield (si, i0), pack(merged)
    sorter.remove()


# ------------------------------------------------------------------ key order
def _separated(sorted_pairs: Iterator[tuple[tuple, tuple]]
               ) -> Iterator[tuple[bool, tuple, tuple]]:
    """``(renamed, (key, pos), record)`` in ``(key, pos)`` order of the input, with the
    rule of ``sources._separate_failed`` applied (renamed ones carry their new key)."""
    for key, grp in groupby(sorted_pairs, key=lambda kv: kv[0][0]):
        members = list(grp)
        if len(members) < 2:
            (k, rec), = members
            yield False, k, rec
            continue
        failed = [j for j, (_, rec) in enumerate(members) if rec[_ERROR]]
        if len(failed) == len(members):
            failed = failed[1:]  # the first keeps the key
        new = {j: disambiguate_key(key, f"{members[j][1][_SOURCE]}#{n}")
               for n, j in enumerate(failed)}
        for j, (k, rec) in enumerate(members):
            if j in new:
                yield True, (new[j], k[1]), (new[j], *rec[1:])
            else:
                yield False, k, rec


class _DupCheck:
    """Adjacent equal keys of a key-ordered stream: how many, and the first five."""

    def __init__(self) -> None:
        self.count, self.shown, self.prev = 0, [], None

    def see(self, rec: tuple) -> None:
        if self.prev is not None and self.prev[_KEY] == rec[_KEY]:
            self.count += 1
            if len(self.shown) < 5:
                self.shown.append((unpack(self.prev), unpack(rec)))
        self.prev = rec

    def check(self) -> None:
        if self.count:
            raise duplicate_keys_error(self.count, self.shown)


# ------------------------------------------------------------------ the plan
class StreamedPlan:
    """Phase 1 done (every SourceError raised, labels known); :meth:`shards` yields the
    plan.  ``count`` inputs, ``ignored`` files, ``labels`` the vocabulary."""

    def __init__(self, config: IngestConfig, laid: ExternalSorter, labels: LabelVocab | None,
                 ignored: list[str]) -> None:
        self.config, self._laid, self.labels, self.ignored = config, laid, labels, ignored
        self.count = laid.count

    def items(self) -> Iterator[tuple[str, str, InputItem]]:
        """``(split, layout, input)`` in plan order, label ids set."""
        splits = [name for name, _ in self.config.splits]
        vocab = self.labels
        ids = {n: i for i, n in enumerate(vocab.names)} if vocab and vocab.kind == "names" \
            else None
        for (si, lay, _), rec in self._laid.items():
            it = unpack(rec)
            if vocab is not None and it.label is not None and not it.error:
                if ids is None:
                    it = replace(it, label=str(int(it.label)), label_id=int(it.label))
                else:
                    it = replace(it, label_id=ids[it.label])
            yield splits[si], lay, it

    def shards(self) -> Iterator[PlannedShard]:
        """The plan, one shard at a time (equal to ``plan_shards``'s list)."""
        return cut_shards(self.items(), self.config.max_samples, self.config.max_bytes)

    def close(self) -> None:
        """Delete the spilled runs (after the shards were read)."""
        self._laid.remove()


def _key_sorted(sources: Sequence[str], opts: SourceOptions, work: str, batch_rows: int,
                run_rows: int, ignored: list[str]) -> ExternalSorter:
    keyed = ExternalSorter(os.path.join(work, "keys"), run_rows, "keys")
    for si, src in enumerate(sources):
        if is_manifest(src):
            m = _read_manifest_rows(src, si, opts, work, batch_rows)
            for pos, rec in _manifest_records(m, si, opts, work, run_rows):
                keyed.add((rec[_KEY], pos), rec)
            m.raw.remove()
        else:
            for n, it in enumerate(tree_source_items(src, opts, ignored)):
                keyed.add((it.key, (si, n)), pack(it))
    return keyed


class _View:
    """The fields ``layout_of`` reads, over a record (no InputItem built per row)."""

    __slots__ = ("media", "sidecars", "caption", "label")

    def __init__(self, rec: tuple) -> None:
        self.media, self.sidecars, self.caption, self.label = rec[2], rec[3], rec[4], rec[5]


def _with_labels(block: list[tuple], labels: set[str]) -> list[tuple]:
    """``.cls`` sidecars read and blank labels dropped, as ``assign_label_ids`` does."""
    if any(e == "cls" for rec in block for e, _ in rec[3]):
        block = [pack(it) for it in read_cls_sidecars([unpack(r) for r in block])]
    out = []
    for rec in block:
        label = rec[5]
        if label is not None and not label.strip():
            rec = (*rec[:5], None, *rec[6:])  # an empty manifest cell: no label
        elif label is not None and not rec[_ERROR]:
            labels.add(label)
        out.append(rec)
    return out


def plan_inputs(sources: Sequence[str], config: IngestConfig, work: str, *,
                batch_rows: int = BATCH_ROWS, run_rows: int = RUN_ROWS) -> StreamedPlan:
    """Plan ``sources`` in bounded memory, spilling to the private folder ``work``.

    Raises SourceError (no sources, unreadable manifest, bad key column, repeated paths,
    duplicate keys, a folder without media) before returning, like ``collect_inputs``.
    """
    if not sources:
        raise SourceError("no sources given")
    opts = config.sources
    ignored: list[str] = []
    keyed = _key_sorted(sources, opts, work, batch_rows, run_rows, ignored)
    split_ix = {name: i for i, (name, _) in enumerate(config.splits)}
    laid = ExternalSorter(os.path.join(work, "laid"), run_rows, "laid")
    labels: set[str] = set()
    renamed = ExternalSorter(os.path.join(work, "renamed"), run_rows, "renamed")
    dups = _DupCheck()
    block: list[tuple] = []

    one_split = len(config.splits) == 1  # assign_split's answer, without the hash

    def flush() -> None:
        for rec in _with_labels(block, labels):
            split = 0 if one_split else split_ix[assign_split(
                rec[_GROUP] or rec[_KEY], config.splits, config.split_seed)]
            laid.add((split, layout_of(_View(rec), config.image, config.audio), rec[_KEY]),
                     rec)
        block.clear()

    for was_renamed, k, rec in _separated(keyed.items()):
        if was_renamed:
            renamed.add(k, rec)
        else:
            dups.see(rec)
        block.append(rec)
        if len(block) >= 1024:
            flush()
    flush()
    if renamed.count:  # new keys may meet others: check the merged key order again
        dups = _DupCheck()
        kept = ((k, rec) for r, k, rec in _separated(keyed.items()) if not r)
        for _, rec in heapq.merge(kept, renamed.items(), key=lambda kv: kv[0]):
            dups.see(rec)
    dups.check()
    keyed.remove()
    renamed.remove()
    return StreamedPlan(config, laid, build_vocab(labels), ignored)
