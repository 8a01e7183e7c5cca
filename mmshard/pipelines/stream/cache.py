"""A local shard cache for training from object storage (``s3://``, ``gs://`` ...).

Whole shards (and their sidecar shards) are downloaded into ``cache_dir`` before they
are read, so a sample read is a local seek instead of a range request.  Many processes
share one cache: DataLoader workers of one rank and several ranks on one node.

Layout under ``cache_dir``::

    data/<h>-<name>.tar          complete, verified shards (``<h>``: hash of the URL)
    data/<h>-<name>.tar.tmp-*    downloads in progress (renamed when complete)
    meta/<h>-<name>.tar.json     size, sha256, inode and mtime of the verified file
    pins/<h>-<name>.tar          readers hold a shared ``flock`` while the shard is open;
                                 its mtime is the shard's last use (LRU)
    locks/<h>-<name>.tar         one downloader per shard (exclusive ``flock``)
    .lock                        eviction (exclusive ``flock``)
    journal.log                  one line per fetch and eviction (pid, url)

- Downloads are atomic: temp file, sha256 checked against ``index.json`` while it is
  written, fsync, rename.  A cached file whose size, inode or mtime differ from its
  record (a partial copy, an edit, a truncation) is not trusted and is fetched again;
  ``verify="sha256"`` also re-hashes each file the first time a process uses it.
- Eviction: least recently used whole shards go first until the new shard fits under
  ``cache_limit``.  A shard a reader has open is pinned (shared lock) and never evicted;
  a reader takes its pin *before* it checks and opens the file, so it never meets a
  half-evicted shard (no ``FileNotFoundError`` races).  When pinned shards alone exceed
  the limit the cache goes over it (counted in ``over_limit``) rather than stall.
- Downloads in progress reserve their size: the temp file is created under the
  eviction lock and counted at its index.json size, so parallel downloads (threads,
  workers, ranks) do not overfill the cache; a prefetch that would take the cache over
  its limit waits for the next batch instead (only a reader may go over, when pinned
  shards leave no room).
- Prefetch: the loader hands the cache the shards of a worker's next batches (plan
  order); two threads per process fetch them while the current ones are read, at most
  a quarter of ``cache_limit`` ahead per process (more would only evict shards that are
  about to be read).  Shards this process has open are skipped (they are pinned, so
  present), and a shard another thread or process is downloading is left to it (the
  prefetch moves on to the next one instead of queueing behind that download).
- First shards (:func:`fetch_first`): before the workers start, the loader's process
  downloads the first batch's shards of every worker at once, on the storage client it
  already has (a fresh worker would first build its own: 0.3-1 s of botocore setup).

>>> cfg = CacheConfig(cache_dir="/tmp/c", cache_limit="20GB")
>>> cfg.limit_bytes
20000000000
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ...errors import ConfigError, ShardError
from ...storage import is_url

__all__ = ["CacheConfig", "ShardCache", "fetch_first", "parse_size", "prefetch_batches",
           "with_cache"]

log = logging.getLogger(__name__)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
VERIFY = ("stat", "sha256")
_CHUNK = 8 << 20


def parse_size(value: int | str) -> int:
    """``"20GB"`` -> 20_000_000_000; ``"512MiB"``, ``"1.5gb"`` and ints work too."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"cache_limit {value!r} is not a size: use bytes or a number "
                              f"with one of {', '.join(u for u in _UNITS if u)} (e.g. '20GB')")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < 1:
        raise ConfigError(f"cache_limit must be > 0 bytes, got {value!r}")
    return n


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """Where and how big the shard cache is.

    prefetch: batches of a worker's plan looked ahead for shards to fetch;
    threads: prefetch threads per process; max_open: cached shards a reader keeps open
    (and so pinned) at once.
    """

    cache_dir: str
    cache_limit: int | str = "20GB"
    prefetch: int = 8
    threads: int = 2
    max_open: int = 4
    verify: str = "stat"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", os.path.abspath(self.cache_dir))
        if self.verify not in VERIFY:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY)}, got {self.verify!r}")
        for name in ("threads", "max_open"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0, got {self.prefetch}")
        parse_size(self.cache_limit)

    @property
    def limit_bytes(self) -> int:
        return parse_size(self.cache_limit)


@contextlib.contextmanager
def _flock(path: str, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock


class _PinnedFile:
    """A cached shard opened for reading; closing it releases the pin."""

    def __init__(self, f: IO[bytes], pin_fd: int, on_close: Any = None) -> None:
        self._f = f
        self._pin = pin_fd
        self._on_close = on_close

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if self._pin >= 0:
            self._f.close()
            os.close(self._pin)
            self._pin = -1
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> _PinnedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShardCache:
    """The cache for the shards of one remote source (pickles into workers as config).

    ``expected``: url -> (size, sha256) from index.json (sha256 "" when unknown).
    """

    def __init__(self, config: CacheConfig, expected: dict[str, tuple[int, str]],
                 storage_options: dict | None = None) -> None:
        self.config = config
        self.expected = dict(expected)
        self.storage_options = dict(storage_options or {})
        self.limit = config.limit_bytes
        for sub in ("data", "meta", "pins", "locks"):
            os.makedirs(os.path.join(config.cache_dir, sub), exist_ok=True)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._pool: ThreadPoolExecutor | None = None
        self._asked: set[str] = set()
        self._ahead: dict[str, tuple[int, float]] = {}  # prefetched, not opened yet
        self._verified: set[str] = set()
        self._reading: Counter[str] = Counter()  # opened by this process, not closed yet
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "expected": self.expected,
                "storage_options": self.storage_options}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["config"], d["expected"], d["storage_options"])  # type: ignore[misc]

    # -- names ---------------------------------------------------------------------------
    def name(self, url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + url.rsplit("/", 1)[-1]

    def _p(self, sub: str, name: str, ext: str = "") -> str:
        return os.path.join(self.config.cache_dir, sub, name + ext)

    def path(self, url: str) -> str:
        """Where ``url`` lives in the cache (it may not be there)."""
        return self._p("data", self.name(url))

    # -- stats ---------------------------------------------------------------------------
    def _count(self, **kw: float) -> None:
        with self._lock:
            for k, v in kw.items():
                self._stats[k] += v

    def take_stats(self) -> dict[str, float]:
        """Counters since the last call (hits, misses, bytes_downloaded, wait_s, ...)."""
        with self._lock:
            out = dict(self._stats)
            self._stats.clear()
        return out

    def _journal(self, what: str, url: str) -> None:
        line = f"{time.time():.6f} {os.getpid()} {what} {url}\n".encode()
        fd = os.open(os.path.join(self.config.cache_dir, "journal.log"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # O_APPEND: one write per line, never interleaved
        finally:
            os.close(fd)

    # -- validity ------------------------------------------------------------------------
    def _valid(self, url: str) -> bool:
        name = self.name(url)
        try:
            st = os.stat(self._p("data", name))
            with open(self._p("meta", name, ".json"), "rb") as f:
                rec = json.loads(f.read())
        except (OSError, ValueError):
            return False
        size, sha = self.expected.get(url, (-1, ""))
        if (st.st_size, st.st_ino, st.st_mtime_ns) != (rec["size"], rec["ino"], rec["mtime_ns"]) \
                or (sha and rec["sha256"] != sha) or (size >= 0 and st.st_size != size):
            self._distrust(url, "does not match its record")
            return False
        if self.config.verify == "sha256" and url not in self._verified:
            if _sha256_file(self._p("data", name)) != rec["sha256"]:
                self._distrust(url, "fails its sha256 check")
                return False
            self._verified.add(url)
        return True

    def _distrust(self, url: str, why: str) -> None:
        """Drop the record of a bad cached file (so it is counted once and refetched);
        readers that have it open keep their handle."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._p("meta", self.name(url), ".json"))
            self._count(corrupt=1)
            self._journal("corrupt", url)
            log.warning("cached %s %s: fetching it again", url, why)

    # -- the read path -------------------------------------------------------------------
    def open(self, url: str) -> IO[bytes]:
        """Open ``url`` from the cache, downloading it first when needed; pinned until
        closed."""
        self._after_fork()
        with self._lock:
            self._ahead.pop(url, None)
        name = self.name(url)
        t0 = time.perf_counter()
        fetched = False
        for _ in range(5):
            pin = os.open(self._p("pins", name), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(pin, fcntl.LOCK_SH)
            if self._valid(url):
                try:
                    f = open(self._p("data", name), "rb")
                except FileNotFoundError:  # cannot happen while pinned; be safe anyway
                    os.close(pin)
                    continue
                os.utime(self._p("pins", name))
                self._count(**({"misses": 1} if fetched else {"hits": 1}),
                            wait_s=time.perf_counter() - t0)
                with self._lock:
                    self._reading[url] += 1
                return _PinnedFile(f, pin, lambda: self._closed(url))  # type: ignore[return-value]
            os.close(pin)
            self.ensure(url)
            fetched = True
        raise ShardError(f"cannot keep {url} in the cache {self.config.cache_dir}: it was "
                         "evicted five times before it could be opened; raise cache_limit")

    def _closed(self, url: str) -> None:
        with self._lock:
            self._reading[url] -= 1
            if self._reading[url] <= 0:
                del self._reading[url]

    def ensure(self, url: str, wait: bool = True) -> str | None:
        """Make ``url`` present and verified in the cache; return its local path.
        ``wait=False`` (prefetch): when another thread or process is downloading it
        right now, or when it would fit only by going over ``cache_limit`` (downloads
        in progress, pinned shards), return None at once instead of waiting."""
        name = self.name(url)
        if self._valid(url):
            return self._p("data", name)
        fd = os.open(self._p("locks", name), os.O_RDWR | os.O_CREAT, 0o644)
        try:  # one downloader per shard (exclusive flock; closing the fd drops it)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:  # only with wait=False: its downloader is at work
                return None
            return self._ensure_locked(url, name, strict=not wait)
        finally:
            os.close(fd)

    def _ensure_locked(self, url: str, name: str, strict: bool = False) -> str | None:
        """The rest of :meth:`ensure`, holding the shard's download lock."""
        if self._valid(url):  # another process fetched it while we waited
            return self._p("data", name)
        size, _ = self.expected.get(url, (-1, ""))
        for attempt in (1, 2):
            tmp = f"{self._p('data', name)}.tmp-{uuid.uuid4().hex[:12]}"
            # room made and the temp file created under the eviction lock: concurrent
            # downloads count each other's reserved bytes (the cache stays under its limit)
            if not self._evict(need=max(size, 0), keep=name, reserve=tmp, strict=strict):
                return None  # no room next to the downloads in progress: not now
            try:
                self._download(url, name, tmp)
                break
            except ShardError:
                if attempt == 2:
                    raise
                log.warning("download of %s failed its check; trying once more", url)
        return self._p("data", name)

    def _download(self, url: str, name: str, tmp: str) -> None:
        import fsspec

        t0 = time.perf_counter()
        final = self._p("data", name)
        h = hashlib.sha256()
        n = 0
        try:
            fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
            fs.get_file(path, tmp)  # one streamed GET (no HEAD, no range requests)
            with open(tmp, "rb+") as out:
                while chunk := out.read(_CHUNK):
                    h.update(chunk)
                    n += len(chunk)
                os.fsync(out.fileno())
            size, sha = self.expected.get(url, (-1, ""))
            if (sha and h.hexdigest() != sha) or (size >= 0 and n != size):
                raise ShardError(f"downloaded {url} has {n} bytes and sha256 {h.hexdigest()}"
                                 f", index.json says {size} bytes and {sha}: the remote "
                                 "dataset changed or is corrupt (run `mmshard verify`)")
            st = os.stat(tmp)
            rec = {"url": url, "size": n, "sha256": h.hexdigest(), "ino": st.st_ino,
                   "mtime_ns": st.st_mtime_ns}
            meta = self._p("meta", name, ".json")
            with open(meta + ".tmp", "w") as f:
                json.dump(rec, f)
            os.replace(meta + ".tmp", meta)
            with open(self._p("pins", name), "ab"):
                pass
            os.utime(self._p("pins", name))  # a fresh shard is the most recently used
            self._verified.add(url)
            # counted before the file appears: whoever reads it next reports the download
            self._journal("fetch", url)
            self._count(downloads=1, bytes_downloaded=n, download_s=time.perf_counter() - t0)
            os.replace(tmp, final)  # the data last: a record without data is not trusted
        except OSError as e:
            raise ShardError(f"cannot download {url} into the cache: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- eviction ------------------------------------------------------------------------
    def _evict(self, need: int, keep: str, reserve: str | None = None,
               strict: bool = False) -> bool:
        """Delete least recently used, unpinned shards until ``need`` more bytes fit;
        then create the (empty) temp file ``reserve`` for them, still under the lock.

        Downloads in progress count at their full expected size (their temp files were
        created here), so parallel downloads (threads, workers, ranks) do not overfill
        the cache.  ``strict`` (prefetch): when ``need`` does not fit under the limit
        (downloads in progress, pinned shards), reserve nothing and return False."""
        d = self._p("data", "")
        with _flock(os.path.join(self.config.cache_dir, ".lock"), fcntl.LOCK_EX):
            entries = []
            total = 0
            busy = 0
            for e in os.scandir(d):
                if ".tmp-" in e.name:
                    base = e.name.split(".tmp-", 1)[0]
                    if not self._drop_stale_tmp(e.path, base):
                        busy += max(self._expected_size(base), _size(e.path))
                    continue
                size = e.stat().st_size
                total += size
                try:
                    used = os.stat(self._p("pins", e.name)).st_mtime
                except FileNotFoundError:
                    used = 0.0
                entries.append((used, e.name, size))
            if strict and busy + need > self.limit:
                return False
            total += busy
            entries.sort()
            for _used, name, size in entries:
                if total + need <= self.limit:
                    break
                if name == keep:
                    continue
                fd = os.open(self._p("pins", name), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a reader has it open: pinned
                    os.close(fd)
                    continue
                try:
                    url = self._url_of(name)
                    for p in (self._p("meta", name, ".json"), self._p("data", name)):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(p)
                finally:
                    os.close(fd)
                total -= size
                self._journal("evict", url)
                self._count(evictions=1, bytes_evicted=size)
            if total + need > self.limit and strict:
                return False  # a prefetch never takes the cache over its limit
            if total + need > self.limit:
                self._count(over_limit=1)
                log.info("shard cache %s over its limit (%d + %d > %d bytes): the rest is "
                         "pinned by readers or being downloaded", self.config.cache_dir,
                         total, need, self.limit)
            if reserve is not None:
                with open(reserve, "wb"):
                    pass
        return True

    def _expected_size(self, name: str) -> int:
        """index.json's size of the shard cached as ``name`` (0 when unknown)."""
        sizes = getattr(self, "_sizes", None)
        if sizes is None:
            sizes = self._sizes = {self.name(u): max(n, 0) for u, (n, _) in
                                   self.expected.items()}
        return sizes.get(name, 0)

    def _url_of(self, name: str) -> str:
        try:
            with open(self._p("meta", name, ".json"), "rb") as f:
                return json.loads(f.read())["url"]
        except (OSError, ValueError, KeyError):
            return name

    def _drop_stale_tmp(self, path: str, name: str) -> bool:
        """A temp file whose downloader no longer holds the shard's lock is a leftover of
        a killed process: removed (True).  False: it is being downloaded right now."""
        fd = os.open(self._p("locks", name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # being downloaded right now
        finally:
            os.close(fd)  # closes (and unlocks) in both cases
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            self._count(stale_tmp_removed=1)
        return True

    # -- prefetch ------------------------------------------------------------------------
    def _after_fork(self) -> None:
        if self._pid != os.getpid():  # a forked worker: no threads or sets of the parent
            self._reset()

    def prefetch(self, urls: Iterable[str]) -> None:
        """Fetch ``urls`` in the background, in the order given (already cached: no-op).

        A process keeps at most a quarter of ``cache_limit`` fetched ahead of its reads
        (so the workers and ranks sharing a cache cannot evict each other's next shards
        in a loop); the rest waits for the next call."""
        self._after_fork()
        budget = max(1, self.limit // 4)
        now = time.monotonic()
        new = []
        with self._lock:
            for u, (_, t) in list(self._ahead.items()):
                if now - t > 300:  # never read (an abandoned epoch): stop counting it
                    del self._ahead[u]
            used = sum(n for n, _ in self._ahead.values())
            for u in dict.fromkeys(urls):
                if u in self._asked or u in self._ahead or u in self._reading:
                    continue  # asked, or open here (pinned: present until closed)
                size = max(self.expected.get(u, (0, ""))[0], 0)
                if self._ahead and used + size > budget:
                    break
                used += size
                self._ahead[u] = (size, now)
                self._asked.add(u)
                new.append(u)
        if not new:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.threads,
                                            thread_name_prefix="mmshard-cache")
        for u in new:
            self._pool.submit(self._prefetch_one, u)

    def _prefetch_one(self, url: str) -> None:
        try:  # a shard another worker or rank is fetching: on to the next one
            if self.ensure(url, wait=False) is None and not self._busy(url):
                with self._lock:  # no room yet: asked again with the next batch
                    self._ahead.pop(url, None)
        except Exception as e:  # the reader fetches it again and raises with context
            quiet = sys.is_finalizing() or "interpreter shutdown" in str(e)  # worker exits
            (log.debug if quiet else log.warning)("prefetch of %s failed: %s", url, e)
        finally:  # asked again later (next epoch, after an eviction): checked again
            with self._lock:
                self._asked.discard(url)

    def _busy(self, url: str) -> bool:
        """Someone holds ``url``'s download lock right now."""
        fd = os.open(self._p("locks", self.name(url)), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def usage(self) -> int:
        """Bytes of complete shards in the cache now."""
        d = self._p("data", "")
        return sum(e.stat().st_size for e in os.scandir(d) if ".tmp-" not in e.name)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------- loader hooks
def with_cache(resolved: Any, spec: Any, config: CacheConfig) -> Any:
    """``resolved`` (a ResolvedSource) reading through a :class:`ShardCache` when its
    shards are remote; local sources come back unchanged."""
    if not resolved.urls or not is_url(resolved.urls[0]):
        return resolved
    expected: dict[str, tuple[int, str]] = {u: (-1, "") for u in resolved.urls}
    root = spec if isinstance(spec, str) else getattr(spec, "root", None)
    if resolved.checksums is not None:  # read while resolving: no second index read
        expected.update(resolved.checksums)
    elif root is not None:
        from ...dataset import open_dataset

        ds = open_dataset(root, resolved.storage_options)
        for s in ds.index.shards:
            expected[ds.shard_url(s)] = (s.filesize, s.sha256)
        for fs_name, idx in ds.sidecars().items():
            for s in idx.shards:
                expected[ds.shard_url(s, fs_name)] = (s.filesize, s.sha256)
    return dataclasses.replace(resolved, cache=ShardCache(config, expected,
                                                         resolved.storage_options))


def prefetch_batches(work: Any, plan: Sequence[Any], i: int, step: int = 1) -> None:
    """Ask the caches of ``work``'s sources for the shards of batches ``i, i + step, ...``
    (the next ``prefetch`` batches this worker decodes, in plan order).  No cache: no-op."""
    caches = [getattr(r.source, "cache", None) for r in work.readers]
    ahead = max((c.config.prefetch for c in caches if c is not None), default=0)
    for pb in plan[i:i + step * (ahead + 1):step] if ahead else ():
        for cache, url in _batch_urls(work, pb):
            cache.prefetch([url])


def _batch_urls(work: Any, pb: Any) -> list[tuple[Any, str]]:
    """``(cache, url)`` of the shards (and sidecar shards) batch ``pb`` reads, in the
    order it first reads them; shards of uncached sources left out."""
    out = []
    shards = np.searchsorted(work.starts, pb.ids, side="right") - 1
    for sh in dict.fromkeys(shards.tolist()):
        src = work.readers[work.owner[sh]].source
        if getattr(src, "cache", None) is not None:
            j = work.local[sh]
            out += [(src.cache, u) for u in (src.urls[j], *(v[j] for v in src.sidecars.values()))]
    return out


def fetch_first(work: Any, plan: Sequence[Any], start: int, n: int) -> dict[str, float]:
    """Download the shards of batches ``start .. start + n - 1`` (the first batch of each
    of ``n`` workers) now, in parallel, before the workers start; return the counters.

    The calling process already has a storage client (it read index.json); a fresh
    worker builds its own first (botocore setup: 0.3-1 s), so doing the first downloads
    here takes that off the time to the first batch, and fetches every worker's first
    shards at once instead of a few per worker.  Past the first batch's shards, each
    cache gets at most a quarter of its limit this way; a failed download is only logged (the
    worker that needs the shard fetches it again and raises with context)."""
    todo: dict[tuple[int, str], tuple[Any, str]] = {}
    used: Counter[int] = Counter()
    for b, pb in enumerate(plan[start:start + n]):
        for cache, url in _batch_urls(work, pb):
            size = max(cache.expected.get(url, (0, ""))[0], 0)
            k = (id(cache), url)
            if k in todo or (b and used[id(cache)] + size > cache.limit // 4):
                continue  # the first batch's shards always: it cannot start without them
            used[id(cache)] += size
            todo[k] = (cache, url)
    if not todo:
        return {}

    def one(item: tuple[Any, str]) -> None:
        try:
            item[0].ensure(item[1])
        except Exception as e:
            log.warning("first download of %s failed: %s", item[1], e)

    with ThreadPoolExecutor(min(8, len(todo)), thread_name_prefix="mmshard-first") as pool:
        list(pool.map(one, todo.values()))  # all joined here: no thread left at fork
    return cache_stats(work)


def cache_stats(work: Any) -> dict[str, float]:
    """Counters of every cache of ``work`` since the last call, summed."""
    out: Counter[str] = Counter()
    for r in work.readers:
        cache = getattr(r.source, "cache", None)
        if cache is not None:
            out.update(cache.take_stats())
    return dict(out)
