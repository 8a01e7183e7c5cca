"""Resume, retries and fault tolerance of the ingest job, with real processes killed."""

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from mmshard.errors import JobError
from mmshard.media.image import ImageOptions
from mmshard.pipelines.executor import LocalExecutor, RayExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.tario import iter_tar
from mmshard.verify import verify_dataset
from tests.conftest import write_image, write_text
from tests.pipelines.test_ingest import read_tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--image-resize", "shortest", "--image-size", "96", "--image-format", "jpg",
        "--max-samples", "3", "--name", "t", "--no-progress"]


def corpus(tmp_path, n=36, size=(480, 360)):
    src = tmp_path / "src"
    for i in range(n):
        write_image(str(src / f"g{i % 4}" / f"p{i:03d}.jpg"), *size, seed=i)
        write_text(str(src / f"g{i % 4}" / f"p{i:03d}.txt"), f"caption {i}")
    return src


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "mmshard.cli.main", "ingest", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def assert_no_partial_tars(out):
    for tar in (out / "shards").glob("*.tar"):
        list(iter_tar(str(tar)))  # every visible tar is complete and readable


@pytest.mark.parametrize("seed", [0, 1])
def test_driver_sigkill_then_rerun_equals_uninterrupted(tmp_path, seed):
    src = corpus(tmp_path)
    ref = tmp_path / "ref"
    assert cli(str(src), "--out", str(ref), "--executor", "local", *ARGS).wait(120) == 0
    out = tmp_path / "out"
    rng = random.Random(seed)
    target = rng.randint(1, 10)  # kill after this many committed shards
    p = cli(str(src), "--out", str(out), "--executor", "local", *ARGS)
    parts = out / "_work" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if parts.exists() and len(os.listdir(parts)) >= target:
            break
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "index.json").exists()  # nothing final published yet
    assert_no_partial_tars(out)
    done_before = len([n for n in os.listdir(parts) if n.endswith(".json")])
    q = cli(str(src), "--out", str(out), "--executor", "local", *ARGS)
    stdout, stderr = q.communicate(timeout=120)
    assert q.returncode == 0, stderr.decode()
    assert read_tree(out) == read_tree(ref)
    import json

    stats = json.loads((out / "stats.json").read_text())
    assert stats["resumed_shards"] == done_before
    assert verify_dataset(str(out)) == []


def _kill_one_task_process(name: str, stop: threading.Event, killed: list) -> None:
    """SIGKILL the first process whose title says it is running ``name`` (Ray sets it)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if cmd.startswith(f"ray::{name}".encode()):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                except ProcessLookupError:
                    continue
                return
        time.sleep(0.005)


CFG = IngestConfig(image=ImageOptions(resize="shortest", size=96, format="jpg"),
                   max_samples=3, name="t")


@pytest.mark.ray
def test_worker_sigkill_mid_task_is_retried_to_an_identical_result(ray_cluster, tmp_path):
    src = corpus(tmp_path, n=48, size=(900, 700))
    ingest([str(src)], str(tmp_path / "ref"), CFG, executor=LocalExecutor(1))
    stop, killed = threading.Event(), []
    t = threading.Thread(target=_kill_one_task_process, args=("run_shard_task", stop, killed))
    t.start()
    try:
        r = ingest([str(src)], str(tmp_path / "out"), CFG, executor=RayExecutor(max_retries=3))
    finally:
        stop.set()
        t.join()
    assert killed, "no task process was caught running"
    assert r.stats["failed"] == 0
    assert read_tree(tmp_path / "out") == read_tree(tmp_path / "ref")


@pytest.mark.ray
def test_task_dying_on_every_attempt_becomes_ledger_rows_then_retry_failed(ray_cluster, tmp_path):
    src = corpus(tmp_path, n=48, size=(900, 700))
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    t = threading.Thread(target=_kill_one_task_process, args=("run_shard_task", stop, killed))
    t.start()
    try:
        r = ingest([str(src)], str(out), IngestConfig(**{**CFG.__dict__, "max_failure_rate": 1.0}),
                   executor=RayExecutor(max_retries=0))
    finally:
        stop.set()
        t.join()
    assert killed
    rows = pq.read_table(out / "ledger.parquet").to_pylist()
    lost = [x for x in rows if x["reason"] == "worker_lost"]
    assert len(lost) == 3 and r.stats["failed"] == 3
    assert r.stats["inputs"] == 48 == r.stats["ok"] + r.stats["failed"]
    assert verify_dataset(str(out)) == []
    r2 = ingest([str(src)], str(out), IngestConfig(**{**CFG.__dict__, "max_failure_rate": 1.0}),
                executor=RayExecutor(max_retries=0), retry_failed=True)
    assert (r2.stats["ok"], r2.stats["failed"], r2.stats["inputs"]) == (48, 0, 48)
    assert verify_dataset(str(out)) == []


def test_retry_failed_reattempts_only_failed_inputs_in_new_shards(tmp_path):
    src = corpus(tmp_path, n=7, size=(64, 48))
    bad = src / "g1" / "p001.jpg"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])
    out = tmp_path / "out"
    cfg = IngestConfig(max_samples=3, max_failure_rate=1.0)
    r1 = ingest([str(src)], str(out), cfg, executor=LocalExecutor(1))
    assert r1.stats["failures_by_reason"] == {"truncated": 1}
    before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    bad.write_bytes(good_bytes)  # the user fixes the file
    r2 = ingest([str(src)], str(out), cfg, executor=LocalExecutor(1), retry_failed=True)
    assert (r2.stats["ok"], r2.stats["failed"], r2.stats["inputs"]) == (7, 0, 7)
    after = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    assert {k: after[k] for k in before} == before  # old shards untouched
    new = set(after) - set(before)
    assert len(new) == 1
    rows = pq.read_table(out / "ledger.parquet").to_pylist()
    assert len(rows) == 7 and len({x["key"] for x in rows}) == 7
    assert next(x for x in rows if x["key"] == "g1__p001")["shard"] == new.pop()[:-4]
    assert verify_dataset(str(out)) == []
    r3 = ingest([str(src)], str(out), cfg, executor=LocalExecutor(1), retry_failed=True)
    assert r3.stats["ok"] == 7  # nothing left to retry: no new shard
    assert len(list((out / "shards").glob("*.tar"))) == len(after)


def test_retry_failed_needs_a_finished_dataset(tmp_path):
    src = corpus(tmp_path, n=2, size=(32, 32))
    with pytest.raises(JobError, match="nothing to retry"):
        ingest([str(src)], str(tmp_path / "out"), executor=LocalExecutor(1), retry_failed=True)


def test_unwritable_output_stops_with_a_clear_message(tmp_path):
    src = corpus(tmp_path, n=4, size=(32, 32))
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    os.chmod(out / "shards", 0o555)
    cmd = [sys.executable, "-m", "mmshard.cli.main", "ingest", str(src), "--out", str(out),
           "--executor", "local", "--no-progress"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv")
        caps = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "permission denied writing" in p.stderr and "shards" in p.stderr
    assert not (out / "index.json").exists()
