"""Clips from AVI / MPEG-PS / MPEG-TS inputs, byte-identical reruns, and the source audio
cut to the clip's span (A/V offset measured on a flash-and-click fixture)."""

from __future__ import annotations

import hashlib
import io
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
        assert [f.pts for f in frames] == sorted(f.pts for f in frames)
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
