"""Output on an S3-compatible server (moto, loopback) and a real two-node Ray cluster."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mmshard.media.image import ImageOptions
from mmshard.pipelines.executor import LocalExecutor, RayExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.verify import verify_dataset
from tests.conftest import write_image, write_text
from tests.pipelines.test_ingest import read_tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = IngestConfig(image=ImageOptions(resize="shortest", size=48, format="jpg"),
                   max_samples=3, name="t", splits=(("train", 0.7), ("val", 0.3)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback; yields fsspec storage options for it."""
    pytest.importorskip("moto")
    s3fs = pytest.importorskip("s3fs")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        opts = {"key": "testing", "secret": "testing",
                "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                                  "region_name": "eu-west-1"}}
        s3fs.S3FileSystem(**opts).mkdir("mmshard-test")
        yield opts
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def src(tmp_path):
    for i in range(8):
        write_image(str(tmp_path / "src" / f"g{i % 3}" / f"p{i}.jpg"), 90, 60, seed=i)
        write_text(str(tmp_path / "src" / f"g{i % 3}" / f"p{i}.txt"), f"c{i}")
    (tmp_path / "src" / "bad.jpg").write_bytes(b"")
    return tmp_path / "src"


def s3_tree(opts, url):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **opts)
    return {p[len(path) + 1:]: fs.cat_file(p) for p in fs.find(path)
            if not p[len(path) + 1:].startswith("_work") and not p.endswith("stats.json")}


def test_s3_round_trip_equals_local_and_resumes(s3, src, tmp_path):
    cfg = IngestConfig(**{**CFG.__dict__, "max_failure_rate": 1.0})
    ingest([str(src)], str(tmp_path / "local"), cfg, executor=LocalExecutor(1))
    url = "s3://mmshard-test/ds1"
    r = ingest([str(src)], url, cfg, executor=LocalExecutor(2), storage_options=s3)
    assert r.stats["ok"] == 8 and r.stats["failed"] == 1
    remote = s3_tree(s3, url)
    assert remote == read_tree(tmp_path / "local")
    assert not [k for k in remote if ".tmp-" in k]
    assert verify_dataset(url, storage_options=s3) == []
    # a rerun of a finished job resumes every shard and changes nothing
    r2 = ingest([str(src)], url, cfg, executor=LocalExecutor(1), storage_options=s3)
    assert r2.stats["resumed_shards"] == len(r2.stats["per_shard"])
    assert s3_tree(s3, url) == remote


@pytest.mark.ray
def test_s3_output_from_ray_tasks(ray_cluster, s3, src, tmp_path):
    cfg = IngestConfig(**{**CFG.__dict__, "max_failure_rate": 1.0})
    ingest([str(src)], str(tmp_path / "local"), cfg, executor=LocalExecutor(1))
    url = "s3://mmshard-test/ds-ray"
    ingest([str(src)], url, cfg, executor=RayExecutor(), storage_options=s3)
    assert s3_tree(s3, url) == read_tree(tmp_path / "local")


def _kill_matching(*needles: str) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_two_node_ray_cluster_to_shared_path_and_s3(s3, src, tmp_path):
    """`ray start --head` (no CPUs: it can run no task) + a second `ray start` node with
    its own resources; the CLI joins with --address, so every task runs on node two."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    temp = f"/tmp/mmshard-2n-{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=0",
                        f"--temp-dir={temp}", "--include-dashboard=false"],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_bin, "start", f"--address={address}", "--num-cpus=2",
                        "--resources={\"node2\": 1}"],
                       env=env, check=True, capture_output=True, timeout=120)
        cfg_args = ["--image-resize", "shortest", "--image-size", "48", "--image-format", "jpg",
                    "--max-samples", "3", "--name", "t", "--split", "train=0.7,val=0.3",
                    "--max-failure-rate", "1", "--no-progress", "--address", address]
        import json

        for out, extra in ((str(tmp_path / "shared"), []),
                           ("s3://mmshard-test/two-node", ["--storage-options",
                                                           json.dumps(s3)])):
            p = subprocess.run([sys.executable, "-m", "mmshard.cli.main", "ingest", str(src),
                                "--out", out, *cfg_args, *extra], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stderr[-3000:]
            assert "inputs 9 = ok 8 + failed 1" in p.stdout
    finally:
        _kill_matching(temp, address)
    ingest([str(src)], str(tmp_path / "local"), IngestConfig(**{**CFG.__dict__,
           "max_failure_rate": 1.0}), executor=LocalExecutor(1))
    assert read_tree(tmp_path / "shared") == read_tree(tmp_path / "local")
    assert s3_tree(s3, "s3://mmshard-test/two-node") == read_tree(tmp_path / "local")


def test_mine_codebook_and_train_vq_artifacts_on_s3(s3, src, tmp_path):
    """Every artifact goes through Storage: mine outputs + index, a codebook and a VQ-VAE
    checkpoint + summary land on the S3 server whole, and equal a local run's."""
    import fsspec
    import numpy as np
    import pyarrow.parquet as pq

    from mmshard.pipelines.mine.config import MineConfig
    from mmshard.pipelines.mine.embeddings_io import EmbeddingSource
    from mmshard.pipelines.mine.job import mine
    from mmshard.pipelines.train.codebook import fit_codebook
    from mmshard.pipelines.train.vqvae import train_vq

    fs = fsspec.filesystem("s3", **s3)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "e.npy", rng.standard_normal((60, 8)).astype(np.float32))
    (tmp_path / "e.keys.txt").write_text("".join(f"k{i}\n" for i in range(60)))
    emb = EmbeddingSource(path=str(tmp_path / "e.npy"))
    local = mine(MineConfig(queries=emb, out=str(tmp_path / "n.parquet"), k=3),
                 progress=False)
    url = "s3://mmshard-test/mine/n.parquet"
    remote = mine(MineConfig(queries=emb, out=url, k=3, work_dir=str(tmp_path / "w")),
                  progress=False, storage_options=s3)
    names = {p.rsplit("/", 1)[-1] for p in fs.ls("mmshard-test/mine")}
    assert {"n.parquet", "n.summary.json", "n.scores.png", "n.parquet.index",
            "n.parquet.index.json"} <= names
    assert not any(".tmp-" in n for n in names)
    with fs.open("mmshard-test/mine/n.parquet", "rb") as f:
        assert pq.read_table(f).to_pylist() == pq.read_table(local.out).to_pylist()
    assert remote.n_mined == 60
    again = mine(MineConfig(queries=emb, out=url, k=3, work_dir=str(tmp_path / "w")),
                 progress=False, storage_options=s3)
    assert again.chunks_computed == 0  # up to date, read back from S3

    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(**{**CFG.__dict__, "max_failure_rate": 1.0,
                                                "splits": (("train", 1.0),)}),
           executor=LocalExecutor(1))
    cb = fit_codebook(str(ds), "s3://mmshard-test/art/vq.safetensors", field="jpg", k=4,
                      patch=8, storage_options=s3)
    assert cb.out == "s3://mmshard-test/art/vq.safetensors"
    assert fs.cat_file("mmshard-test/art/vq.safetensors")[8:9] == b"{"  # safetensors header
    r = train_vq(str(ds), "s3://mmshard-test/art/ae.safetensors", k=8, steps=2,
                 image_size=16, batch_size=4, usage_images=0,
                 model={"code_dim": 4, "channels": [4]}, storage_options=s3)
    assert fs.exists("mmshard-test/art/ae.safetensors")
    import json

    assert json.loads(fs.cat_file("mmshard-test/art/ae.summary.json"))["steps"] == r.stats["steps"]
