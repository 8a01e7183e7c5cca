"""URL ingest against a loopback HTTP server that injects one fault per URL.

The server (aiohttp.web in a thread) listens on several ports; each port is one host for
the downloader (hosts are ``host:port``).  It counts requests in flight per host, so the
per-host limit is checked on the server side.  Timeouts are tiny so the file stays fast.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmshard import synth
from mmshard.errors import ConfigError, DataError
from mmshard.pipelines.ingest.download import (
    PERMANENT_REASONS,
    RETRYABLE_REASONS,
    DownloadOptions,
    fetch_urls,
    opt_out_directive,
)

web = pytest.importorskip("aiohttp.web")

UA = "mmshard-test/1.0 (+https://example.invalid/bot)"
LIMIT = 50_000


def png(name: str) -> bytes:
    seed = sum(name.encode())
    return synth.encode_image(synth.photo_like(24, 16, seed=seed), fmt="PNG")


class FaultServer:
    """Hosts ``a``, ``b``, ``c`` on three ports; the path names the fault."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.inflight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.agents: set[str] = set()
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        # a host that never answers: listening, never accepting or reading
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(64)
        self.ports["silent"] = self.silent.getsockname()[1]
        with socket.socket() as s:  # a port where nothing listens
            s.bind(("127.0.0.1", 0))
            self.ports["closed"] = s.getsockname()[1]

    def url(self, host: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[host]}{path}"

    def reset(self) -> None:
        self.hits.clear()
        self.times.clear()
        self.peak.clear()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        # handler_cancellation: a client that hangs up ends its handler (in-flight count)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        self.loop.run_until_complete(self.runner.setup())
        for host in ("a", "b", "c"):
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.ports[host] = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.silent.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def handle(self, request):
        host = request.host
        self.agents.add(request.headers.get("User-Agent", ""))
        self.inflight[host] += 1
        self.peak[host] = max(self.peak[host], self.inflight[host])
        path = request.path
        self.hits[f"{host}{path}"] += 1
        self.times[f"{host}{path}"].append(time.monotonic())
        try:
            return await self.route(request, path, self.hits[f"{host}{path}"])
        finally:
            self.inflight[host] -= 1

    async def route(self, request, path: str, n: int):  # noqa: C901 - one branch per fault
        kind = path.strip("/").split("/", 1)[0]
        name = path.rsplit("/", 1)[-1]
        if path == "/robots.txt":
            return web.Response(text="User-agent: mmshard-test\nDisallow: /private/\n\n"
                                     "User-agent: *\nAllow: /\n")
        if kind in ("ok", "private"):
            await asyncio.sleep(0.1)  # lets requests overlap, so the per-host cap matters
            return web.Response(body=png(name), content_type="image/png")
        if kind == "slowhead":
            await asyncio.sleep(3)
            return web.Response(body=png(name))
        if kind in ("slowbody", "reset", "truncated"):
            resp = web.StreamResponse(headers={"Content-Length": "20000"})
            await resp.prepare(request)
            await resp.write(b"\x89PNG" + b"\0" * 96)
            if kind == "slowbody":
                await asyncio.sleep(3)
                await resp.write(b"\0" * 19900)
                return resp
            if kind == "reset":
                request.transport.abort()
            else:
                request.transport.close()
            return resp
        if kind == "429once":
            if n == 1:
                return web.Response(status=429, headers={"Retry-After": "1"})
            return web.Response(body=png(name))
        if kind == "429forever":
            return web.Response(status=429, headers={"Retry-After": "3600"})
        if kind == "503burst":
            if n <= 2:
                return web.Response(status=503, headers={"Retry-After": "0"})
            return web.Response(body=png(name))
        if kind == "503always":
            return web.Response(status=503)
        if kind == "redirect":
            left = int(name)
            raise web.HTTPFound(f"/redirect/{left - 1}" if left > 1 else "/ok/redirected.png")
        if kind == "loop":
            raise web.HTTPFound("/loop/b" if name == "a" else "/loop/a")
        if kind == "chain":
            raise web.HTTPFound(f"/chain/{int(name) + 1}")
        if kind == "big":
            return web.Response(body=b"\0" * (LIMIT + 1))
        if kind == "bigchunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(LIMIT // 1000 + 5):
                await resp.write(b"\0" * 1000)
            return resp
        if kind == "noai":
            return web.Response(body=png(name), headers={"X-Robots-Tag": "noindex, noai"})
        if kind == "noimageai":
            return web.Response(body=png(name), headers={"X-Robots-Tag": "mmshard-test: noimageai"})
        if kind == "otherbot":
            return web.Response(body=png(name), headers={"X-Robots-Tag": "otherbot: noai"})
        if kind == "forbidden":
            return web.Response(status=403)
        return web.Response(status=404)


@pytest.fixture(scope="module")
def server():
    s = FaultServer()
    yield s
    s.close()


OPTS = DownloadOptions(concurrency=16, per_host=2, host_rate=None, connect_timeout=0.5,
                       read_timeout=0.4, total_timeout=5.0, retries=2, backoff=0.01,
                       max_backoff=0.05, max_retry_after=5.0, max_redirects=4, user_agent=UA)


