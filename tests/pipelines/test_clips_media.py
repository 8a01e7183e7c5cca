"""Clips from AVI / MPEG-PS / MPEG-TS inputs, byte-identical reruns, and the source audio
cut to the clip's span (A/V offset measured on a flash-and-click fixture)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_media import write_ffmpeg_fixture  # noqa: E402

from mmshard.pipelines.clips.config import ClipsConfig  # noqa: E402
from mmshard.pipelines.clips.cut import cut_clips  # noqa: E402
from mmshard.pipelines.clips.plan import plan_video_clips  # noqa: E402
from mmshard.tario import iter_tar  # noqa: E402


def _cut(data: bytes, window: float = 0.8) -> list[tuple]:
    cfg = ClipsConfig(window_s=window)
    clips, _ = plan_video_clips("v", data, cfg)
    return list(cut_clips(data, clips, cfg))


@pytest.mark.parametrize("name", ["avi_mpeg4_bframes", "mpeg_ps", "mpeg_ts",
                                  "mp4_h264_bframes"])
def test_clips_of_every_container_are_exact_and_byte_identical(tmp_path, name):
    data = write_ffmpeg_fixture(tmp_path, name, seconds=2.0).read_bytes()
    runs = [[hashlib.sha256(m).hexdigest() for _, m, _ in _cut(data)] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 3
    for clip, mp4, facts in _cut(data):
        with av.open(io.BytesIO(mp4)) as c:
            frames = list(c.decode(video=0))
        assert len(frames) == clip.num_frames == facts["frames"]
        # every frame at its own time from 0 (an AVI's 1/25 time base used to reach the
        # encoder as the MP4 stream's: every pts 0, and x264 warning of duplicates)
        times = [float(f.pts * f.time_base) for f in frames]
        assert times == pytest.approx([k / 25 for k in range(clip.num_frames)], abs=1e-3)
        assert facts["decoder"].startswith("pyav") and facts["encoder"] == "libx264"


def _flash_click(path: Path) -> Path:
    """25 fps black video with one white frame at 2.0 s; 48 kHz silence with a click
    (10 ms burst) at the same instant."""
    v = "color=black:size=64x48:rate=25:duration=4,geq=lum='if(eq(N,50),255,16)':cb=128:cr=128"
    a = ("aevalsrc='if(between(t,2.0,2.01),0.9*sin(2*PI*1000*t),0)':s=48000:d=4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", v, "-f", "lavfi",
                    "-i", a, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-b:a", "128k", str(path)], check=True)
    return path


def test_clip_keeps_the_audio_of_its_span_within_one_frame(tmp_path):
    data = _flash_click(tmp_path / "fc.mp4").read_bytes()
    out = _cut(data, window=1.5)  # clips of 1.5 s: the flash (2.0 s) is in the second
    clip, mp4, facts = out[1]
    assert facts["audio"]["sample_rate"] == 48000 and facts["audio"]["offset"] == 0.0
    with av.open(io.BytesIO(mp4)) as c:
        vt = [float(f.pts * f.time_base) for f in c.decode(video=0)
              if f.to_ndarray(format="gray").mean() > 128]
    with av.open(io.BytesIO(mp4)) as c:
        st = c.streams.audio[0]
        chunks = [(float(f.pts * f.time_base), f.to_ndarray()[0]) for f in c.decode(st)]
    t0, x = chunks[0][0], np.concatenate([ch for _, ch in chunks])
    click = t0 + int(np.argmax(np.abs(x) > 0.3)) / 48000
    assert len(vt) == 1 and vt[0] == pytest.approx(2.0 - clip.start_time, abs=1e-3)
    assert abs(click - vt[0]) <= 1 / 25  # A/V offset within one frame period
    # the audio covers the clip's span, no more
    assert len(x) / 48000 == pytest.approx(clip.end_time - clip.start_time, abs=0.05)


def _with_sound(tmp_path: Path, name: str, vcodec: list[str], acodec: list[str]) -> Path:
    """2 s of testsrc2 (128x96, 25 fps) with a 440 Hz tone, in ``name``."""
    out = tmp_path / name
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=128x96:rate=25:duration=2", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100:duration=2", "-pix_fmt", "yuv420p",
                    *vcodec, *acodec, str(out)], check=True)
    return out


def _published(out: Path) -> dict[str, bytes]:
    """Every published file of a dataset but the timing-bearing stats.json."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "stats.json" and "_work" not in p.parts}


@pytest.mark.ray
def test_ray_and_local_executors_cut_the_same_bytes(ray_cluster, tmp_path):
    """Clip shards, manifest and ledger of an AVI (MPEG-4 Part 2 with B-frames, MP3) and
    an MP4 (H.264 with B-frames, AAC) are byte-identical from Ray tasks and in-process."""
    from mmshard.pipelines.clips.job import extract_clips
    from mmshard.pipelines.executor import LocalExecutor, RayExecutor
    from mmshard.pipelines.ingest.job import IngestConfig, ingest

    src = tmp_path / "src"
    src.mkdir()
    _with_sound(src, "a.avi", ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-q:v", "3"],
                ["-c:a", "libmp3lame", "-b:a", "64k"])
    _with_sound(src, "h.mp4", ["-c:v", "libx264", "-bf", "3", "-g", "12", "-crf", "20"],
                ["-c:a", "aac", "-b:a", "64k"])
    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(max_samples=1, name="av"),
           executor=LocalExecutor(1))
    cfg = ClipsConfig(window_s=0.8, preset="ultrafast")
    extract_clips(str(ds), str(tmp_path / "local"), cfg, executor=LocalExecutor(1))
    extract_clips(str(ds), str(tmp_path / "ray"), cfg, executor=RayExecutor())
    local, ray = _published(tmp_path / "local"), _published(tmp_path / "ray")
    assert sorted(local) == sorted(ray)
    assert sum(k.startswith("shards/") for k in local) == 2  # one tar per source video
    assert [k for k in local if local[k] != ray[k]] == []
    docs = [json.loads(s["json"]) for sh in sorted(k for k in local if k.endswith(".tar"))
            for s in iter_tar(io.BytesIO(local[sh]))]
    assert len(docs) == 6 and all(d["audio"]["sample_rate"] == 44100 for d in docs)
