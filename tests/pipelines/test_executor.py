"""Executors: backpressure (bounded in-flight tasks) and error propagation."""

import threading
import time

import pytest

from mmshard.errors import ConfigError, JobError
from mmshard.pipelines.executor import LocalExecutor, RayExecutor, make_executor


def _slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise JobError("disk full while writing shards/x.tar")
    return x


class CountingArgs:
    """An argument stream that records how far ahead of the results it was consumed."""

    def __init__(self, n: int) -> None:
        self.n, self.taken, self.done, self.max_ahead = n, 0, 0, 0
        self.lock = threading.Lock()

    def __iter__(self):
        for i in range(self.n):
            with self.lock:
                self.taken += 1
                self.max_ahead = max(self.max_ahead, self.taken - self.done)
            yield i


@pytest.mark.parametrize("workers,limit", [(1, None), (2, None), (2, 3)])
def test_local_executor_bounds_in_flight_tasks_and_returns_everything(workers, limit):
    args = CountingArgs(40)
    got = {}
    for i, r in LocalExecutor(workers).imap_unordered(_slow_square, args, max_in_flight=limit):
        got[i] = r
        args.done += 1
    assert got == {i: i * i for i in range(40)}
    bound = 1 if workers == 1 else (limit or 2 * workers)
    assert args.max_ahead <= bound + 1


def test_task_errors_propagate_unchanged_locally():
    with pytest.raises(JobError, match="disk full"):
        list(LocalExecutor(2).imap_unordered(_fail_on_three, range(6)))


@pytest.mark.ray
def test_ray_executor_bounds_in_flight_and_unwraps_task_errors(ray_cluster):
    from mmshard.keys import path_key
    from mmshard.samplers.splits import parse_split_spec

    # library functions, importable by Ray workers (test modules are not)
    ex = RayExecutor()
    args = CountingArgs(20)
    got = {}
    for i, r in ex.imap_unordered(path_key, (f"d/{j}.x" for j in args), max_in_flight=2):
        got[i] = r
        args.done += 1
    assert got == {i: path_key(f"d/{i}.x") for i in range(20)} and args.max_ahead <= 3
    with pytest.raises(ConfigError, match="sum to 1"):  # the task's own error, not RayTaskError
        list(ex.imap_unordered(parse_split_spec, ["train=1", "train=0.5"]))


def test_make_executor_rejects_unknown_kinds():
    with pytest.raises(ConfigError, match="local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError):
        LocalExecutor(0)


EMBEDDED_DRIVER = """
import json, os
from mmshard.keys import path_key
from mmshard.pipelines.executor import RayExecutor
from mmshard.pipelines.lock import process_tree

out = {}
ex = RayExecutor(1)  # an embedded cluster, started in the background
out["workers_before_start"] = ex.workers
out["keys"] = sorted(r for _, r in ex.imap_unordered(path_key, ["d/0.x", "d/1.x"]))
cluster = [p for p in process_tree([os.getpid()]) if p != os.getpid()]
ex.close()
out["cluster_procs"] = len(cluster)
out["left"] = []
for p in cluster:  # a zombie counts too
    try:
        with open(f"/proc/{p}/stat") as f:
            out["left"].append(f.read()[:120])
    except OSError:
        pass
print(json.dumps(out))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_embedded_cluster_starts_in_the_background_and_close_leaves_no_process(tmp_path):
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from mmshard.keys import path_key

    root = Path(__file__).resolve().parents[2]
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(root), RAY_TMPDIR=short)
    try:
        p = subprocess.run([sys.executable, "-c", EMBEDDED_DRIVER], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    finally:
        import shutil

        shutil.rmtree(short, ignore_errors=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["workers_before_start"] == 1
    assert out["keys"] == sorted(path_key(f"d/{i}.x") for i in range(2))
    assert out["cluster_procs"] >= 3  # GCS, raylet, a worker at least
    assert out["left"] == [], "processes of the embedded cluster outlived close()"
