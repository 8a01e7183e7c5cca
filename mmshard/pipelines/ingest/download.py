"""Polite HTTP downloads for URL ingest: one event loop per shard task.

A shard task hands the ``http(s)`` URLs of its inputs to :func:`fetch_urls`, which fetches
them concurrently and spools each body to a local file; the task then processes its inputs
in plan (key) order, so the downloaded bytes, never the order they arrived in, decide the
shard.  Every URL ends as one :class:`Fetched`: a spooled file, or a ledger ``reason``
(:data:`DOWNLOAD_REASONS`) with a detail.

Politeness, per task (every task of a job applies the same rules, so a job with ``W``
workers keeps at most ``W x per_host`` requests open to one host):

- a global concurrency limit and a per-host limit (host = ``host:port``), plus a per-host
  token bucket (``host_rate`` requests/s, burst ``per_host``);
- connect and read timeouts, and a total deadline per request;
- retries of timeouts, connection errors, 429 and 5xx with exponential backoff and jitter;
  a ``Retry-After`` on 429/503 pauses the whole host for that long (capped by
  ``max_retry_after``; longer waits fail as ``rate_limited`` right away);
- redirects followed by hand, at most ``max_redirects``; a repeated URL is a loop;
- the size cut-off: a ``Content-Length`` over the limit fails before any body byte is
  read, and a body that grows past it is cut off while streaming;
- an identifiable ``User-Agent``;
- opt-out honoured unless ``opt_out_check=False``: ``X-Robots-Tag: noai`` / ``noimageai``
  (for every agent or for ours) is checked on the response headers before the body is
  read, and each host's ``robots.txt`` is fetched once per task, cached, and obeyed for
  our agent (``urllib.robotparser``; RFC 9309: a 4xx robots.txt allows everything, an
  unreachable one fails the host's URLs with the network reason, to be retried later).

Why aiohttp and not httpx: aiohttp is already a dependency (fsspec's HTTP filesystem uses
it), it streams bodies chunk by chunk, shows headers before the body, has separate connect
and read timeouts and a per-host connection cap in its connector; httpx would add a
package for the same features.

>>> opts = DownloadOptions(per_host=4, host_rate=10.0, user_agent="mybot/1.0 (+me@x.org)")
>>> with fetch_urls(["https://example.org/a.jpg"], opts, max_file_bytes=1 << 20
...                 ) as got:                                          # doctest: +SKIP
...     got["https://example.org/a.jpg"].reason
''
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from ... import __version__
from ...errors import ConfigError, DataError

__all__ = ["DOWNLOAD_REASONS", "PERMANENT_REASONS", "RETRYABLE_REASONS", "DownloadOptions",
           "Fetched", "FetchedSet", "fetch_urls", "is_http"]

#: Ledger reasons a download can end with (besides the media reasons of processing).
DOWNLOAD_REASONS = ("http_404", "http_4xx", "http_5xx", "timeout", "connection_error",
                    "dns_error", "rate_limited", "opted_out", "too_large", "redirect_loop",
                    "bad_url")
#: Reasons ``--retry-failed`` re-attempts: the server or network may behave next time.
RETRYABLE_REASONS = frozenset({"http_5xx", "timeout", "connection_error", "dns_error",
                               "rate_limited"})
#: Download reasons ``--retry-failed`` skips: the answer will be the same.
PERMANENT_REASONS = frozenset(DOWNLOAD_REASONS) - RETRYABLE_REASONS
_RETRY_NOW = frozenset({"http_5xx", "timeout", "connection_error", "rate_limited"})
_OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})
_REDIRECTS = (301, 302, 303, 307, 308)
_ROBOTS_MAX = 512 * 1024  # RFC 9309: parse at least 500 KiB
DEFAULT_USER_AGENT = (f"mmshard/{__version__} (+https://github.com/mmshard/mmshard; "
                      "dataset builder; honours robots.txt and X-Robots-Tag noai)")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@dataclass(frozen=True, kw_only=True)
class DownloadOptions:
    """How URL inputs are fetched (execution choices; the output bytes do not depend on
    them as long as the servers answer the same).

    concurrency: requests open at once per task; per_host: per ``host:port`` at once;
    host_rate: requests started per second per host (None: no rate limit);
    retries: re-attempts after the first try; backoff: first backoff in seconds (doubles,
    with jitter, capped by max_backoff); max_retry_after: the longest Retry-After waited.
    opt_out_check=False ignores robots.txt and X-Robots-Tag (recorded in stats).
    """

    concurrency: int = 64
    per_host: int = 4
    host_rate: float | None = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 300.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    opt_out_check: bool = True

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.host_rate is not None and self.host_rate <= 0:
            raise ConfigError(f"host_rate must be > 0 requests/s or None, got {self.host_rate}")
        if self.retries < 0 or self.max_redirects < 0:
            raise ConfigError(f"retries and max_redirects must be >= 0, got {self.retries}, "
                              f"{self.max_redirects}")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ConfigError("backoff, max_backoff and max_retry_after must be >= 0")
        if not self.user_agent.strip() or "\n" in self.user_agent or "\r" in self.user_agent:
            raise ConfigError(f"user_agent must be one non-empty line, got {self.user_agent!r}")

    @property
    def agent_token(self) -> str:
        """The product token robots.txt groups are matched against (``mmshard``)."""
        return self.user_agent.split("/", 1)[0].split()[0].lower()


@dataclass(kw_only=True)
class Fetched:
    """The outcome of one URL: ``path`` to the spooled body, or a ledger ``reason``."""

    url: str
    path: str | None = None
    size: int = 0
    reason: str = ""
    detail: str = ""
    attempts: int = 0
    final_url: str = ""
    retry_after: float | None = field(default=None, repr=False)

    def read(self) -> bytes:
        """The body, or DataError(reason) for a failed download."""
        if self.reason or self.path is None:
            raise DataError(self.reason or "connection_error", f"{self.url}: {self.detail}")
        with open(self.path, "rb") as f:
            return f.read()


class FetchedSet(dict):
    """``url -> Fetched`` plus the run's counters (``stats``)."""

    stats: dict[str, Any]


