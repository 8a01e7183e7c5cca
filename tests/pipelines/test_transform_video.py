"""The ``frames`` field set: sampled frames of each video as JPEG thumbnails + frames.json."""

import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError, DataError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.transform.fields import FIELD_SETS, build_field_set
from mmshard.pipelines.transform.job import tokenize
from mmshard.pipelines.transform.video_fields import FramesExtractor
from tests._video_media import index_frame, read_index, write_cfr, write_shots


def fast_video(path, n, w=64, h=48, fps=25):
    """n index frames, libx264 ultrafast (a few thousand frames in about a second)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "50", "crf": "23"}
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(index_frame(i, w, h), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames_videos")
    return {n: write_cfr(d / f"v{n}.mp4", n, fps=25, w=96, h=48, gop=10).read_bytes()
            for n in (37, 80)}


def decoded_indices(out):
    doc = json.loads(out["frames.json"])
    got = [read_index(np.asarray(Image.open(io.BytesIO(out[f])).convert("RGB")))
           for f in doc["files"]]
    return doc, got


def test_frames_are_the_sampled_frames_in_order(videos):
    out = FramesExtractor.from_options({"sampler": "tsn", "num_segments": 6, "size": 96}
                                       ).compute(videos[80])
    doc, got = decoded_indices(out)
    assert doc["indices"] == got
    assert doc["sampler"] == "tsn" and doc["sampler_config"]["num_segments"] == 6
    assert len(doc["indices"]) == 6 and doc["num_frames"] == 80
    assert doc["timestamps"] == pytest.approx([i / 25 for i in doc["indices"]], abs=1e-6)
    assert sorted(k for k in out if k.endswith(".jpg")) == doc["files"] == \
        [f"frames.{i:03d}.jpg" for i in range(6)]


def test_thumbnails_keep_aspect_and_never_upscale(videos):
    small = FramesExtractor.from_options({"num_frames": 2, "size": 32}).compute(videos[37])
    assert Image.open(io.BytesIO(small["frames.000.jpg"])).size == (32, 16)
    assert json.loads(small["frames.json"])["size"] == [32, 16]
    big = FramesExtractor.from_options({"num_frames": 2, "size": 1024}).compute(videos[37])
    assert Image.open(io.BytesIO(big["frames.001.jpg"])).size == (96, 48)


def test_output_is_deterministic_and_training_draws_follow_the_seed(videos):
    a = build_field_set("frames", {"sampler": "stride", "every": 9}).compute(videos[80])
    b = FramesExtractor.from_options({"sampler": "stride", "every": 9}).compute(videos[80])
    assert a == b  # evaluation mode: no randomness at all
    opts = {"sampler": "tsn", "num_segments": 8, "training": True}
    runs = [FramesExtractor.from_options({**opts, "seed": s}).compute(videos[80])
            for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert json.loads(runs[0]["frames.json"])["indices"] != \
        json.loads(runs[2]["frames.json"])["indices"]


def test_max_images_thins_long_samplings_evenly(videos):
    out = FramesExtractor.from_options({"sampler": "stride", "every": 1, "random_offset": False,
                                        "max_images": 10}).compute(videos[80])
    doc, got = decoded_indices(out)
    assert doc["thinned_from"] == 80 and len(doc["files"]) == 10 and got == doc["indices"]
    assert got == sorted(got) and got[0] == 0


def test_keyframe_and_motion_samplers_compute_their_inputs(tmp_path):
    truth = write_shots(tmp_path / "s.mp4", [("texture", 30), ("noise", 30), ("shapes", 30)],
                        w=64, h=48, seed=3)
    data = (tmp_path / "s.mp4").read_bytes()
    kf = json.loads(FramesExtractor.from_options({"sampler": "keyframe", "num_frames": 3})
                    .compute(data)["frames.json"])
    scenes = [0, *truth["cuts"], truth["num_frames"]]
    # one pick inside each scene
    assert [sum(a <= i < b for i in kf["indices"]) for a, b in zip(scenes, scenes[1:])] == \
        [1, 1, 1]
    mo = json.loads(FramesExtractor.from_options({"sampler": "motion", "num_frames": 6,
                                                  "uniform_mix": 0.0}).compute(data)
                    ["frames.json"])
    assert len(mo["indices"]) == 6 and all(0 <= i < 90 for i in mo["indices"])


def test_bad_options_fail_listing_what_is_allowed():
    assert "frames" in FIELD_SETS
    with pytest.raises(ConfigError, match="known: .*tsn"):
        FramesExtractor.from_options({"sampler": "nope"})
    with pytest.raises(ConfigError, match="allowed: .*num_segments"):
        FramesExtractor.from_options({"sampler": "tsn", "num_frames": 3})
    with pytest.raises(ConfigError, match="size"):
        FramesExtractor.from_options({"size": 2})
    with pytest.raises(ConfigError, match="backend must be one of"):
        FramesExtractor.from_options({"backend": "gstreamer"})


def test_undecodable_video_is_a_data_error():
    with pytest.raises(DataError) as e:
        FramesExtractor().compute(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 64)
    assert e.value.reason == "undecodable_video"


@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([37, 80]), k=st.integers(1, 12),
       sampler=st.sampled_from(["uniform", "tsn"]))
def test_any_count_gives_in_bounds_sorted_exact_frames(videos, n, k, sampler):
    key = "num_frames" if sampler == "uniform" else "num_segments"
    out = FramesExtractor.from_options({"sampler": sampler, key: k}).compute(videos[n])
    doc, got = decoded_indices(out)
    assert len(got) == k and got == doc["indices"]
    assert got == sorted(got) and 0 <= got[0] and got[-1] < n


def test_tokenize_writes_a_frames_sidecar_with_ledger(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "vid")
    for i, n in enumerate((30, 45)):
        write_cfr(src / "vid" / f"v{i}.mp4", n, w=64, h=48)
    (src / "vid" / "v0.txt").write_text("a caption")
    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(name="t"), executor=LocalExecutor(1))
    # a video that passed ingest but no longer decodes (bit rot): one failed ledger row
    from mmshard.tario import TarWriter, iter_tar

    for shard in sorted((ds / "shards").glob("*.tar")):  # wherever ingest put vid__v1
        samples = list(iter_tar(str(shard)))
        if not any(s["__key__"] == "vid__v1" for s in samples):
            continue
        for s in samples:
            if s["__key__"] == "vid__v1":
                s["mp4"] = b"\x00" * 300
        with TarWriter(str(shard)) as w:
            for s in samples:
                w.write({k: v for k, v in s.items() if k != "__url__"})
    r = tokenize(str(ds), {"frames": {"sampler": "uniform", "num_frames": 4, "size": 32}},
                 executor=LocalExecutor(1))
    assert r.stats["frames"]["ok"] == 1 and r.stats["frames"]["failed"] == 1
    d = open_dataset(str(ds))
    side = [s for sh in d.index.shards for s in d.iter_shard(sh, "frames")]
    assert [s["__key__"] for s in side] == ["vid__v0"]
    assert json.loads(side[0]["frames.json"])["indices"] == [3, 11, 18, 26]
    ledger = pq.read_table(ds / "frames" / "ledger.parquet").to_pylist()
    assert {(x["key"], x["status"], x["reason"]) for x in ledger} == {
        ("vid__v0", "ok", ""), ("vid__v1", "failed", "undecodable_video")}
    prov = json.loads((ds / "frames" / "index.json").read_text())["provenance"]
    assert prov["tokenizer"] == "frames" and prov["sampler_config"]["num_frames"] == 4


PEAK_RSS = """
import json, resource, sys
from mmshard.pipelines.transform.video_fields import FramesExtractor
ex = FramesExtractor.from_options({"sampler": "uniform", "num_frames": 16})
ex.compute(open(sys.argv[1], "rb").read())  # warm up: codecs, imports, allocator pools
data = open(sys.argv[2], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = ex.compute(data)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps([grew * 1024, len(json.loads(out["frames.json"])["files"])]))
"""


def test_memory_does_not_grow_with_video_length(tmp_path):
    """Growth of the peak RSS while computing 16 frames of a 300- and a 3000-frame
    video (fresh processes): the long one must not hold its frames (3000 frames of
    160x120 RGB are ~170 MB; holding them shows up as ~180 MB of growth)."""
    import subprocess
    import sys

    paths = [fast_video(tmp_path / f"m{n}.mp4", n, w=160, h=120) for n in (300, 3000)]
    grew = []
    for p in paths:
        res = subprocess.run([sys.executable, "-c", PEAK_RSS, str(paths[0]), str(p)],
                             capture_output=True, text=True, check=True)
        g, files = json.loads(res.stdout.strip().splitlines()[-1])
        assert files == 16
        grew.append(g)
    assert grew[1] < grew[0] + 24 * 2**20, grew


def test_videos_read_in_place_give_the_same_sidecars_as_bytes(tmp_path, monkeypatch):
    """frames and keyframes read a local shard's videos in place (FileRange into the tar,
    memory flat in video size); their sidecars equal those computed from the bytes."""
    import mmshard.pipelines.transform.job as tjob
    from mmshard.media.video_reader import FileRange
    from mmshard.pipelines.task import base_samples
    from mmshard.storage import Storage

    src = tmp_path / "src"
    os.makedirs(src)
    write_shots(src / "a.mp4", [("texture", 20), ("gradient", 20)], w=64, h=48, seed=4)
    write_cfr(src / "b.mp4", 30, w=64, h=48)
    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(name="t"), executor=LocalExecutor(1))
    shard = open_dataset(str(ds)).index.shards[0].url
    got = list(base_samples(Storage(str(ds)), shard))
    assert all(isinstance(s["mp4"], FileRange) for s in got) and len(got) == 2
    fields = {"frames": {"num_frames": 4, "size": 32, "training": True},
              "keyframes": {}}
    outs = []
    for in_place in (True, False):
        if not in_place:
            monkeypatch.setattr(tjob, "_reads_in_place", lambda built: False)
        tokenize(str(ds), fields, executor=LocalExecutor(1), overwrite=True)
        outs.append({n: sorted((ds / n).glob("*.tar"))[0].read_bytes()
                     for n in ("frames", "keyframes")})
    assert outs[0] == outs[1]
