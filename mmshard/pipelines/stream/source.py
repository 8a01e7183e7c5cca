"""Where the loader's samples come from: dataset folders or plain WebDataset shard lists.

A source is resolved once (in the main process) into a :class:`ResolvedSource`: the
shard URLs, their sample counts, sidecar shard URLs and per-sample metadata
(:class:`~mmshard.samplers.batching.SampleMeta`).  Samples are then read by position
``(shard, offset)`` with :class:`ShardReader`, which indexes each tar's member headers
once (a header scan: seeks, no payload reads) and reads members by offset, joining
sidecar fields by key.  Readers hold open files, so each worker process builds its own
(they pickle without their caches).

- :class:`DatasetSource`: an mmshard dataset folder; counts from ``index.json``, keys,
  groups and image sizes from ``manifest.parquet`` (row order within a shard = tar
  order, or an ``offset`` column when present), sidecars (``mel/`` ...) joined by key.
- :class:`ShardListSource`: any list of WebDataset tar paths/URLs.  Sample counts come
  from ``nsamples`` when given, else from a counting pass over the tars' headers (which
  also yields the keys).  No groups or sizes: group-aware and bucket batching need a
  dataset folder.

>>> ShardListSource(urls=("a.tar",), nsamples=(3,)).urls
('a.tar',)
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ...dataset import open_dataset
from ...errors import ConfigError, ShardError
from ...keys import KEY_RE, modality_of
from ...samplers.batching import SampleMeta
from ...storage import open_input
from ...tario import index_tar

__all__ = ["MEDIA_BITS", "DatasetSource", "ResolvedSource", "ShardListSource", "ShardReader",
           "TarIndex", "media_bits", "resolve_source"]

MEDIA_BITS = {"image": 1, "audio": 2, "video": 4}


@dataclass(frozen=True, kw_only=True)
class DatasetSource:
    """An mmshard dataset folder (local path or fsspec URL) and the split to read.

    ``field_sets``: sidecar field sets to join (``("mel",)``); None joins all present.
    """

    root: str
    split: str | None = "train"
    field_sets: tuple[str, ...] | None = None
    storage_options: dict | None = None


@dataclass(frozen=True, kw_only=True)
class ShardListSource:
    """Plain WebDataset tars (paths or fsspec URLs), with optional known counts."""

    urls: tuple[str, ...]
    nsamples: tuple[int, ...] | None = None
    storage_options: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(self.urls))
        if not self.urls:
            raise ConfigError("ShardListSource needs at least one tar URL")
        if self.nsamples is not None:
            object.__setattr__(self, "nsamples", tuple(int(n) for n in self.nsamples))
            if len(self.nsamples) != len(self.urls) or min(self.nsamples) < 0:
                raise ConfigError(f"nsamples must give one count >= 0 per url: "
                                  f"{len(self.urls)} urls, nsamples={self.nsamples}")


@dataclass(frozen=True, kw_only=True, eq=False)
class ResolvedSource:
    """A source ready to plan and read: shard urls, counts, sidecars, metadata."""

    name: str
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    sidecars: dict[str, tuple[str, ...]]
    meta: SampleMeta
    root: str | None = None  # the dataset folder (None for plain shard lists)
    fields: tuple[str, ...] = ()  # tar fields the samples may hold (() = unknown)
    storage_options: dict | None = None
    cache: Any = None  # a stream.cache.ShardCache: remote shards are read from local copies
    # per sample (id order), the media it holds per the manifest's ``fields`` column:
    # bits MEDIA_BITS (image 1, audio 2, video 4); None when the manifest does not say
    media: np.ndarray | None = None
    # url -> (size, sha256) of every base and sidecar shard per the index.json files read
    # while resolving (the shard cache checks downloads against it); None: not read
    checksums: dict[str, tuple[int, str]] | None = None

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


class TarIndex:
    """Member offsets of one tar, grouped by sample in tar order.

    A damaged tar (truncated, corrupt header, refused member names) is indexed by
    :func:`salvage_index`: ``damage`` says what is wrong, ``keys`` holds the readable
    samples before the damage, ``tainted`` maps the position of a sample that held a
    refused member to the reason.
    """

    damage: str | None = None
    tainted: dict[int, str] = {}  # noqa: RUF012 - replaced per instance, never mutated

    def __init__(self, keys: list[str], members: list[dict[str, tuple[int, int]]]) -> None:
        # stored compactly (one string and numpy arrays, ~16 B per member + the key's
        # bytes): every worker keeps the index of every shard it reads, and a list of
        # dicts of tuples cost ~300 B per sample, so worker memory grew with the dataset
        self.keys = _Keys(keys)
        self.members = _Members(members)
        self._pos: dict[str, int] | None = None

    @classmethod
    def scan(cls, f: IO[bytes], url: str) -> TarIndex:
        """Header-only scan (:func:`mmshard.tario.index_tar`: member names checked)."""
        return cls(*index_tar(f, url))

    def position(self, key: str) -> int | None:
        if self._pos is None:
            self._pos = {k: i for i, k in enumerate(self.keys)}
        return self._pos.get(key)


class _Keys(Sequence[str]):
    """A read-only list of keys held as one string plus end offsets."""

    __slots__ = ("_ends", "_text")

    def __init__(self, keys: Sequence[str]) -> None:
        self._text = "".join(keys)
        self._ends = np.cumsum([len(k) for k in keys], dtype=np.int64) if len(keys) else \
            np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self._ends.size)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # IndexError and negative indices as a list does
        a = int(self._ends[i - 1]) if i else 0
        return self._text[a:int(self._ends[i])]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class _Members(Sequence[dict[str, tuple[int, int]]]):
    """``members[i]`` = ``{field: (data offset, size)}`` of sample i, held as numpy arrays
    (one field-name tuple per distinct field set, offsets and sizes flat)."""

    __slots__ = ("_names", "_off", "_set", "_size", "_start")

    def __init__(self, members: Sequence[dict[str, tuple[int, int]]]) -> None:
        ids: dict[tuple[str, ...], int] = {}
        n = len(members)
        self._set = np.empty(n, np.int32)
        self._start = np.zeros(n + 1, np.int64)
        flat: list[tuple[int, int]] = []
        for i, m in enumerate(members):
            self._set[i] = ids.setdefault(tuple(m), len(ids))
            flat.extend(m.values())
            self._start[i + 1] = len(flat)
        self._names = list(ids)
        arr = np.asarray(flat, np.int64).reshape(-1, 2)
        self._off, self._size = arr[:, 0].copy(), arr[:, 1].copy()

    def __len__(self) -> int:
        return int(self._set.size)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        p = int(self._start[i])
        return {f: (int(self._off[p + k]), int(self._size[p + k]))
                for k, f in enumerate(self._names[self._set[i]])}

    def end(self) -> int:
        """The end offset of the last byte of any member (0 when empty)."""
        return int((self._off + self._size).max()) if self._off.size else 0


class ShardReader:
    """Random access to samples of one resolved source by ``(shard, offset)``.

    >>> r = ShardReader(resolve_source(ShardListSource(urls=(p,))))   # doctest: +SKIP
    >>> r.read(0, 0)["__key__"]                                          # doctest: +SKIP
    """

    def __init__(self, source: ResolvedSource, max_open: int = 16) -> None:
        self.source = source
        self.max_open = max_open
        self._index: dict[str, TarIndex] = {}
        self._files: OrderedDict[str, IO[bytes]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "max_open": self.max_open}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["source"], d["max_open"])  # type: ignore[misc]

    def _file(self, url: str) -> IO[bytes]:
        f = self._files.get(url)
        if f is not None:
            self._files.move_to_end(url)
            return f
        cache = self.source.cache
        try:
            f = cache.open(url) if cache is not None else \
                open_input(url, self.source.storage_options)
        except OSError as e:
            raise ShardError(f"cannot open shard {url}: {e}") from e
        self._files[url] = f
        while len(self._files) > (self.max_open if cache is None else cache.config.max_open):
            self._files.popitem(last=False)[1].close()
        return f

    def index(self, url: str) -> TarIndex:
        idx = self._index.get(url)
        if idx is None:
            f = self._file(url)
            f.seek(0)
            try:
                idx = TarIndex.scan(f, url)
                cut = _cut_short(f, idx)
                if cut:
                    raise ShardError(cut)
            except ShardError as e:  # keep what is readable; reads past it raise
                idx = salvage_index(f, url, e)
            self._index[url] = idx
        return idx

    def _read_members(self, url: str, members: dict[str, tuple[int, int]], key: str
                      ) -> dict[str, bytes]:
        f = self._file(url)
        out = {}
        try:
            for fld, (off, size) in members.items():
                f.seek(off)
                data = f.read(size)
                if len(data) != size:
                    raise ShardError(f"truncated member {key}.{fld} in {url}")
                out[fld] = data
        except OSError as e:
            raise ShardError(f"cannot read {key} from {url}: {e}") from e
        return out

    def read(self, shard: int, offset: int) -> dict[str, Any]:
        """``{"__key__", "__url__", field: bytes}`` of one sample, sidecars joined."""
        url = self.source.urls[shard]
        idx = self.index(url)
        if offset >= len(idx.keys) and idx.damage is not None:
            want = self._want(shard, offset)
            raise _reason(ShardError(
                f"shard {url} is damaged ({idx.damage}): sample {offset}"
                f"{f' (key {want!r})' if want else ''} cannot be read; its first "
                f"{len(idx.keys)} samples can (on_error='skip' serves them)"),
                "unreadable_shard", url)
        if offset >= len(idx.keys):
            raise ShardError(f"{url} has {len(idx.keys)} samples, index.json says "
                             f"{self.source.counts[shard]}: the index is stale")
        key = idx.keys[offset]
        if offset in idx.tainted:
            raise _reason(ShardError(f"sample {key!r} of shard {url} refused: "
                                     f"{idx.tainted[offset]}"), "unsafe_member", url)
        meta_keys = self.source.meta.keys
        if meta_keys is not None:
            want = str(meta_keys[self._global(shard, offset)])
            if want != key:
                raise ShardError(
                    f"{url} holds {key!r} at position {offset} but the manifest says "
                    f"{want!r}: manifest rows must follow tar order (or carry an 'offset')")
        sample: dict[str, Any] = {"__key__": key, "__url__": url}
        sample.update(self._read_members(url, idx.members[offset], key))
        for _name, side_urls in self.source.sidecars.items():
            surl = side_urls[shard]
            sidx = self.index(surl)
            pos = offset if offset < len(sidx.keys) and sidx.keys[offset] == key \
                else sidx.position(key)
            if pos is None and sidx.damage is not None:
                raise _reason(ShardError(f"sidecar shard {surl} is damaged ({sidx.damage}): "
                                         f"sample {key!r} cannot be read"),
                              "unreadable_shard", surl)
            if pos is None:  # the transform skipped it (no caption ...): field absent (C6)
                continue
            if pos in sidx.tainted:
                raise _reason(ShardError(f"sample {key!r} of sidecar shard {surl} refused: "
                                         f"{sidx.tainted[pos]}"), "unsafe_member", surl)
            for fld, data in self._read_members(surl, sidx.members[pos], key).items():
                sample.setdefault(fld, data)
        return sample

    def _want(self, shard: int, offset: int) -> str | None:
        keys = self.source.meta.keys
        return None if keys is None else str(keys[self._global(shard, offset)])

    def _global(self, shard: int, offset: int) -> int:
        starts = getattr(self, "_starts", None)
        if starts is None:
            starts = self._starts = np.concatenate([[0], np.cumsum(self.source.counts)])
        return int(starts[shard]) + offset

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _cut_short(f: IO[bytes], idx: TarIndex) -> str | None:
    """Why a cleanly indexed tar is still truncated (a cut at a header boundary looks
    like the end of the archive to a header walk), or None."""
    end = (idx.members.end() + 511) // 512 * 512
    f.seek(0, 2)
    if f.tell() < max(end, 512):
        return "the file ends inside a member"
    f.seek(end)
    marker = f.read(1024)
    if marker != b"\0" * 1024:
        return "the file ends before the tar end-of-archive marker (truncated)"
    return None


def _reason(e: ShardError, reason: str, shard: str) -> ShardError:
    e.reason = reason  # type: ignore[attr-defined]  # the loader counts skips by reason
    e.shard = shard  # type: ignore[attr-defined]  # ... and by the shard at fault
    return e


def _member_problem(name: str, seen: set[str], current: str | None) -> tuple[str, str] | str:
    """``(key, field)`` of a trusted member name, else why it is refused."""
    key, dot, fld = name.partition(".")
    if "/" in name or ".." in name or not dot or not fld or not KEY_RE.match(key):
        return f"member {name!r} has an unsafe name (C3: <key>.<field>, key [A-Za-z0-9_-]+)"
    if key != current and key in seen:
        return f"member {name!r} repeats key {key!r} apart from its other members"
    return key, fld


def salvage_index(f: IO[bytes], url: str, error: Exception | None = None) -> TarIndex:
    """Index what is readable of a damaged tar: the samples before a truncation or
    corrupt header (a sample with a member cut short is dropped), without members
    whose names are refused; a sample that held a refused member is ``tainted`` (the
    member is attributed to the sample open before it, else the next one).

    >>> import io
    >>> salvage_index(io.BytesIO(b"\\0" * 100), "x.tar").damage
    'truncated header'
    """
    import tarfile

    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    keys: list[str] = []
    members: list[dict[str, tuple[int, int]]] = []
    tainted: dict[int, str] = {}
    orphan: str | None = None
    damage: str | None = None
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > size:
                    damage = f"member {info.name!r} is cut short"
                    if keys and keys[-1] == info.name.partition(".")[0]:
                        keys.pop()
                        members.pop()
                        tainted.pop(len(keys), None)
                    break
                got = _member_problem(info.name, set(keys[:-1]), keys[-1] if keys else None)
                if isinstance(got, str):
                    if keys:
                        tainted.setdefault(len(keys) - 1, got)
                    else:
                        orphan = orphan or got
                    continue
                key, fld = got
                if not keys or keys[-1] != key:
                    keys.append(key)
                    members.append({})
                    if orphan is not None:
                        tainted[len(keys) - 1], orphan = orphan, None
                members[-1][fld] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError, EOFError) as e:
        damage = str(e) or type(e).__name__
    idx = TarIndex(keys, members)
    idx.tainted = tainted
    idx.damage = damage or (str(error) if error is not None and not tainted else None)
    return idx


def resolve_source(src: DatasetSource | ShardListSource | str, *, split: str | None = "train"
                   ) -> ResolvedSource:
    """Turn a source (or a dataset folder path) into a :class:`ResolvedSource`."""
    if isinstance(src, str):
        src = DatasetSource(root=src, split=split)
    if isinstance(src, ShardListSource):
        return _resolve_list(src)
    if isinstance(src, DatasetSource):
        return _resolve_dataset(src)
    raise ConfigError(f"a loader source must be a dataset folder path, DatasetSource or "
                      f"ShardListSource, got {type(src).__name__}")


def _resolve_list(src: ShardListSource) -> ResolvedSource:
    if src.nsamples is not None:
        return ResolvedSource(name="shardlist", urls=src.urls, counts=src.nsamples,
                              sidecars={}, meta=SampleMeta(num_samples=sum(src.nsamples)),
                              storage_options=src.storage_options)
    reader = ShardReader(ResolvedSource(name="scan", urls=src.urls, counts=(), sidecars={},
                                        meta=SampleMeta(num_samples=0),
                                        storage_options=src.storage_options))
    keys: list[str] = []
    counts = []
    for url in src.urls:  # counting pass: header scan only
        idx = reader.index(url)
        counts.append(len(idx.keys))
        keys.extend(idx.keys)
    reader.close()
    return ResolvedSource(name="shardlist", urls=src.urls, counts=tuple(counts), sidecars={},
                          meta=SampleMeta(num_samples=len(keys), keys=np.asarray(keys,
                                          dtype=object)),
                          storage_options=src.storage_options)


def _resolve_dataset(src: DatasetSource) -> ResolvedSource:
    ds = open_dataset(src.root, src.storage_options)
    if ds.storage.local:
        return _resolve_opened(src, ds, None)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="mmshard-manifest") as pool:
        # remote: the manifest's GET and parse overlap the sidecar listings
        return _resolve_opened(src, ds, pool.submit(_read_manifest, ds))


def _resolve_opened(src: DatasetSource, ds: Any, manifest: Any) -> ResolvedSource:
    """:func:`_resolve_dataset` once ``ds`` is open; ``manifest``: a future of
    :func:`_read_manifest` (None: read it here)."""
    shards = ds.shards(src.split)
    if not shards:
        splits = sorted({s.split for s in ds.index.shards})
        raise ConfigError(f"dataset {ds.root} has no shards for split {src.split!r}; "
                          f"splits present: {', '.join(splits) or 'none'}")
    urls = tuple(ds.shard_url(s) for s in shards)
    counts = tuple(s.nsamples for s in shards)
    side = ds.sidecars()
    wanted = sorted(side) if src.field_sets is None else list(src.field_sets)
    sidecars: dict[str, tuple[str, ...]] = {}
    for name in wanted:
        if name not in side:
            raise ConfigError(f"dataset {ds.root} has no sidecar field set {name!r}; "
                              f"present: {', '.join(sorted(side)) or 'none'}")
        have = {s.url.rsplit("/", 1)[-1] for s in side[name].shards}
        missing = [s.url for s in shards if s.url.rsplit("/", 1)[-1] not in have]
        if missing:
            if src.field_sets is None:
                continue  # a partial sidecar set is joined only when asked for
            raise ShardError(f"sidecar {name!r} lacks shards {missing[:3]}: run its transform")
        _check_provenance(ds, name, side[name], shards)
        sidecars[name] = tuple(ds.shard_url(s, name) for s in shards)
    meta, media = _manifest_meta(ds, shards,
                                 _UNREAD if manifest is None else manifest.result())
    sums = {ds.shard_url(s): (s.filesize, s.sha256) for s in ds.index.shards}
    for name, idx in side.items():
        sums.update({ds.shard_url(s, name): (s.filesize, s.sha256) for s in idx.shards})
    return ResolvedSource(name=ds.index.name or ds.root, urls=urls, counts=counts,
                          sidecars=sidecars, meta=meta, storage_options=src.storage_options,
                          media=media, checksums=sums,
                          root=ds.root, fields=tuple(sorted({*ds.index.fields, *(
                              f for n in sidecars for f in side[n].fields)})))


def _check_provenance(ds: Any, name: str, side: Any, shards: Sequence[Any]) -> None:
    """C2: a sidecar shard made from other base bytes than today's is refused."""
    made_from = {s.url.rsplit("/", 1)[-1]: getattr(s, "base_sha256", None)
                 for s in side.shards}
    unknown = []
    for s in shards:
        base = s.url.rsplit("/", 1)[-1]
        got = made_from.get(base)
        if not got or not s.sha256:
            unknown.append(base)
        elif got != s.sha256:
            raise ShardError(
                f"sidecar field set {name!r} of {ds.root} is stale for shard {s.url}: it was "
                f"computed from base bytes {got[:12]}..., the shard now has "
                f"{s.sha256[:12]}...; re-run its transform (mmshard tokenize/embed "
                f"--overwrite) or leave it out (DatasetSource(field_sets=...))")
    if unknown:
        warnings.warn(f"sidecar field set {name!r} of {ds.root} records no base_sha256 for "
                      f"{len(unknown)} shard(s) (made by an older mmshard?): it cannot be "
                      "checked against the base shards", stacklevel=4)