# ---------------------------------------------------------------------------- politeness
class _Host:
    """Per-host state: concurrency cap, token bucket, pause, robots rules, counters."""

    def __init__(self, opts: DownloadOptions) -> None:
        self.sem = asyncio.Semaphore(opts.per_host)
        self.rate = opts.host_rate
        self.burst = float(opts.per_host)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.not_before = 0.0
        self.robots: RobotFileParser | Fetched | None = None
        self.robots_lock = asyncio.Lock()
        self.throttled_s = 0.0
        self.paused = 0

    async def take_token(self) -> None:
        while True:
            now = time.monotonic()
            if now < self.not_before:  # the host asked us to wait (Retry-After)
                await asyncio.sleep(self.not_before - now)
                continue
            if self.rate is None:
                return
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def opt_out_directive(values: Iterable[str], agent: str) -> str | None:
    """The ``X-Robots-Tag`` directive that opts this content out of AI use, or None.

    ``noai`` / ``noimageai`` count when unscoped, scoped to ``*`` or to ``agent``:

    >>> opt_out_directive(["noindex, noai"], "mmshard")
    'noai'
    >>> opt_out_directive(["otherbot: noimageai", "mmshard: nofollow"], "mmshard") is None
    True
    """
    for value in values:
        scope: str | None = None
        for part in value.split(","):
            part = part.strip().lower()
            if ":" in part:
                who, _, rest = part.partition(":")
                if who.strip() not in ("unavailable_after", "max-snippet",
                                       "max-image-preview", "max-video-preview"):
                    scope, part = who.strip(), rest.strip()
            if part in _OPT_OUT_DIRECTIVES and scope in (None, "*", agent):
                return part
    return None


