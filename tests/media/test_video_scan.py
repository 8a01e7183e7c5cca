"""The sequential analysis scan numbers, times and decodes frames exactly like the
frame-exact reader, on the parity harness's AVI, MPEG-PS, MPEG-TS and MP4 fixtures."""

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
    write_ffmpeg_fixture,
)

from mmshard.errors import ConfigError, DataError  # noqa: E402
from mmshard.media.video_reader import VideoReader  # noqa: E402
from mmshard.media.video_scan import VideoScan, shrink_plane  # noqa: E402

NAMES = [n for n in ("avi_mpeg4_bframes", "mpeg_ps", "mpeg_ts", "mp4_h264_bframes", "mp4_vfr")
         if FFMPEG_FIXTURES[n][2] in ffmpeg_encoders()]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scan")
    return {n: write_ffmpeg_fixture(d, n, seconds=1.2) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_scan_matches_the_reader_frame_for_frame(fixtures, name):
    path = fixtures[name]
    ref = ffmpeg_reference(path)
    scan = VideoScan(path, width=32)
    frames = list(scan)
    with VideoReader(path, backend="pyav") as vr:
        assert scan.num_frames == vr.meta.num_frames == len(ref) == len(frames)
        assert [f.index for f in frames] == list(range(len(ref)))
        np.testing.assert_array_equal(scan.timestamps(), vr.timestamps())
        assert [f.time for f in frames] == vr.timestamps().tolist()
        m, r = scan.meta, vr.meta
        assert (m.fps, m.duration, m.width, m.height, m.is_vfr) == (
            r.fps, r.duration, r.width, r.height, r.is_vfr)
        picks = [0, len(ref) // 2, len(ref) - 1]
        exact = vr.get_frames(picks)
    for k, i in enumerate(picks):  # the full-size frame of the pass is the exact frame
        np.testing.assert_array_equal(frames[i].frame.to_ndarray(format="rgb24"), exact[k])
    small = frames[len(ref) // 2].image
    assert small.shape == (24, 32, 3) and small.dtype == np.uint8
    # the small image is the frame shrunk: close to the reference frame shrunk
    import cv2

    want = cv2.resize(ref[len(ref) // 2], (32, 24), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - want).mean() < 12


def test_gray_scan_and_bytes_source(fixtures):
    path = fixtures[NAMES[0]]
    frames = list(VideoScan(path.read_bytes(), size=(16, 12), gray=True))
    assert frames[0].image.shape == (12, 16)
    assert len(frames) == len(ffmpeg_reference(path))


def test_shrink_plane_is_an_area_mean_of_a_flat_plane():
    plane = np.full((96, 128), 200, np.uint8)
    assert (shrink_plane(plane, (32, 24)) == 200).all()
    plane[:, 64:] = 0
    out = shrink_plane(plane, (32, 24))
    assert (out[:, :16] == 200).all() and (out[:, 16:] == 0).all()


def test_scan_refuses_bad_arguments_and_input(tmp_path, fixtures):
    with pytest.raises(ConfigError, match="size"):
        VideoScan(fixtures[NAMES[0]])
    with pytest.raises(ConfigError, match="width"):
        VideoScan(fixtures[NAMES[0]], width=1)
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError):
        VideoScan(bad, width=32)
    scan = VideoScan(fixtures[NAMES[0]], width=32)
    list(scan)
    with pytest.raises(ConfigError, match="once"):
        list(scan)
