"""The clip extraction job (`mmshard clips`): plan, cut, commit, resume, bad videos."""

import argparse
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard import synth
from mmshard.cli import clips_cmd
from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError, JobError
from mmshard.pipelines.clips.job import (
    ClipsConfig,
    ClipsTask,
    cut_clips,
    extract_clips,
    plan_video_clips,
    run_clips_task,
)
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import FailureRateError, IngestConfig, ingest
from mmshard.pipelines.ingest.sources import SourceOptions
from mmshard.pipelines.transform.job import tokenize
from mmshard.tario import TarWriter, iter_tar
from tests._video_media import index_frame, read_index, write_cfr

FAST = {"preset": "ultrafast"}


def decode_indices(mp4: bytes) -> list[int]:
    with av.open(io.BytesIO(mp4)) as c:
        return [read_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def corrupt(ds, key):
    """Replace one video's bytes in its base shard (a file that rotted after ingest)."""
    for name in os.listdir(ds / "shards"):
        path = ds / "shards" / name
        samples = list(iter_tar(str(path)))
        if any(s["__key__"] == key for s in samples):
            with TarWriter(str(path)) as w:
                for s in samples:
                    if s["__key__"] == key:
                        s["mp4"] = b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200
                    w.write({k: v for k, v in s.items() if k != "__url__"})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """4 index-frame videos (25 fps: 60, 75, 50, 110 frames) in two groups and splits,
    captions on two, plus a photo; 2 samples per shard."""
    root = tmp_path_factory.mktemp("clips")
    src = root / "src"
    for i, n in enumerate((60, 75, 50, 110)):
        os.makedirs(src / f"g{i % 2}", exist_ok=True)
        write_cfr(src / f"g{i % 2}" / f"v{i}.mp4", n, w=64, h=48, gop=12)
        if i < 2:
            (src / f"g{i % 2}" / f"v{i}.txt").write_text(f"video {i}")
    os.makedirs(src / "img")
    (src / "img" / "p.jpg").write_bytes(synth.encode_image(synth.photo_like(32, 24)))
    ds = root / "ds"
    ingest([str(src)], str(ds), IngestConfig(max_samples=2, name="vids", splits=(
        ("train", 0.5), ("val", 0.5)), split_seed=1, sources=SourceOptions(group_level=0)),
        executor=LocalExecutor(1))
    return ds


def clips_of(out):
    d = open_dataset(str(out))
    return {s["__key__"]: s for sh in d.index.shards for s in d.iter_shard(sh)}


def test_fixed_windows_are_frame_accurate_clips(base, tmp_path):
    r = extract_clips(str(base), str(tmp_path / "c"), window_s=1.0, stride_s=0.8, tail="drop",
                      executor=LocalExecutor(1), **FAST)
    clips = clips_of(tmp_path / "c")
    by_src: dict[str, list] = {}
    for key, s in clips.items():
        doc = json.loads(s["json"])
        by_src.setdefault(doc["source_key"], []).append(doc)
        assert key == f"{doc['source_key']}_c{doc['clip_index']:04d}"
        got = decode_indices(s["mp4"])
        assert got == list(range(doc["start_frame"], doc["end_frame"]))  # frame accurate
        assert doc["frames"] == 25 and doc["sha256"] == hashlib.sha256(s["mp4"]).hexdigest()
        assert doc["start_time"] == pytest.approx(doc["start_frame"] / 25)
        assert doc["modality"] == "video" and doc["size"] == len(s["mp4"])
    # windows of 25 frames every 20: a 60-frame video has starts 0, 20 (40+25 > 60)
    assert {k: [d["start_frame"] for d in sorted(v, key=lambda d: d["clip_index"])]
            for k, v in by_src.items()} == {"g0__v0": [0, 20], "g1__v1": [0, 20, 40],
                                           "g0__v2": [0, 20], "g1__v3": [0, 20, 40, 60, 80]}
    assert r.stats["clips"] == len(clips) == 12
    assert r.stats["inputs"] == r.stats["ok"] == 4 and r.stats["non_video_samples"] == 1
    assert clips["g0__v0_c0001"]["txt"] == b"video 0" and "txt" not in clips["g0__v2_c0000"]
    from mmshard.verify import verify_dataset

    assert verify_dataset(str(tmp_path / "c")) == []  # a ledger of source videos is fine


def test_clips_keep_the_source_split_and_group(base, tmp_path):
    extract_clips(str(base), str(tmp_path / "c"), window_s=2.0, executor=LocalExecutor(1),
                  **FAST)
    src = {r["key"]: r for r in open_dataset(str(base)).read_table("manifest").to_pylist()}
    man = pq.read_table(tmp_path / "c" / "manifest.parquet").to_pylist()
    assert len({src[k]["split"] for k in src}) == 2  # the fixture spans both splits
    for row in man:
        s = src[json.loads(clips_of(tmp_path / "c")[row["key"]]["json"])["source_key"]]
        assert (row["split"], row["group"]) == (s["split"], s["group"])
    idx = json.loads((tmp_path / "c" / "index.json").read_text())
    for sh in idx["shardlist"]:
        assert sh["url"].startswith(f"shards/{sh['split']}-")


def test_output_is_byte_identical_across_runs_and_workers(base, tmp_path):
    extract_clips(str(base), str(tmp_path / "a"), window_s=1.2, executor=LocalExecutor(1))
    extract_clips(str(base), str(tmp_path / "b"), window_s=1.2, executor=LocalExecutor(2))
    for rel in ("index.json", "manifest.parquet", "ledger.parquet"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for name in os.listdir(tmp_path / "a" / "shards"):
        assert (tmp_path / "a" / "shards" / name).read_bytes() == \
            (tmp_path / "b" / "shards" / name).read_bytes()


def test_scene_clips_from_detector_and_from_the_keyframes_sidecar(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src)
    synth.write_video(str(src / "s.mp4"), frames=60, fps=10, size=(96, 64), cuts=(22, 41))
    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(), executor=LocalExecutor(1))
    extract_clips(str(ds), str(tmp_path / "c1"), mode="scenes", executor=LocalExecutor(1),
                  **FAST)
    tokenize(str(ds), {"keyframes": {}}, executor=LocalExecutor(1))
    extract_clips(str(ds), str(tmp_path / "c2"), mode="scenes", executor=LocalExecutor(1),
                  **FAST)
    for out, origin in (("c1", "detector"), ("c2", "sidecar")):
        docs = sorted((json.loads(s["json"]) for s in clips_of(tmp_path / out).values()),
                      key=lambda d: d["clip_index"])
        assert [(d["start_frame"], d["end_frame"]) for d in docs] == [(0, 22), (22, 41),
                                                                     (41, 60)]
        assert {d["source_facts"]["scenes_from"] for d in docs} == {origin}
    r = extract_clips(str(ds), str(tmp_path / "c3"), mode="scenes", min_clip_s=2.0,
                      executor=LocalExecutor(1), **FAST)
    assert r.stats["clips"] == 1  # only the first scene (2.2 s) is long enough


def test_bad_video_is_one_failed_ledger_row_and_leaves_no_clips(base, tmp_path):
    ds = tmp_path / "ds"
    import shutil

    shutil.copytree(base, ds)
    corrupt(ds, "g1__v1")
    r = extract_clips(str(ds), str(tmp_path / "c"), window_s=1.0, executor=LocalExecutor(1),
                      **FAST)
    ledger = pq.read_table(tmp_path / "c" / "ledger.parquet").to_pylist()
    assert sorted((x["key"], x["status"]) for x in ledger) == [
        ("g0__v0", "ok"), ("g0__v2", "ok"), ("g1__v1", "failed"), ("g1__v3", "ok")]
    bad = next(x for x in ledger if x["status"] == "failed")
    assert bad["reason"] == "undecodable_video" and bad["source"].endswith("v1.mp4")
    assert r.stats["inputs"] == r.stats["ok"] + r.stats["failed"] == 4
    assert not any(k.startswith("g1__v1_") for k in clips_of(tmp_path / "c"))
    with pytest.raises(FailureRateError, match="1 of 4 videos failed"):
        extract_clips(str(ds), str(tmp_path / "c2"), window_s=1.0, max_failure_rate=0.1,
                      executor=LocalExecutor(1), **FAST)


def test_rerun_resumes_and_refuses_other_options(base, tmp_path):
    out = tmp_path / "c"
    extract_clips(str(base), str(out), window_s=1.5, executor=LocalExecutor(1), **FAST)
    first = {p: (out / p).read_bytes() for p in ("index.json", "manifest.parquet",
                                                  "ledger.parquet")}
    parts = sorted(os.listdir(out / "_work" / "parts"))
    # a driver killed after one shard: its part record and tar are gone
    os.remove(out / "_work" / "parts" / parts[0])
    os.remove(out / "shards" / parts[0].replace(".json", ".tar"))
    r = extract_clips(str(base), str(out), window_s=1.5, executor=LocalExecutor(1), **FAST)
    assert r.stats["resumed_shards"] == len(parts) - 1
    assert {p: (out / p).read_bytes() for p in first} == first
    with pytest.raises(JobError, match="other options"):
        extract_clips(str(base), str(out), window_s=3.0, executor=LocalExecutor(1), **FAST)
    r = extract_clips(str(base), str(out), window_s=3.0, executor=LocalExecutor(1),
                      overwrite=True, **FAST)
    # 2.4, 3.0 and 2.0 s videos: one clip each; 4.4 s: two
    assert r.stats["resumed_shards"] == 0 and r.stats["clips"] == 5


def test_task_pickles_like_a_ray_task(base, tmp_path):
    d = open_dataset(str(base))
    sh, keys = next((sh, keys) for sh in d.index.shards  # a shard that holds videos
                    if (keys := [s["__key__"] for s in d.iter_shard(sh) if "mp4" in s]))
    name = sh.url.rsplit("/", 1)[-1][:-4]
    task = ClipsTask(out=str(tmp_path / "o"), storage_options={}, base=d.root, shard=sh,
                     name=name, videos=tuple((k, k) for k in keys), kf_url=None,
                     config=ClipsConfig(window_s=1.0, preset="ultrafast"))
    res = pickle.loads(pickle.dumps(run_clips_task))(pickle.loads(pickle.dumps(task)))
    assert res.videos == len(keys) and res.failed == 0 and res.clips > 0
    assert (tmp_path / "o" / "shards" / f"{name}.tar").exists()


def test_task_reads_videos_in_place_from_a_local_shard(base):
    """A clips task never loads a video member into memory: it gets a FileRange into the
    shard tar (decoded in place, so long videos stay flat), the small members as bytes."""
    from mmshard.media.video_reader import FileRange
    from mmshard.pipelines.clips.task import _base_samples
    from mmshard.storage import Storage

    d = open_dataset(str(base))
    for sh in d.index.shards:
        want = list(d.iter_shard(sh))
        got = list(_base_samples(Storage(d.root), sh.url))
        assert [s["__key__"] for s in got] == [s["__key__"] for s in want]
        for g, w in zip(got, want, strict=True):
            assert sorted(k for k in g if not k.startswith("__")) == \
                sorted(k for k in w if not k.startswith("__"))
            for k, v in g.items():
                if k.startswith("__"):
                    continue
                if k == "mp4":
                    assert isinstance(v, FileRange) and v.read_bytes() == w[k]
                else:
                    assert v == w[k]


def test_config_errors_list_allowed_values(base, tmp_path):
    with pytest.raises(ConfigError, match="fixed, scenes"):
        ClipsConfig(mode="shots")
    with pytest.raises(ConfigError, match="ultrafast"):
        ClipsConfig(preset="quick")
    with pytest.raises(ConfigError, match="length_s must be > 0"):
        ClipsConfig(window_s=0)
    with pytest.raises(ConfigError, match="allowed: .*window_s"):
        extract_clips(str(base), str(tmp_path / "x"), window=3, executor=LocalExecutor(1))
    with pytest.raises(ConfigError, match="not both"):
        extract_clips(str(base), str(tmp_path / "x"), ClipsConfig(), window_s=3.0)
    with pytest.raises(ConfigError, match="new folder"):
        extract_clips(str(base), str(base), executor=LocalExecutor(1))


@settings(max_examples=8, deadline=None)
@given(window=st.integers(3, 30), stride=st.integers(2, 30),
       tail=st.sampled_from(("drop", "keep", "shift")))
def test_every_planned_clip_holds_exactly_its_frames(tmp_path_factory, window, stride, tail):
    path = tmp_path_factory.getbasetemp() / "prop40.mp4"
    if not path.exists():
        write_cfr(path, 40, fps=10, w=64, h=48, gop=8)
    data = path.read_bytes()
    cfg = ClipsConfig(window_s=window / 10, stride_s=stride / 10, tail=tail,
                      preset="ultrafast")
    clips, facts = plan_video_clips("v", data, cfg)
    assert facts["num_frames"] == 40
    got = list(cut_clips(data, clips, cfg))
    assert [c.index for c, _, _ in got] == [c.index for c in clips]
    for clip, mp4, f in got:
        assert decode_indices(mp4) == list(range(clip.start_frame, clip.end_frame))
        assert f["frames"] == clip.num_frames


def test_cli_builds_the_config_and_runs(base, tmp_path, capsys):
    p = argparse.ArgumentParser()
    clips_cmd.add_parser(p.add_subparsers())
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window_s: 9.0\npreset: ultrafast\ncrf: 30\n")
    args = p.parse_args(["clips", str(base), "--out", str(tmp_path / "o"), "--config",
                         str(cfg), "--window", "2", "--executor", "local", "--no-progress"])
    c = clips_cmd.config_from_args(args)
    assert (c.window_s, c.preset, c.crf, c.mode) == (2.0, "ultrafast", 30, "fixed")
    assert args.func(args) == 0
    assert "clips" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["clips"] == 8  # 2 + 2 + 1 + 3


MAX_RSS = """
import json, resource, sys
from mmshard.pipelines.clips.job import ClipsConfig, cut_clips, plan_video_clips
cfg = ClipsConfig(window_s=2.0, preset="ultrafast")
def run(path):
    data = open(path, "rb").read()
    clips, _ = plan_video_clips("v", data, cfg)
    return sum(1 for _ in cut_clips(data, clips, cfg))
run(sys.argv[1])  # warm up: codecs, imports, allocator pools
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = run(sys.argv[2])
print(json.dumps([(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, n]))
"""


def test_cutting_memory_does_not_grow_with_video_length(tmp_path):
    """Peak-RSS growth while cutting a 300- and a 3000-frame video (160x120) into 2 s
    clips in fresh processes: decoded frames are streamed (holding the long video's
    frames would add ~90 MB as YUV, ~170 MB as RGB)."""
    paths = []
    for n in (300, 3000):
        path = tmp_path / f"m{n}.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
            s.options = {"preset": "ultrafast", "g": "50"}
            for i in range(n):
                for p in s.encode(av.VideoFrame.from_ndarray(index_frame(i, 160, 120),
                                                             format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        paths.append(path)
    grew = []
    for path, clips in zip(paths, (6, 60)):
        res = subprocess.run([sys.executable, "-c", MAX_RSS, str(paths[0]), str(path)],
                             capture_output=True, text=True, check=True)
        g, n = json.loads(res.stdout.strip().splitlines()[-1])
        assert n == clips
        grew.append(g)
    assert grew[1] < grew[0] + 24 * 2**20, grew


def test_decoded_frames_are_the_index_frames():  # guards the helper the tests rely on
    assert read_index(index_frame(77)) == 77 and np.asarray(index_frame(3)).dtype == np.uint8