def manifest_rows(src: ResolvedSource) -> list[dict[str, Any]]:
    """The manifest row of each sample of a dataset source, in global id order."""
    keys = src.meta.keys
    if src.root is None or keys is None:
        raise ConfigError(f"source {src.name!r} has no manifest.parquet with keys: a filter "
                          "on manifest rows needs a dataset folder")
    by_key = {str(r["key"]): r for r in open_dataset(src.root, src.storage_options)
              .read_table("manifest").to_pylist()}
    return [by_key[str(k)] for k in keys.tolist()]


def media_bits(fields: Iterable[str]) -> int:
    """The MEDIA_BITS of the media among tar field names (``"jpg", "txt"`` -> 1)."""
    return sum({MEDIA_BITS.get(modality_of(f), 0) for f in fields})


_MANIFEST_COLUMNS = ("key", "shard", "offset", "group", "width", "height", "fields")


def _read_manifest(ds: Any) -> Any:
    """The manifest columns the loader uses as a pyarrow Table (None: no manifest).
    Remote: one GET of the whole file (no per-page range requests); ``ParquetFile``
    rather than ``pq.read_table`` (which imports pyarrow.dataset and pandas: ~1 s)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if ds.storage.local:
            pf = pq.ParquetFile(ds.storage.path("manifest.parquet"))
        else:
            pf = pq.ParquetFile(pa.BufferReader(ds.storage.read_bytes("manifest.parquet")))
    except FileNotFoundError:
        return None
    names = set(pf.schema_arrow.names)
    return pf.read(columns=[c for c in _MANIFEST_COLUMNS if c in names])


_UNREAD = object()


def _encode(col: Any) -> Any:
    """One DictionaryArray of ``col`` (chunks joined first), codes by first appearance."""
    import pyarrow.compute as pc

    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    return pc.dictionary_encode(col)


def _int_column(col: Any) -> np.ndarray:
    """An integer manifest column as int64, nulls (and 0) as 0 (unknown)."""
    import pyarrow as pa

    if pa.types.is_null(col.type):  # every row null: nothing known
        return np.zeros(len(col), np.int64)
    return np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _group_codes(col: Any) -> np.ndarray:
    """Group codes in order of first appearance; None and "" are -1 (no group)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        uniq: dict[str, int] = {}  # rare (non-string groups): str() of each value
        return np.asarray([-1 if x in (None, "") else uniq.setdefault(str(x), len(uniq))
                           for x in col.to_pylist()], dtype=np.int64)
    col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
    enc = _encode(col)
    return np.asarray(enc.indices.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)


