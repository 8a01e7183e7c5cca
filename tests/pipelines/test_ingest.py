import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from mmshard.dataset import open_dataset
from mmshard.errors import JobError
from mmshard.media.audio import AudioOptions
from mmshard.media.image import ImageOptions
from mmshard.pipelines.executor import LocalExecutor, RayExecutor
from mmshard.pipelines.ingest.job import FailureRateError, IngestConfig, ingest
from mmshard.pipelines.ingest.sources import SourceOptions
from mmshard.verify import verify_dataset
from tests.conftest import write_image, write_text

LENIENT = dict(max_failure_rate=1.0)


def read_tree(out):
    """Every published file (not the _work/ state, not timing-bearing stats.json)."""
    files = {}
    for d, _, names in os.walk(out):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), out)
            if rel != "stats.json" and not rel.startswith("_work"):
                files[rel] = open(os.path.join(d, n), "rb").read()
    return files


def ledger(out):
    """The ledger rows of inputs (``ignored`` rows are files that are not inputs)."""
    rows = pq.read_table(os.path.join(out, "ledger.parquet")).to_pylist()
    return [r for r in rows if r["status"] != "ignored"]


def test_every_bad_input_is_a_ledger_row_with_its_reason(mixed_corpus, tmp_path):
    root, expected = mixed_corpus
    out = str(tmp_path / "out")
    r = ingest([str(root)], out, IngestConfig(**LENIENT), executor=LocalExecutor(1))
    rows = {row["key"]: row for row in ledger(out)}
    for key, reason in expected.items():
        assert rows[key]["status"] == "failed" and rows[key]["reason"] == reason, rows[key]
        assert rows[key]["detail"]
    s = r.stats
    assert s["inputs"] == len(rows) == s["ok"] + s["failed"] + s["duplicate"]
    assert s["ok"] == 8 and s["failed"] == len(expected)
    assert verify_dataset(out) == []


def test_permission_denied_is_a_ledger_row(tmp_path):
    src = tmp_path / "src"
    write_image(str(src / "ok.jpg"))
    write_image(str(src / "secret.jpg"))
    os.chmod(src / "secret.jpg", 0o000)
    out = str(tmp_path / "out")
    code = ("import sys; from mmshard.pipelines.ingest.job import IngestConfig, ingest; "
            "from mmshard.pipelines.executor import LocalExecutor; "
            "ingest([sys.argv[1]], sys.argv[2], IngestConfig(max_failure_rate=1.0), "
            "executor=LocalExecutor(1))")
    cmd = [sys.executable, "-c", code, str(src), out]
    if os.geteuid() == 0:  # root reads anything: run without the DAC-override capabilities
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv")
        caps = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
    subprocess.run(cmd, check=True, timeout=120)
    rows = {r["key"]: r for r in ledger(out)}
    assert rows["ok"]["status"] == "ok"
    assert rows["secret"]["status"] == "failed"
    assert rows["secret"]["reason"] == "permission_denied"


def test_oversized_file_is_too_large(tmp_path):
    write_image(str(tmp_path / "src" / "big.jpg"), 400, 300)
    out = str(tmp_path / "out")
    ingest([str(tmp_path / "src")], out, IngestConfig(max_file_bytes=1000, **LENIENT),
           executor=LocalExecutor(1))
    assert ledger(out)[0]["reason"] == "too_large"


def test_failure_rate_above_threshold_raises_after_commit(mixed_corpus, tmp_path):
    root, expected = mixed_corpus
    out = str(tmp_path / "out")
    with pytest.raises(FailureRateError, match="max_failure_rate") as e:
        ingest([str(root)], out, IngestConfig(max_failure_rate=0.1), executor=LocalExecutor(1))
    assert e.value.result.stats["failed"] == len(expected)
    assert verify_dataset(out) == []  # the dataset is committed anyway


def test_splits_never_share_a_group(tmp_path):
    src = tmp_path / "src"
    for g in range(12):
        for i in range(3):
            write_text(str(src / f"g{g}" / f"s{i}.txt"), f"group {g}")
            write_image(str(src / f"g{g}" / f"s{i}.jpg"), 32, 32, seed=g * 10 + i)
    out = str(tmp_path / "out")
    r = ingest([str(src)], out, IngestConfig(
        sources=SourceOptions(group_level=0), splits=(("train", 0.5), ("val", 0.25),
                                                      ("test", 0.25)), max_samples=4),
        executor=LocalExecutor(1))
    man = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    split_of = {}
    for row in man:
        assert split_of.setdefault(row["group"], row["split"]) == row["split"]
    assert len(set(split_of.values())) >= 2
    assert sum(s["samples"] for s in r.stats["splits"].values()) == 36
    idx = open_dataset(out).index
    assert all(s.url.split("/")[-1].startswith(s.split + "-") for s in idx.shards)
    assert {k: v["samples"] for k, v in idx.splits.items()} == \
        {k: v["samples"] for k, v in r.stats["splits"].items()}