def cases(s: FaultServer) -> dict[str, str]:
    """URL -> the reason its ledger row must carry ("" = downloaded)."""
    c = {s.url("a", f"/ok/img{i}.png"): "" for i in range(8)}
    c.update({s.url("b", f"/ok/img{i}.png"): "" for i in range(4)})
    c.update({
        s.url("a", "/slowhead/x.png"): "timeout",
        s.url("a", "/slowbody/x.png"): "timeout",
        s.url("b", "/429once/x.png"): "",
        s.url("c", "/429forever/x.png"): "rate_limited",
        s.url("b", "/503burst/x.png"): "",
        s.url("b", "/503always/x.png"): "http_5xx",
        s.url("a", "/reset/x.png"): "connection_error",
        s.url("a", "/truncated/x.png"): "connection_error",
        s.url("b", "/redirect/3"): "",
        s.url("b", "/loop/a"): "redirect_loop",
        s.url("b", "/chain/0"): "redirect_loop",
        s.url("a", "/big/x.png"): "too_large",
        s.url("a", "/bigchunked/x.png"): "too_large",
        s.url("a", "/noai/x.png"): "opted_out",
        s.url("a", "/noimageai/x.png"): "opted_out",
        s.url("a", "/otherbot/x.png"): "",
        s.url("b", "/private/x.png"): "opted_out",
        s.url("a", "/missing/x.png"): "http_404",
        s.url("a", "/forbidden/x.png"): "http_4xx",
        s.url("silent", "/x.png"): "timeout",
        s.url("closed", "/x.png"): "connection_error",
        "http://no-such-host.invalid/x.png": "dns_error",
    })
    return c


def test_every_fault_gets_its_reason_and_the_host_limit_holds(server, tmp_path):
    server.reset()
    want = cases(server)
    with fetch_urls(list(want), OPTS, max_file_bytes=LIMIT, spool_dir=str(tmp_path)) as got:
        reasons = {u: f.reason for u, f in got.items()}
        assert reasons == want
        for u, f in got.items():
            if not f.reason:
                assert f.read() == png(u.rsplit("/", 1)[-1]) or "/redirect/" in u
            else:
                with pytest.raises(DataError) as e:
                    f.read()
                assert e.value.reason == f.reason
        assert got[server.url("b", "/503burst/x.png")].attempts == 3
        assert got[server.url("b", "/redirect/3")].final_url.endswith("/ok/redirected.png")
        stats = got.stats
    # the cap is never exceeded, and the downloader did use it
    for host in ("a", "b"):
        assert 1 <= server.peak[f"127.0.0.1:{server.ports[host]}"] <= OPTS.per_host
    assert server.peak[f"127.0.0.1:{server.ports['a']}"] == OPTS.per_host
    # Retry-After honoured: the second try came at least 1 s after the 429
    t = server.times[f"127.0.0.1:{server.ports['b']}/429once/x.png"]
    assert len(t) == 2 and t[1] - t[0] >= 1.0
    # Retry-After over max_retry_after: given up at once, not waited for
    assert server.hits[f"127.0.0.1:{server.ports['c']}/429forever/x.png"] == 1
    # the opted-out bodies were never requested past the headers; robots.txt once per host
    assert server.hits[f"127.0.0.1:{server.ports['b']}/private/x.png"] == 0
    for host in ("a", "b", "c"):
        assert server.hits[f"127.0.0.1:{server.ports[host]}/robots.txt"] == 1
    assert server.agents == {UA}
    assert stats["outcomes"]["retries"] >= 3 and stats["paused"]
    assert not os.listdir(tmp_path)  # the spool is removed


def test_opt_out_check_off_fetches_everything_it_may(server, tmp_path):
    server.reset()
    urls = [server.url("a", "/noai/x.png"), server.url("b", "/private/y.png")]
    off = DownloadOptions(**{**OPTS.__dict__, "opt_out_check": False})
    with fetch_urls(urls, off, max_file_bytes=LIMIT) as got:
        assert [got[u].reason for u in urls] == ["", ""]
        assert got.stats["opt_out_check"] is False
    assert server.hits[f"127.0.0.1:{server.ports['b']}/robots.txt"] == 0


def test_token_bucket_spaces_requests(server):
    server.reset()
    urls = [server.url("c", f"/ok/t{i}.png") for i in range(4)]
    slow = DownloadOptions(**{**OPTS.__dict__, "per_host": 1, "host_rate": 5.0})
    with fetch_urls(urls, slow, max_file_bytes=LIMIT) as got:
        assert all(not got[u].reason for u in urls)
        assert got.stats["throttled_s"]
    starts = sorted(t for u in urls for t in server.times[u.split("//", 1)[1]])
    # burst 1, 5 requests/s: request k+1 starts at least ~0.2 s after request k
    assert all(b - a >= 0.1 for a, b in zip(starts, starts[1:]))  # loopback jitter allowed