# ---------------------------------------------------------------------------- downloader
class _Downloader:
    def __init__(self, opts: DownloadOptions, max_file_bytes: int, spool: str) -> None:
        self.opts = opts
        self.limit = max_file_bytes
        self.spool = spool
        self.sem = asyncio.Semaphore(opts.concurrency)
        self.hosts: dict[str, _Host] = {}
        self.counts: Counter[str] = Counter()
        self.session: Any = None

    def host(self, netloc: str) -> _Host:
        h = self.hosts.get(netloc)
        if h is None:
            h = self.hosts[netloc] = _Host(self.opts)
        return h

    @contextlib.asynccontextmanager
    async def slot(self, netloc: str):
        """Host cap first, then its token bucket, then the global cap: a slow host never
        holds global slots while it waits."""
        h = self.host(netloc)
        t0 = time.monotonic()
        async with h.sem:
            await h.take_token()
            h.throttled_s += time.monotonic() - t0
            async with self.sem:
                yield

    async def run(self, urls: list[str]) -> dict[str, Fetched]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.opts.total_timeout,
                                        sock_connect=self.opts.connect_timeout,
                                        sock_read=self.opts.read_timeout)
        connector = aiohttp.TCPConnector(limit=self.opts.concurrency,
                                         limit_per_host=self.opts.per_host)
        async with aiohttp.ClientSession(
                timeout=timeout, connector=connector, auto_decompress=True,
                headers={"User-Agent": self.opts.user_agent}) as self.session:
            results = await asyncio.gather(*(self.fetch(u, i) for i, u in enumerate(urls)))
        return dict(zip(urls, results, strict=True))

    async def fetch(self, url: str, n: int) -> Fetched:
        """One URL with retries; the spooled file is ``<spool>/<n>``."""
        dest = os.path.join(self.spool, str(n))
        res = await self.with_retries(url, lambda: self.follow(url, dest, self.limit))
        self.counts["ok" if not res.reason else res.reason] += 1
        if res.reason and res.attempts > 1:
            res.detail += f" (after {res.attempts} attempts)"
        return res

    async def with_retries(self, url: str, attempt) -> Fetched:
        tries = 0
        while True:
            tries += 1
            res = await attempt()
            res.attempts = tries
            if not res.reason or res.reason not in _RETRY_NOW or tries > self.opts.retries:
                return res
            delay = min(self.opts.max_backoff, self.opts.backoff * 2 ** (tries - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)
            if res.retry_after is not None:
                if res.retry_after > self.opts.max_retry_after:
                    res.detail += (f" (Retry-After {res.retry_after:.0f} s is over "
                                   f"max_retry_after={self.opts.max_retry_after:g})")
                    return res
                h = self.host(urlsplit(res.final_url or url).netloc)
                h.not_before = max(h.not_before, time.monotonic() + res.retry_after)
                h.paused += 1
                delay = max(delay, res.retry_after)
            self.counts["retries"] += 1
            await asyncio.sleep(delay)

    async def follow(self, url: str, dest: str, limit: int, robots: bool = True) -> Fetched:
        """Fetch ``url`` following redirects by hand (robots checked at every hop)."""
        seen = [url]
        cur = url
        for _ in range(self.opts.max_redirects + 1):
            parts = urlsplit(cur)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return Fetched(url=url, reason="bad_url", final_url=cur,
                               detail=f"{cur!r} is not an http(s) URL with a host")
            if robots and self.opts.opt_out_check:
                denied = await self.robots_denies(parts.scheme, parts.netloc, cur)
                if denied is not None:
                    denied.url = url
                    return denied
            res = await self.request(url, cur, dest, limit)
            if isinstance(res, Fetched):
                return res
            nxt = urljoin(cur, res)
            if nxt in seen:
                return Fetched(url=url, reason="redirect_loop", final_url=cur,
                               detail=f"redirect loop: {' -> '.join(seen + [nxt])}")
            seen.append(nxt)
            cur = nxt
        return Fetched(url=url, reason="redirect_loop", final_url=cur,
                       detail=f"more than max_redirects={self.opts.max_redirects} "
                              f"redirects: {' -> '.join(seen)}")

    async def request(self, url: str, cur: str, dest: str, limit: int) -> Fetched | str:
        """One request: a Fetched outcome, or the Location of a redirect."""
        import aiohttp

        def fail(reason: str, detail: str, retry_after: float | None = None) -> Fetched:
            return Fetched(url=url, reason=reason, detail=detail, final_url=cur,
                           retry_after=retry_after)

        netloc = urlsplit(cur).netloc
        try:
            async with self.slot(netloc), self.session.get(cur, allow_redirects=False) as r:
                self.counts["requests"] += 1
                if r.status in _REDIRECTS:
                    loc = r.headers.get("Location")
                    if not loc:
                        return fail("http_4xx", f"HTTP {r.status} without Location from {cur}")
                    return loc
                if r.status == 429:
                    return fail("rate_limited", f"HTTP 429 from {cur}",
                                _retry_after(r.headers.get("Retry-After")))
                if r.status >= 500:
                    ra = _retry_after(r.headers.get("Retry-After")) if r.status == 503 else None
                    return fail("http_5xx", f"HTTP {r.status} from {cur}", ra)
                if r.status == 404:
                    return fail("http_404", f"HTTP 404 from {cur}")
                if not 200 <= r.status < 300:
                    return fail("http_4xx", f"HTTP {r.status} from {cur}")
                if self.opts.opt_out_check:
                    d = opt_out_directive(r.headers.getall("X-Robots-Tag", []),
                                          self.opts.agent_token)
                    if d is not None:
                        return fail("opted_out", f"{cur} sends X-Robots-Tag: {d}")
                if r.content_length is not None and r.content_length > limit:
                    return fail("too_large", f"{cur} is {r.content_length} bytes (Content-"
                                             f"Length), over max_file_bytes={limit}")
                return await self.body(url, cur, r, dest, limit)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            return fail("timeout", f"no answer from {cur} in time ({type(e).__name__})")
        except aiohttp.ClientConnectorDNSError as e:
            return fail("dns_error", f"cannot resolve {urlsplit(cur).hostname}: {e}")
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, socket.gaierror):
                return fail("dns_error", f"cannot resolve {urlsplit(cur).hostname}: {e}")
            return fail("connection_error", f"cannot connect to {netloc}: {e}")
        except (aiohttp.ClientError, OSError) as e:  # reset, truncated body, bad headers
            return fail("connection_error", f"{cur}: {type(e).__name__}: {e}")

    async def body(self, url: str, cur: str, r: Any, dest: str, limit: int) -> Fetched:
        n = 0
        with open(dest, "wb") as f:
            async for chunk in r.content.iter_chunked(1 << 16):
                n += len(chunk)
                if n > limit:
                    f.close()
                    os.unlink(dest)
                    return Fetched(url=url, reason="too_large", final_url=cur,
                                   detail=f"{cur} passed max_file_bytes={limit} while "
                                          "streaming (no or wrong Content-Length)")
                f.write(chunk)
        return Fetched(url=url, path=dest, size=n, final_url=cur)

    async def robots_denies(self, scheme: str, netloc: str, url: str) -> Fetched | None:
        h = self.host(netloc)
        async with h.robots_lock:  # fetched once per host, the others wait for it
            if h.robots is None:
                h.robots = await self.load_robots(f"{scheme}://{netloc}/robots.txt")
        if isinstance(h.robots, Fetched):
            return Fetched(url=url, reason=h.robots.reason, final_url=url,
                           detail=f"robots.txt of {netloc} unreachable: {h.robots.detail}")
        if not h.robots.can_fetch(self.opts.user_agent, url):
            self.counts["robots_denied"] += 1
            return Fetched(url=url, reason="opted_out", final_url=url,
                           detail=f"robots.txt of {netloc} disallows {url} for "
                                  f"{self.opts.agent_token!r}")
        return None

    async def load_robots(self, robots_url: str) -> RobotFileParser | Fetched:
        dest = os.path.join(self.spool, "robots-" + hashlib.sha1(robots_url.encode())
                            .hexdigest()[:16])
        res = await self.with_retries(
            robots_url, lambda: self.follow(robots_url, dest, _ROBOTS_MAX, robots=False))
        rp = RobotFileParser(robots_url)
        if res.reason in ("http_404", "http_4xx", "too_large", "opted_out"):
            rp.parse([])  # RFC 9309: unavailable robots.txt -> no rules
        elif res.reason:
            return res
        else:
            with open(res.path or dest, "rb") as f:
                rp.parse(f.read().decode("utf-8", "replace").splitlines())
            os.unlink(res.path or dest)
        return rp