def test_shard_size_limits(tmp_path):
    for i in range(10):
        write_image(str(tmp_path / "src" / f"i{i}.jpg"), 200, 200, seed=i)
    size = os.path.getsize(tmp_path / "src" / "i0.jpg")
    out = str(tmp_path / "out")
    ingest([str(tmp_path / "src")], out, IngestConfig(max_samples=4), executor=LocalExecutor(1))
    assert [s.nsamples for s in open_dataset(out).index.shards] == [4, 4, 2]
    out2 = str(tmp_path / "out2")
    ingest([str(tmp_path / "src")], out2, IngestConfig(max_bytes=int(size * 2.5)),
           executor=LocalExecutor(1))
    assert all(s.nsamples <= 3 for s in open_dataset(out2).index.shards)


def test_dedup_marks_exact_copies(tmp_path):
    write_image(str(tmp_path / "src" / "a.jpg"), seed=1)
    write_image(str(tmp_path / "src" / "b.jpg"), seed=2)
    shutil.copy(tmp_path / "src" / "a.jpg", tmp_path / "src" / "c.jpg")
    out = str(tmp_path / "out")
    r = ingest([str(tmp_path / "src")], out, IngestConfig(dedup=True), executor=LocalExecutor(2))
    rows = {x["key"]: x for x in ledger(out)}
    assert rows["c"]["status"] == "duplicate" and "a" in rows["c"]["detail"]
    assert (r.stats["ok"], r.stats["duplicate"], r.stats["inputs"]) == (2, 1, 3)
    assert verify_dataset(out) == []


def _corpus(tmp_path):
    src = tmp_path / "src"
    for i in range(9):
        write_image(str(src / f"d{i % 3}" / f"p{i}.jpg"), 150 + i, 100, seed=i)
        write_text(str(src / f"d{i % 3}" / f"p{i}.txt"), f"c{i}")
    from mmshard import synth

    synth.write_audio(str(src / "a" / "s.wav"), synth.speech_like(0.3, 22050), 22050)
    return src


CFG = IngestConfig(image=ImageOptions(resize="shortest", size=64, format="jpg"),
                   audio=AudioOptions(sample_rate=16000), max_samples=3,
                   splits=(("train", 0.7), ("val", 0.3)), name="t")


def test_byte_identical_for_1_and_2_local_workers(tmp_path):
    src = _corpus(tmp_path)
    ingest([str(src)], str(tmp_path / "o1"), CFG, executor=LocalExecutor(1))
    ingest([str(src)], str(tmp_path / "o2"), CFG, executor=LocalExecutor(2))
    a, b = read_tree(tmp_path / "o1"), read_tree(tmp_path / "o2")
    assert a == b
    assert any(k.startswith("shards/") for k in a)


@pytest.mark.ray
def test_ray_executor_gives_the_same_bytes_and_reads_back(ray_cluster, tmp_path):
    src = _corpus(tmp_path)
    ingest([str(src)], str(tmp_path / "local"), CFG, executor=LocalExecutor(1))
    ex = RayExecutor()
    for workers in (1, 2):
        ex.workers = workers  # in-flight task bound
        out = tmp_path / f"ray{workers}"
        ingest([str(src)], str(out), CFG, executor=ex)
        assert read_tree(out) == read_tree(tmp_path / "local")
    # interoperability: Ray Data reads the shards with no mmshard code
    ds = ray_cluster.data.read_webdataset(str(tmp_path / "ray2" / "shards"))
    rows = ds.take_all()
    assert len(rows) == 10
    assert {r["__key__"] for r in rows} >= {"d0__p0", "a__s"}


def test_plain_webdataset_reads_everything(tmp_path):
    import webdataset as wds

    src = _corpus(tmp_path)
    out = tmp_path / "out"
    ingest([str(src)], str(out), CFG, executor=LocalExecutor(1))
    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"))
    assert len(got) == 10
    img = next(s for s in got if "jpg" in s)
    assert min(img["jpg"].size) == 64 and isinstance(img["json"], dict)


def test_existing_output_with_other_config_is_refused(tmp_path):
    src = _corpus(tmp_path)
    out = str(tmp_path / "out")
    ingest([str(src)], out, CFG, executor=LocalExecutor(1))
    other = IngestConfig(max_samples=5)
    with pytest.raises(JobError, match="different config.*max_samples"):
        ingest([str(src)], out, other, executor=LocalExecutor(1))
    r = ingest([str(src)], out, other, executor=LocalExecutor(1), overwrite=True)
    assert r.stats["ok"] == 10 and verify_dataset(out) == []


def test_verify_catches_tampering(tmp_path):
    src = _corpus(tmp_path)
    out = tmp_path / "out"
    ingest([str(src)], str(out), CFG, executor=LocalExecutor(1))
    shard = sorted((out / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_dataset(str(out))
    assert any("sha256" in p for p in problems)


def test_no_temporary_or_partial_files_are_left(tmp_path):
    src = _corpus(tmp_path)
    out = tmp_path / "out"
    ingest([str(src)], str(out), CFG, executor=LocalExecutor(2))
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".tmp")]
    assert leftovers == []
    idx = json.loads((out / "index.json").read_text())
    assert idx["__kind__"] == "wids-shard-index-v1"
    assert all(os.path.getsize(out / s["url"]) == s["filesize"] for s in idx["shardlist"])
