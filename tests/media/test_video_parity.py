"""Parity harness: every backend's frames against the ffmpeg CLI's, frame by frame.

Each fixture is written by the ffmpeg CLI (AVI with MPEG-4 Part 2 B-frames and MJPEG,
MPEG-PS, MPEG-TS, VFR MP4, H.264, HEVC, VP9, AV1 where the encoders exist) from
``testsrc2`` (every frame differs), and decoded to raw RGB by the CLI as the reference.
A backend is frame-exact on a file (every randomly accessed and streamed frame is the
reference frame of that number) or refuses it with ``backend_unsupported``; it never
returns other frames.  ``auto`` is exact on every file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_media import (  # noqa: E402
    FFMPEG_FIXTURES,
    ffmpeg_encoders,
    ffmpeg_reference,
    parity,
    write_ffmpeg_fixture,
)

from mmshard.media.video_reader import (  # noqa: E402
    VideoReader,
    available_backends,
    backend_refusal,
    container_family,
)

ENCODERS = ffmpeg_encoders()
NAMES = [n for n, (_, _, enc) in FFMPEG_FIXTURES.items() if enc in ENCODERS]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    d = tmp_path_factory.mktemp("parity")
    out = {}
    for name in NAMES:
        p = write_ffmpeg_fixture(d, name, seconds=1.6)
        out[name] = (p, ffmpeg_reference(p))
    return out


def _facts(path: Path) -> tuple[str, str]:
    import av

    with av.open(str(path)) as c:
        codec = c.streams.video[0].codec_context.name
        return container_family(c.format.name), {"libdav1d": "av1"}.get(codec, codec)


def test_the_fixture_set_covers_the_containers_and_codecs_asked_for():
    for needed in ("avi_mpeg4_bframes", "mpeg_ps", "mpeg_ts", "mp4_vfr", "mp4_h264_bframes"):
        assert needed in NAMES


@pytest.mark.parametrize("backend", ["auto", *available_backends()])
@pytest.mark.parametrize("name", NAMES)
def test_backend_is_frame_exact_or_refuses(fixtures, name, backend):
    path, ref = fixtures[name]
    r = parity(path, backend, ref)
    family, codec = _facts(path)
    expect_refusal = backend != "auto" and backend_refusal(backend, family, codec) is not None
    if expect_refusal:
        assert r["status"] == "refused" and "backend_unsupported" in r["reason"], r
        return
    assert r["status"] == "exact", r
    assert r["num_frames"] == len(ref)
    assert r["times_ok"], r


@pytest.mark.parametrize("name", NAMES)
def test_auto_picks_a_backend_that_the_harness_passed(fixtures, name):
    path, _ = fixtures[name]
    family, codec = _facts(path)
    vr = VideoReader(path)
    assert vr.requested == "auto"
    assert backend_refusal(vr.backend, family, codec) is None
    # never decord on AVI MPEG-4 / MPEG-PS / MPEG-TS, where it returns other frames
    if family in ("avi", "mpeg-ps", "mpeg-ts") and codec != "mjpeg":
        assert vr.backend != "decord"


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith(("avi_mpeg4", "mpeg"))])
def test_every_time_field_is_finite_and_inside_the_duration(fixtures, name):
    path, ref = fixtures[name]
    with VideoReader(path) as vr:
        ts, m = vr.timestamps(), vr.meta
    assert np.all(np.isfinite(ts)) and ts[0] == 0.0 and np.all(np.diff(ts) > 0)
    assert ts[-1] < m.duration == pytest.approx(len(ref) / 25, rel=0.05)


def test_loader_video_decode_and_frames_field_return_the_right_frames_on_avi(fixtures):
    import json

    import cv2

    from mmshard.pipelines.stream.decode import VideoDecode, _decode_video
    from mmshard.pipelines.transform.video_fields import FramesExtractor

    path, ref = fixtures["avi_mpeg4_bframes"]
    data = path.read_bytes()
    h, w = ref.shape[1:3]
    got = _decode_video(data, VideoDecode(num_frames=8, size=(h, w)), None)
    got = got.permute(0, 2, 3, 1).numpy().astype(np.int16)
    want = np.linspace(0, len(ref) - 1, 8).round().astype(int)
    for g, i in zip(got, want):
        near = [np.abs(g - ref[j]).mean() for j in range(len(ref))]
        assert int(np.argmin(near)) == i
    out = FramesExtractor.from_options({"sampler": "uniform", "num_frames": 4}).compute(data)
    doc = json.loads(out["frames.json"])
    for name, i in zip(doc["files"], doc["indices"]):
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(out[name], np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB).astype(np.int16)
        small = [np.abs(img - cv2.resize(ref[j], img.shape[1::-1])).mean()
                 for j in range(len(ref))]
        assert int(np.argmin(small)) == i
