"""Issue 12 items 5, 6, 7, 9 and C2: disk full, two jobs on one output, a driver that
dies, --overwrite and stale sidecars.  Real processes, real files: disk full is
RLIMIT_FSIZE in a subprocess (writes past it fail with EFBIG, as a full disk fails with
ENOSPC); concurrency is a second process."""

import errno
import gc
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmshard.errors import JobError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.lock import LOCK_FILE, LeaseLost, claim_output, read_lease
from mmshard.pipelines.task import ShardOutput
from mmshard.storage import Storage
from mmshard.tario import HashingWriter, TarWriter
from mmshard.verify import verify_dataset
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[2]
FSIZE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from mmshard.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def cli(args, limit=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = FSIZE if limit else "import sys; from mmshard.cli.main import main; " \
                               "sys.exit(main(sys.argv[2:]))"
    return subprocess.run([sys.executable, "-c", code, str(limit or 0), *args], env=env,
                          capture_output=True, text=True, cwd=ROOT, **kw)


def tiny_tree(path: Path, n: int = 8) -> Path:
    for i in range(n):
        write_image(str(path / f"im{i:02d}.png"), w=8, h=8, seed=i, fmt="PNG")
    return path


def committed(out: Path) -> dict[str, bytes]:
    names = ["index.json", "manifest.parquet", "ledger.parquet"]
    files = {n: (out / n).read_bytes() for n in names}
    files.update({f"shards/{p.name}": p.read_bytes() for p in sorted((out / "shards").iterdir())})
    return files


def temporaries(out: Path) -> list[str]:
    return [str(p) for p in out.rglob(".tmp-*")]


# ------------------------------------------------------------------ item 9: disk full
@pytest.mark.slow
@pytest.mark.parametrize("limit", [6_000, 20_000])  # shard write / final commit
def test_disk_full_is_one_line_exit_2_and_a_rerun_resumes_to_the_same_bytes(tmp_path, limit):
    src = tiny_tree(tmp_path / "src")
    args = ["ingest", str(src), "--executor", "local", "--no-progress", "--max-samples", "1"]
    clean = cli([*args, "--out", str(tmp_path / "clean" / "ds")])  # same name in index.json
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "ds"
    full = cli([*args, "--out", str(out)], limit=limit)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full"), full.stderr
    assert "Traceback" not in full.stderr and "Exception ignored" not in full.stderr
    assert temporaries(out) == []
    assert not (out / "index.json").exists()  # nothing half-written is visible
    again = cli([*args, "--out", str(out)])
    assert again.returncode == 0, again.stderr
    assert committed(out) == committed(tmp_path / "clean" / "ds")
    assert verify_dataset(str(out)) == []


class FullDisk(io.RawIOBase):
    """A file that takes ``cap`` bytes, then fails like a full disk."""

    def __init__(self, cap: int) -> None:
        self.cap, self.n = cap, 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.closed:
            raise ValueError("write to closed file")
        if self.n + len(b) > self.cap:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n += len(b)
        return len(b)


def test_a_tar_abandoned_on_disk_full_writes_nothing_from_its_finaliser():
    caught = []
    old, sys.unraisablehook = sys.unraisablehook, caught.append
    try:
        f = FullDisk(15_000)
        w = TarWriter(HashingWriter(f))
        with pytest.raises(OSError):
            for i in range(10):
                w.write({"__key__": f"k{i}", "bin": b"x" * 3000})
        f.close()  # what the atomic writer does on its way out
        del w
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert caught == []  # was: "Exception ignored in _Stream.__del__: write to closed file"


# ------------------------------------------------------------ item 6: one job per output
HOLDER = """
import sys, time
from mmshard.storage import Storage
from mmshard.pipelines.lock import claim_output
lock = claim_output(Storage(sys.argv[1]), job="holder")
print(lock.token, flush=True)
sys.stdin.read()
"""


def hold(out: Path) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    return p, p.stdout.readline().strip()


def test_second_job_fails_fast_naming_the_holder_and_keeps_its_temporaries(tmp_path):
    src = tiny_tree(tmp_path / "src", 2)
    out = tmp_path / "out"
    holder, token = hold(out)
    try:
        (out / "shards").mkdir(parents=True)
        (out / "shards" / ".tmp-inflight").write_bytes(b"A is writing this")
        r = cli(["ingest", str(src), "--out", str(out), "--executor", "local", "--no-progress"])
        assert r.returncode == 2 and f"holder pid {holder.pid}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert (out / "shards" / ".tmp-inflight").exists()  # B touched nothing of A's
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the lock is stale, the next job takes it over
    r = cli(["ingest", str(src), "--out", str(out), "--executor", "local", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert not (out / "shards" / ".tmp-inflight").exists()  # cleaned, under the lock
    assert read_lease(Storage(str(out))) is None  # finished: released, no holder left


def test_a_finished_job_frees_the_output_while_its_process_lives_on(tmp_path):
    # a notebook or service that ran ingest (and tokenize) must not block a later CLI run
    from mmshard import IngestConfig, ingest, make_executor
    from mmshard.pipelines.transform import tokenize

    src = tiny_tree(tmp_path / "src", 2)
    out = tmp_path / "out"
    ingest([str(src)], str(out), IngestConfig(), executor=make_executor("local"))
    tokenize(str(out), {"spectral": {}}, executor=make_executor("local"))
    assert read_lease(Storage(str(out))) is None
    r = cli(["ingest", str(src), "--out", str(out), "--executor", "local", "--no-progress"])
    assert r.returncode == 0, r.stderr  # the same job again: resumed, nothing to do


def test_two_threads_of_one_process_cannot_share_an_output(tmp_path):
    import threading

    st = Storage(str(tmp_path / "o"))
    lock = claim_output(st, job="first")  # this thread's job is running
    errors = []

    def second():
        try:
            claim_output(st, job="second")
        except JobError as e:
            errors.append(str(e))

    t = threading.Thread(target=second)
    t.start()
    t.join()
    assert errors and "another job in this process" in errors[0]
    lock.release()


# ------------------------------------------------------------- item 5: lease and reaper
def test_a_task_never_commits_for_a_driver_that_is_gone(tmp_path):
    out = tmp_path / "out"
    driver, token = hold(out)
    st = Storage(str(out))
    with pytest.raises(LeaseLost, match="is gone"):
        with ShardOutput(st, "shards/train-000000.tar") as shard:
            shard.write({"__key__": "k", "txt": "written while the driver lived"})
            driver.kill()  # SIGKILL: the driver dies mid-task
            driver.wait()
    assert not (out / "shards" / "train-000000.tar").exists()
    assert temporaries(out) == []
    driver, _ = hold(out)  # a task whose inputs all failed: no tar, and no part record after
    with pytest.raises(LeaseLost):
        with ShardOutput(st, "shards/train-000001.tar"):
            driver.kill()
            driver.wait()
    # a newer job took the output over: the old task does not commit into it either
    holder2, _ = hold(out)
    try:
        with pytest.raises(LeaseLost, match="now belongs to"):
            with ShardOutput(st, "shards/x.tar") as shard:
                shard._lease = token  # started under the first driver
                shard.write({"__key__": "k", "txt": "late"})
    finally:
        holder2.kill()
        holder2.wait()


DRIVER = """
import os, sys, time
from mmshard.pipelines.executor import RayExecutor

def task(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)

ex = RayExecutor(1)
print("up", flush=True)
for _ in ex.imap_unordered(task, [sys.argv[1]]):
    pass
"""


@pytest.mark.ray
@pytest.mark.slow
def test_embedded_ray_cluster_dies_with_a_killed_driver_group(tmp_path):
    import shutil
    import tempfile
    import time

    marker = tmp_path / "worker.pid"
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": short}
    p = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "up"
        for _ in range(1200):  # until the task runs (bounded, not a timing assertion)
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.1)
        worker = int(marker.read_text())
        os.killpg(p.pid, signal.SIGKILL)  # kill -9 -PGID, as in the issue
        p.wait()
        for _ in range(600):
            if not os.path.exists(f"/proc/{worker}"):
                break
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{worker}"), "the Ray worker outlived its driver"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(short, ignore_errors=True)


# -------------------------------------------------------- item 7 and C2: stale fields
def test_overwrite_removes_field_sets_and_verify_refuses_a_stale_sidecar(tmp_path):
    from mmshard.dataset import DatasetIndex, ShardInfo

    src = tiny_tree(tmp_path / "src", 3)
    out = tmp_path / "out"
    cfg = IngestConfig(max_samples=2)
    ingest([str(src)], str(out), cfg, executor=LocalExecutor(1))
    base = {s.url.rsplit("/", 1)[-1]: s for s in DatasetIndex.from_json(
        (out / "index.json").read_bytes()).shards}
    (out / "mel").mkdir()
    sidecar = []
    for name, sh in base.items():
        with TarWriter(str(out / "mel" / name)) as w:
            for row in pq.read_table(out / "manifest.parquet").to_pylist():
                if row["shard"] == name.removesuffix(".tar"):
                    w.write({"__key__": row["key"], "mel.npy": b"\x93NUMPY"})
        sidecar.append(ShardInfo(url=name, split=sh.split, nsamples=sh.nsamples, filesize=0,
                                 sha256="", base_sha256=sh.sha256))
    idx = DatasetIndex(name="d/mel", shards=tuple(sidecar), field_set="mel")
    (out / "mel" / "index.json").write_bytes(idx.to_json())
    assert verify_dataset(str(out)) == []
    stale = DatasetIndex(name="d/mel", field_set="mel", shards=tuple(
        ShardInfo(**{**s.__dict__, "base_sha256": "0" * 64}) for s in sidecar))
    (out / "mel" / "index.json").write_bytes(stale.to_json())
    problems = verify_dataset(str(out))
    assert any("field set 'mel'" in p and "stale sidecar" in p and "train-000000.tar" in p
               for p in problems), problems
    (out / "dedup").mkdir()
    (out / "dedup" / "keep.parquet").write_bytes(b"old")
    (out / "labels.json").write_text(json.dumps({"names": ["old"]}))
    (out / "notes.txt").write_text("mine")  # not the dataset's: kept
    ingest([str(src)], str(out), cfg, executor=LocalExecutor(1), overwrite=True)
    assert not (out / "mel").exists() and not (out / "dedup").exists()
    assert not (out / "labels.json").exists() and (out / "notes.txt").exists()
    assert (out / LOCK_FILE).exists() and verify_dataset(str(out)) == []


@pytest.mark.slow
def test_disk_full_in_tokenize_is_one_line_and_a_rerun_finishes(tmp_path):
    src = tiny_tree(tmp_path / "src", 4)
    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(max_samples=2), executor=LocalExecutor(1))
    args = ["tokenize", str(ds), "--fields", "emb", "--option", "emb.encoder=hashing",
            "--option", "emb.field=json", "--executor", "local", "--no-progress"]
    full = cli(args, limit=2000)
    assert full.returncode == 2 and len(full.stderr.strip().splitlines()) == 1, full.stderr
    assert "disk full" in full.stderr and "Traceback" not in full.stderr
    assert temporaries(ds) == []
    again = cli(args)
    assert again.returncode == 0, again.stderr
    assert verify_dataset(str(ds)) == []
