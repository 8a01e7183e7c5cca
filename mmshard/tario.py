"""Deterministic WebDataset tar writing and reading.

A shard is a plain tar whose members are ``<key>.<field>``; the members of one sample
are adjacent and sorted by field name, samples keep the order they were written in, and
every header has fixed mtime/uid/gid/mode/owner, so the same samples give byte-identical
tars on any machine, executor or worker count.

>>> import io
>>> buf = io.BytesIO()
>>> with TarWriter(buf) as w:
...     w.write({"__key__": "a", "txt": b"hi", "cls": b"1"})
>>> _ = buf.seek(0)
>>> [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in iter_tar(buf)]
[('a', ['cls', 'txt'])]
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .errors import ShardError
from .keys import KEY_RE

__all__ = ["FIXED_MTIME", "HashingWriter", "TarWriter", "index_tar", "iter_tar",
           "split_member_name"]

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: reproducible and tar-tool friendly
FIELD_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


class HashingWriter:
    """A write-through wrapper that counts bytes and hashes them (sha256) on the way, so
    a shard's size and digest for ``index.json`` need no second read.

    >>> w = HashingWriter(io.BytesIO()); _ = w.write(b"abc"); w.n, w.hexdigest()[:8]
    (3, 'ba7816bf')
    """

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()

    @property
    def closed(self) -> bool:
        return bool(getattr(self.f, "closed", False))

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class TarWriter:
    """Write samples (``{"__key__": str, field: bytes, ...}``) to a reproducible tar.

    ``fileobj`` is any binary writable file; the writer never closes it unless it opened
    it from a path.  Returns nothing per sample; ``count`` and ``bytes_written`` summarise.
    A write or close that fails (disk full) abandons the stream, as :meth:`abort` does,
    so nothing is written later from a finaliser (no ``_Stream.__del__`` noise).
    """

    def __init__(self, fileobj: IO[bytes] | str) -> None:
        self._own = isinstance(fileobj, str)
        self._f: IO[bytes] = open(fileobj, "wb") if isinstance(fileobj, str) else fileobj
        self._tar = tarfile.open(fileobj=self._f, mode="w|", format=tarfile.USTAR_FORMAT)
        self.count = 0
        self.payload_bytes = 0
        self._keys: set[str] = set()
        self._done = False

    def abort(self) -> None:
        """Give up on the tar without writing anything more (its file is the caller's to
        discard); idempotent."""
        if self._done:
            return
        self._done = True
        self._tar.closed = True  # tarfile would otherwise flush the end blocks when
        stream = getattr(self._tar, "fileobj", None)  # its _Stream is collected
        if stream is not None and hasattr(stream, "closed"):
            stream.closed = True
        if self._own:
            self._f.close()

    def __del__(self) -> None:  # never write from a finaliser: an unclosed tar is dropped
        if getattr(self, "_done", True) is False:
            self.abort()

    def write(self, sample: Mapping[str, Any]) -> None:
        key = sample.get("__key__")
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise ShardError(f"sample key must match [A-Za-z0-9_-]+, got {key!r}")
        if key in self._keys:
            raise ShardError(f"duplicate key {key!r} in one shard")
        fields = sorted(k for k in sample if not k.startswith("__"))
        for field in fields:
            if not FIELD_RE.match(field):
                raise ShardError(f"field name must match [a-z0-9_.]+, got {field!r} (key {key})")
        self._keys.add(key)
        for field in fields:
            data = sample[field]
            if isinstance(data, str):
                data = data.encode("utf-8")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ShardError(
                    f"field {field!r} of {key!r} must be bytes or str, got {type(data).__name__}"
                )
            data = bytes(data)
            name = f"{key}.{field}"
            if len(name) > 100:
                raise ShardError(f"member name {name!r} is longer than 100 characters")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            try:
                self._tar.addfile(info, io.BytesIO(data))
            except BaseException:
                self.abort()
                raise
            self.payload_bytes += len(data)
        self.count += 1

    def close(self) -> None:
        if self._done:
            return
        try:
            self._tar.close()
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._own:
            self._f.close()

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, et: object, *exc: object) -> None:
        if et is None:
            self.close()
        else:
            self.abort()


def split_member_name(name: str, *, shard: str = "") -> tuple[str, str]:
    """``"abc.mel.npy"`` -> ``("abc", "mel.npy")`` (WebDataset's rule: the first dot).

    Member names are untrusted: a name with ``/`` (a leading one included), ``..``, an
    empty field or a key outside ``[A-Za-z0-9_-]+`` raises ShardError naming the shard
    and the member, so ``../../key.txt`` can never stand in for ``key.txt``.  Member
    names never become filesystem paths.

    >>> split_member_name("abc.mel.npy")
    ('abc', 'mel.npy')
    """
    key, dot, field = name.partition(".")
    why = ("it holds a '/'" if "/" in name else "it holds '..'" if ".." in name
           else "it is not <key>.<field>" if not dot or not field
           else "its key is not [A-Za-z0-9_-]+" if not KEY_RE.match(key) else "")
    if why:
        where = f" in shard {shard}" if shard else ""
        raise ShardError(f"tar member {name!r}{where} refused: {why}; mmshard shards name "
                         "members <key>.<field> with keys [A-Za-z0-9_-]+")
    return key, field


class _Grouper:
    """Checks that the members of one key are adjacent and that no member repeats."""

    def __init__(self, shard: str) -> None:
        self.shard, self.done, self.key, self.fields = shard, set(), None, set()

    def add(self, name: str) -> tuple[str, str, bool]:
        """(key, field, starts_a_new_sample) for a member name; ShardError on a repeat."""
        key, field = split_member_name(name, shard=self.shard)
        new = key != self.key
        if new:
            if key in self.done:
                raise ShardError(f"key {key!r} appears twice, apart, in shard {self.shard} "
                                 f"(member {name!r}); the members of a sample must be adjacent")
            if self.key is not None:
                self.done.add(self.key)
            self.key, self.fields = key, set()
        if field in self.fields:
            raise ShardError(f"tar member {name!r} appears twice in shard {self.shard}")
        self.fields.add(field)
        return key, field, new


Members = dict[str, tuple[int, int]]


def index_tar(f: IO[bytes], url: str) -> tuple[list[str], list[Members]]:
    """Header-only index of a seekable tar: ``(keys, members)`` where ``members[i]`` maps
    each field of ``keys[i]`` to ``(data offset, size)``, in tar order; payloads are never
    read.  Plain USTAR/v7 tars (what mmshard writes) take a header walk 4-5x faster than
    ``tarfile``; PAX/GNU headers fall back to ``tarfile``.  Member names are checked
    like :func:`split_member_name`; a truncated or corrupt tar raises ShardError.
    """
    fast = _index_ustar(f, url)
    if fast is not None:
        return fast
    f.seek(0)
    keys: list[str] = []
    members: list[Members] = []
    group = _Grouper(url)
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, fld, new = group.add(info.name)
                if new:
                    keys.append(key)
                    members.append({})
                members[-1][fld] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"cannot index tar {url}: {e}") from e
    return keys, members


def _index_ustar(f: IO[bytes], url: str) -> tuple[list[str], list[Members]] | None:
    """The header walk; None (use tarfile) on PAX/GNU extension headers, a bad checksum,
    a seek-less stream or anything unexpected.  A bad member name raises at once."""
    keys: list[str] = []
    members: list[Members] = []
    group = _Grouper(url)
    try:
        pos = f.tell()
        while True:
            hdr = f.read(512)
            if len(hdr) < 512:
                return None
            if hdr == b"\0" * 512:
                break
            kind = hdr[156:157]
            chk = int(hdr[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
            if kind not in (b"0", b"\0", b"5") or chk != sum(hdr[:148]) + 256 + sum(hdr[156:]):
                return None
            size = int(hdr[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            data = pos + 512
            if kind != b"5":
                name = hdr[:100].split(b"\0", 1)[0]
                if hdr[257:262] == b"ustar":
                    prefix = hdr[345:500].split(b"\0", 1)[0]
                    if prefix:
                        name = prefix + b"/" + name
                key, fld, new = group.add(name.decode("utf-8", "replace"))
                if new:
                    keys.append(key)
                    members.append({})
                members[-1][fld] = (data, size)
            pos = data + (size + 511) // 512 * 512
            f.seek(pos)
    except (OSError, ValueError):
        return None
    return keys, members


def iter_tar(fileobj: IO[bytes] | str, *, url: str = "") -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__": key, "__url__": url, field: bytes}`` samples from a tar stream.

    Reads sequentially (works on non-seekable streams); members of one key must be
    adjacent, as WebDataset requires, and no member may repeat.  Member names are checked
    (:func:`split_member_name`); a bad one raises ShardError naming shard and member.
    """
    own = isinstance(fileobj, str)
    f = open(fileobj, "rb") if isinstance(fileobj, str) else fileobj
    try:
        try:
            tar = tarfile.open(fileobj=f, mode="r|")
        except tarfile.TarError as e:
            raise ShardError(f"cannot read tar {url or fileobj!r}: {e}") from e
        current: dict[str, Any] | None = None
        group = _Grouper(url or str(fileobj))
        try:
            for info in tar:
                if not info.isfile():  # directories, links, devices: never followed
                    continue
                key, field, new = group.add(info.name)
                ef = tar.extractfile(info)
                data = ef.read() if ef is not None else b""
                if new:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__url__": url}
                current[field] = data
        except (tarfile.TarError, OSError) as e:
            raise ShardError(f"corrupt or truncated tar {url or fileobj!r}: {e}") from e
        if current is not None:
            yield current
    finally:
        if own:
            f.close()