def _manifest_meta(ds: Any, shards: Sequence[Any], table: Any = _UNREAD
                   ) -> tuple[SampleMeta, np.ndarray | None]:
    """Keys, groups, sizes and media bits per sample from ``table`` (the manifest as
    :func:`_read_manifest` returns it; read here when not given)."""
    total = sum(s.nsamples for s in shards)
    table = _read_manifest(ds) if table is _UNREAD else table
    if table is None:
        return SampleMeta(num_samples=total), None
    cols = set(table.column_names)
    if not {"key", "shard"} <= cols:
        return SampleMeta(num_samples=total), None
    import pyarrow as pa
    import pyarrow.compute as pc

    where: dict[str, int] = {}
    for i, s in enumerate(shards):
        base = s.url.rsplit("/", 1)[-1]
        for name in (s.url, base, base.removesuffix(".tar")):
            where[name] = i
    # columns stay Arrow/numpy: no Python object per row except the keys themselves
    # (a to_pydict() of 400k rows left ~270 B per sample in the main process)
    enc = _encode(pc.cast(table.column("shard"), pa.string()))
    names = enc.dictionary.to_pylist()
    code_shard = np.asarray([where.get(str(n), where.get(str(n).rsplit("/", 1)[-1], -1))
                             for n in names], dtype=np.int64)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    shard_of = code_shard[codes] if len(names) else np.full(len(codes), -1, np.int64)
    rows_idx = np.nonzero(shard_of >= 0)[0]
    sub = shard_of[rows_idx]
    if "offset" in cols:  # within a shard by offset; ties keep manifest order (stable)
        off = table.column("offset").to_numpy(zero_copy_only=False)[rows_idx]
        order = rows_idx[np.lexsort((off, sub))]
    else:
        order = rows_idx[np.argsort(sub, kind="stable")]
    per_shard = np.bincount(sub, minlength=len(shards)) if sub.size else \
        np.zeros(len(shards), np.int64)
    for i, s in enumerate(shards):
        if int(per_shard[i]) != s.nsamples:
            raise ShardError(f"manifest.parquet has {int(per_shard[i])} rows for shard {s.url} "
                             f"but index.json says {s.nsamples}: the dataset is inconsistent")
    take = pa.array(order, type=pa.int64())
    keys = np.asarray([str(k) for k in table.column("key").take(take).to_pylist()],
                      dtype=object)
    groups = None
    if "group" in cols:
        groups = _group_codes(table.column("group").take(take))
    width = height = None
    if "width" in cols and "height" in cols:
        width = _int_column(table.column("width").take(take))
        height = _int_column(table.column("height").take(take))
    media = None
    if "fields" in cols:  # "flac,json,txt": what ingest stored for each sample
        fenc = _encode(table.column("fields").take(take))
        bits = np.asarray([media_bits(str(f or "").split(","))
                           for f in fenc.dictionary.to_pylist()] + [media_bits([])],
                          dtype=np.uint8)
        idx = fenc.indices.fill_null(len(fenc.dictionary)).to_numpy(zero_copy_only=False)
        media = bits[idx] if idx.size else np.zeros(0, np.uint8)
    return SampleMeta(num_samples=total, keys=keys, groups=groups, width=width,
                      height=height), media
