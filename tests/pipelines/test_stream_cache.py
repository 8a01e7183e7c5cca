"""The Loader over object storage (a moto S3 server on loopback) through a shared cache.

Datasets are written locally (tars, index.json with real sha256, manifest), uploaded to
the bucket, and read back from ``s3://`` through ``cache_dir``.  Ranks run as separate
processes (each with DataLoader workers) sharing one cache, as on one training node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mmshard.dataset import DatasetIndex, ShardInfo
from mmshard.errors import ConfigError
from mmshard.pipelines.stream.cache import CacheConfig, ShardCache, parse_size
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.source import DatasetSource
from mmshard.tario import TarWriter
from tests.pipelines.test_cluster_s3 import s3  # noqa: F401  (the moto server fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "s3://mmshard-test"


def write_dataset(root: Path, shards: int, per_shard: int, pad: int = 0) -> list[str]:
    """Text samples (caption ``pad`` bytes long when given); index.json with sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "shards").mkdir(parents=True)
    infos, keys, rows = [], [], {"key": [], "shard": [], "split": []}
    for n in range(shards):
        url = f"shards/train-{n:06d}.tar"
        with TarWriter(str(root / url)) as w:
            for j in range(per_shard):
                key = f"s{n:03d}_{j:03d}"
                body = f"caption {key} " + (os.urandom(pad // 2).hex() if pad else "")
                w.write({"__key__": key, "txt": body, "cls": str(n * per_shard + j)})
                keys.append(key)
                rows["key"].append(key)
                rows["shard"].append(url)
                rows["split"].append("train")
        data = (root / url).read_bytes()
        infos.append(ShardInfo(url=url, split="train", nsamples=per_shard, filesize=len(data),
                               sha256=hashlib.sha256(data).hexdigest()))
    (root / "index.json").write_bytes(DatasetIndex(name="c", shards=tuple(infos)).to_json())
    pq.write_table(pa.table(rows), str(root / "manifest.parquet"))
    return keys


def upload(opts: dict, local: Path, name: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    url = f"{BUCKET}/{name}"
    fs.put(str(local) + "/", url.removeprefix("s3://") + "/", recursive=True)
    return url


def run_epoch(src, rank: int, world: int, workers: int, cache: str | None = None,
              limit: int | str = "1GB", state: dict | None = None, step_s: float = 0.0,
              log: str | None = None) -> tuple[list[list[str]], Loader]:
    ld = Loader(src, batch_size=2, seed=3, rank=rank, world_size=world, num_workers=workers,
                shuffle_buffer=4, shuffle_window=None, cache_dir=cache, cache_limit=limit)
    if state is not None:
        ld.load_state_dict(state)
    out = []
    for b in ld:
        out.append(list(b["__key__"]))
        if log is not None:
            with open(log, "a") as f:
                f.write(json.dumps({"keys": out[-1], "state": ld.state_dict()}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        time.sleep(step_s)
    return out, ld


def child(url: str, opts_json: str, rank: int, world: int, workers: int, cache: str,
          limit: str, out: str, step_s: str = "0") -> None:
    """Entry point of a rank process (``python -c``): one epoch, keys to ``out``."""
    src = DatasetSource(root=url, split="train", storage_options=json.loads(opts_json))
    rank, world, workers = int(rank), int(world), int(workers)
    if out.endswith(".log"):
        run_epoch(src, rank, world, workers, cache, limit, step_s=float(step_s), log=out)
        return
    keys, ld = run_epoch(src, rank, world, workers, cache, limit)
    Path(out).write_text(json.dumps({"keys": keys, "stats": ld.stats}))


def spawn(*args: object) -> subprocess.Popen:
    argv = tuple(str(a) for a in args)
    call = f"from tests.pipelines.test_stream_cache import child; child(*{argv!r})"
    return subprocess.Popen([sys.executable, "-c", call], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def journal(cache: Path) -> list[tuple[str, str]]:
    lines = (cache / "journal.log").read_text().splitlines()
    return [(ln.split()[2], ln.split()[3]) for ln in lines]


def test_two_ranks_two_workers_share_a_small_cache(s3, tmp_path):  # noqa: F811
    local = tmp_path / "ds"
    write_dataset(local, shards=8, per_shard=4, pad=4000)
    url = upload(s3, local, "cache2x2")
    total = sum(p.stat().st_size for p in (local / "shards").iterdir())
    limit = total // 3
    cache = tmp_path / "cache"
    want = [run_epoch(str(local), r, 2, 0)[0] for r in (0, 1)]
    # rank 1 in another process, rank 0 here, at the same time, each with 2 workers
    proc = spawn(url, json.dumps(s3), 1, 2, 2, cache, limit, tmp_path / "r1.json")
    child(url, json.dumps(s3), 0, 2, 2, str(cache), str(limit), str(tmp_path / "r0.json"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-3000:]
    got = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1)]
    assert [g["keys"] for g in got] == want  # same batches as the local folder, per rank
    assert len(want[0]) == len(want[1])
    events = journal(cache)
    fetched = Counter(u for e, u in events if e == "fetch")
    evicted = Counter(u for e, u in events if e == "evict")
    assert sum(evicted.values()) > 0  # the cache is smaller than the data: eviction ran
    assert len(fetched) == 8  # every shard came through the cache
    for u, n in fetched.items():  # a second download of a shard only after its eviction
        assert n <= 1 + evicted[u], (u, n, evicted[u])
    stats = [g["stats"]["cache"] for g in got]
    assert sum(s.get("downloads", 0) for s in stats) == sum(fetched.values())
    assert all(s.get("hits", 0) + s.get("misses", 0) > 0 for s in stats)
    assert all("wait_s" in s and s.get("bytes_downloaded", 0) > 0 for s in stats)
    data = list((cache / "data").iterdir())
    assert not [p for p in data if ".tmp-" in p.name]
    # the cache survives the runs: a new loader (room for everything) downloads only the
    # shards that are not cached yet
    present = len(data)
    keys, ld = run_epoch(DatasetSource(root=url, split="train", storage_options=s3), 0, 2, 0,
                         str(cache), "1GB")
    assert keys == want[0] and 0 < present < 8
    assert ld.stats["cache"].get("downloads", 0) == 8 - present


def test_killed_mid_download_then_resumed_exactly(s3, tmp_path):  # noqa: F811
    local = tmp_path / "ds"
    write_dataset(local, shards=4, per_shard=4, pad=1_000_000)
    url = upload(s3, local, "cachekill")
    shard_bytes = (local / "shards" / "train-000000.tar").stat().st_size
    limit = int(shard_bytes * 2.5)
    cache = tmp_path / "cache"
    want, _ = run_epoch(str(local), 0, 1, 0)
    log = tmp_path / "run.log"
    p = spawn(url, json.dumps(s3), 0, 1, 0, cache, limit, log, 0.05)
    saw_tmp = False
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        done = log.exists() and len(log.read_text().splitlines()) >= 2
        if done and (cache / "data").exists() and any(
                ".tmp-" in n for n in os.listdir(cache / "data")):
            os.kill(p.pid, signal.SIGKILL)
            saw_tmp = True
            break
        time.sleep(0.001)
    p.wait(30)
    assert saw_tmp, "the run ended before a download could be interrupted"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [ln["keys"] for ln in lines] == want[:len(lines)]
    src = DatasetSource(root=url, split="train", storage_options=s3)
    rest, ld = run_epoch(src, 0, 1, 0, str(cache), limit, state=lines[-1]["state"])
    assert rest == want[len(lines):]  # resumed exactly where the killed run stopped
    assert not [n for n in os.listdir(cache / "data") if ".tmp-" in n]  # leftover removed
    for n in os.listdir(cache / "data"):  # what stays cached is complete and verified
        assert hashlib.sha256((cache / "data" / n).read_bytes()).hexdigest() in {
            s.sha256 for s in DatasetIndex.from_json((local / "index.json").read_bytes())
            .shards}


def test_corrupted_cached_shard_is_detected_and_fetched_again(s3, tmp_path):  # noqa: F811
    local = tmp_path / "ds"
    write_dataset(local, shards=3, per_shard=3, pad=2000)
    url = upload(s3, local, "cachecorrupt")
    src = DatasetSource(root=url, split="train", storage_options=s3)
    cache = tmp_path / "cache"
    want, _ = run_epoch(str(local), 0, 1, 0)
    first, ld = run_epoch(src, 0, 1, 0, str(cache))
    assert first == want and ld.stats["cache"]["downloads"] == 3
    victim = sorted((cache / "data").iterdir())[0]
    with open(victim, "r+b") as f:  # flip bytes in place (mtime moves)
        f.seek(700)
        f.write(b"XXXX")
    again, ld = run_epoch(src, 0, 1, 0, str(cache))
    assert again == want
    assert ld.stats["cache"]["corrupt"] >= 1 and ld.stats["cache"]["downloads"] == 1
    # a silent corruption that keeps size and mtime: caught by verify="sha256"
    st = victim.stat()
    with open(victim, "r+b") as f:
        f.seek(700)
        f.write(b"YYYY")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    idx = DatasetIndex.from_json((local / "index.json").read_bytes())
    expected = {f"{url}/{s.url}": (s.filesize, s.sha256) for s in idx.shards}
    sc = ShardCache(CacheConfig(cache_dir=str(cache), verify="sha256"), expected, s3)
    shard_url = next(u for u in expected if sc.path(u) == str(victim))
    with sc.open(shard_url) as f:
        assert hashlib.sha256(f.read()).hexdigest() == expected[shard_url][1]
    assert sc.take_stats()["corrupt"] == 1


def test_cache_config_and_sizes():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size(1000) == 1000
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots")
    with pytest.raises(ConfigError, match="verify"):
        CacheConfig(cache_dir="/tmp/x", verify="md5")


def test_first_downloads_at_once_same_batches_and_within_limit(s3, tmp_path):  # noqa: F811
    """Every worker's first shards are fetched together by the loader's own process before
    the workers start, then 2 workers prefetch beside their reads: the batches equal the
    local run's, and the cache never holds more than cache_limit (downloads in progress
    reserve their size; a prefetch never goes over)."""
    import threading

    local = tmp_path / "ds"
    write_dataset(local, shards=16, per_shard=4, pad=20000)
    url = upload(s3, local, "cachefirst")
    sizes = {f"{url}/shards/{p.name}": p.stat().st_size for p in (local / "shards").iterdir()}
    limit = max(sizes.values()) * 11  # room for 11 of the 16 shards: eviction happens
    cache = tmp_path / "cache"

    def epoch(src, workers, cache_dir=None):
        ld = Loader(src, batch_size=4, seed=5, rank=0, world_size=1, num_workers=workers,
                    shuffle_window=3, cache_dir=cache_dir, cache_limit=limit)
        return [list(b["__key__"]) for b in ld], ld

    want, _ = epoch(str(local), 0)
    peak, stop = [0], threading.Event()

    def sample() -> None:  # bytes in the cache's data folder, partial downloads included
        while not stop.is_set():
            total = 0
            for p in list((cache / "data").glob("*")) if (cache / "data").exists() else ():
                with contextlib.suppress(FileNotFoundError):
                    total += p.stat().st_size
            peak[0] = max(peak[0], total)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        got, ld = epoch(DatasetSource(root=url, storage_options=s3), 2, str(cache))
    finally:
        stop.set()
        th.join()
    assert got == want  # same batches, in the same order, as the local folder
    assert peak[0] <= limit
    lines = [ln.split() for ln in (cache / "journal.log").read_text().splitlines()]
    held = top = 0
    for _t, _pid, what, u in lines:  # complete shards in the cache, event by event
        held += sizes[u] if what == "fetch" else -sizes[u] if what == "evict" else 0
        top = max(top, held)
    assert top <= limit and any(w == "evict" for _, _, w, _ in lines)
    fetched_here = {u for _, pid, w, u in lines if w == "fetch" and int(pid) == os.getpid()}
    first = {f"{url}/shards/train-{int(k[1:4]):06d}.tar" for k in want[0]}
    assert first <= fetched_here  # the first batch's shards came from this process, at once
    assert ld.stats["cache"]["downloads"] == sum(1 for ln in lines if ln[2] == "fetch")
    assert ld.stats["cache"].get("over_limit", 0) == 0