def test_x_robots_tag_parsing():
    assert opt_out_directive(["noai"], "mmshard") == "noai"
    assert opt_out_directive(["NoImageAI"], "mmshard") == "noimageai"
    assert opt_out_directive(["mmshard: noai"], "mmshard") == "noai"
    assert opt_out_directive(["*: noimageai"], "mmshard") == "noimageai"
    assert opt_out_directive(["otherbot: noai, noindex"], "mmshard") is None
    assert opt_out_directive(["unavailable_after: 2020-01-01, noai"], "mmshard") == "noai"
    assert opt_out_directive(["noindex, nofollow"], "mmshard") is None


def test_reason_sets_and_config_errors():
    assert RETRYABLE_REASONS.isdisjoint(PERMANENT_REASONS)
    assert {"opted_out", "http_404", "too_large"} <= PERMANENT_REASONS
    assert {"timeout", "rate_limited", "http_5xx"} <= RETRYABLE_REASONS
    with pytest.raises(ConfigError, match="per_host"):
        DownloadOptions(per_host=0)
    with pytest.raises(ConfigError, match="user_agent"):
        DownloadOptions(user_agent="bad\nagent")
    assert DownloadOptions(user_agent=UA).agent_token == "mmshard-test"


def write_manifest(path: str, urls: list[str]) -> None:
    caps = [f"caption {i}" for i in range(len(urls))]
    pq.write_table(pa.table({"url": urls, "caption": caps}), path)


INGEST_SKIP = ("/slowhead/", "/slowbody/", "/429once/")  # slow: covered above


def test_url_ingest_ledger_rerun_and_retry_failed(server, tmp_path):
    from mmshard.pipelines.executor import LocalExecutor
    from mmshard.pipelines.ingest.job import IngestConfig, ingest
    from tests.pipelines.test_ingest import read_tree

    want = {u: r for u, r in cases(server).items()
            if not any(s in u for s in INGEST_SKIP) and u != server.url("silent", "/x.png")}
    manifest = str(tmp_path / "urls.parquet")
    write_manifest(manifest, sorted(want))
    cfg = IngestConfig(max_samples=6, max_failure_rate=1.0, max_file_bytes=LIMIT)

    def run(out: str, **kw):
        server.reset()
        return ingest([manifest], out, cfg, executor=LocalExecutor(2), download=OPTS, **kw)

    a, b = str(tmp_path / "a" / "ds"), str(tmp_path / "b" / "ds")
    res = run(a)
    rows = pq.read_table(os.path.join(a, "ledger.parquet")).to_pylist()
    by_url = {r["source"]: r for r in rows}
    assert len(rows) == len(want) == len(by_url)  # one row per URL
    assert {u: by_url[u]["reason"] for u in want} == want
    assert all((by_url[u]["status"] == "ok") == (r == "") for u, r in want.items())
    assert res.stats["inputs"] == len(want)
    shards = pq.read_table(os.path.join(a, "manifest.parquet")).to_pylist()
    assert len(shards) == sum(1 for r in want.values() if r == "")

    run(b)  # another run, other arrival order: the same bytes
    published = [{k: v for k, v in read_tree(x).items() if not k.startswith(".")} for x in (a, b)]
    assert published[0] == published[1]

    run(a, retry_failed=True)  # only the retryable reasons go again
    hit = {u.split("//", 1)[1] for u in want if server.hits[u.split("//", 1)[1]]}
    no_request = {server.url("closed", "/x.png"), "http://no-such-host.invalid/x.png"}
    again = {u.split("//", 1)[1] for u, r in want.items() if r in RETRYABLE_REASONS
             and u not in no_request}  # those fail before any request reaches the server
    assert again and again <= hit
    assert not any(server.hits[u.split("//", 1)[1]] for u, r in want.items()
                   if r in PERMANENT_REASONS)
    rows = pq.read_table(os.path.join(a, "ledger.parquet")).to_pylist()
    assert len(rows) == len(want)  # retried inputs keep one row
    assert {r["source"]: r["reason"] for r in rows} == want


def test_cli_download_flags(server, tmp_path):
    from mmshard.cli.main import main

    manifest = str(tmp_path / "urls.parquet")
    urls = [server.url("a", "/ok/cli0.png"), server.url("a", "/noai/cli1.png")]
    write_manifest(manifest, urls)
    base = ["ingest", manifest, "--url-column", "url", "--caption-column", "caption",
            "--executor", "local", "--no-progress", "--max-failure-rate", "1",
            "--user-agent", UA, "--per-host", "1", "--retries", "0"]
    assert main([*base, "--out", str(tmp_path / "on")]) == 0
    assert main([*base, "--out", str(tmp_path / "off"), "--no-opt-out-check"]) == 0
    on = pq.read_table(str(tmp_path / "on" / "ledger.parquet")).to_pylist()
    off = pq.read_table(str(tmp_path / "off" / "ledger.parquet")).to_pylist()
    assert sorted(r["reason"] for r in on) == ["", "opted_out"]
    assert [r["status"] for r in off] == ["ok", "ok"]
    import json

    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in ("on", "off")]
    assert [s["download"]["opt_out_check"] for s in stats] == [True, False]  # recorded
    assert stats[0]["download"]["user_agent"] == UA