def _run_loop(coro: Any) -> Any:
    """Run ``coro`` on a fresh event loop (in a thread when one is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["v"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            out["e"] = e

    t = threading.Thread(target=target, name="mmshard-download")
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


@contextlib.contextmanager
def fetch_urls(urls: Iterable[str], opts: DownloadOptions | None, *, max_file_bytes: int,
               spool_dir: str | None = None) -> Iterator[FetchedSet]:
    """Download ``urls`` concurrently; yield ``url -> Fetched``; delete the spool after.

    ``stats`` on the result: requests, retries, outcomes by reason, per-host throttled
    seconds and Retry-After pauses, bytes and seconds.
    """
    opts = opts or DownloadOptions()
    uniq = list(dict.fromkeys(urls))
    spool = tempfile.mkdtemp(prefix="mmshard-dl-", dir=spool_dir)
    try:
        t0 = time.perf_counter()
        dl = _Downloader(opts, max_file_bytes, spool)
        got = FetchedSet(_run_loop(dl.run(uniq)) if uniq else {})
        got.stats = {
            "urls": len(uniq), "bytes": sum(f.size for f in got.values()),
            "seconds": round(time.perf_counter() - t0, 4),
            "outcomes": dict(sorted(dl.counts.items())),
            "throttled_s": {h: round(v.throttled_s, 3) for h, v in sorted(dl.hosts.items())
                            if v.throttled_s > 0.001},
            "paused": {h: v.paused for h, v in sorted(dl.hosts.items()) if v.paused},
            "opt_out_check": opts.opt_out_check,
        }
        yield got
    finally:
        shutil.rmtree(spool, ignore_errors=True)
