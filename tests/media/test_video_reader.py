"""VideoReader: frame accuracy across backends, VFR timestamps, streaming, errors, pickling."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_media import index_frame, read_index, write_cfr, write_vfr  # noqa: E402

from mmshard.errors import ConfigError, DataError  # noqa: E402
from mmshard.media.video_reader import (  # noqa: E402
    FileRange,
    VideoReader,
    available_backends,
    open_video,
)

BACKENDS = available_backends()
N = 90


@pytest.fixture(scope="module")
def cfr(tmp_path_factory) -> Path:
    return write_cfr(tmp_path_factory.mktemp("v") / "cfr.mp4", N, fps=25, gop=12)


@pytest.fixture(scope="module")
def vfr_times() -> list[float]:
    return [0.0, 0.1, 0.15, 0.5, 0.52, 1.0, 1.3, 1.31, 2.0, 2.04]


@pytest.fixture(scope="module")
def vfr(tmp_path_factory, vfr_times) -> Path:
    return write_vfr(tmp_path_factory.mktemp("v") / "vfr.mp4", vfr_times)


def test_all_three_backends_are_available_here():
    assert set(BACKENDS) >= {"decord", "pyav", "opencv"} and BACKENDS[:2] == ["torchcodec",
                                                                              "pyav"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_meta_of_cfr_clip(cfr, backend):
    with open_video(cfr, backend) as vr:
        m = vr.meta
    assert (m.num_frames, m.width, m.height, m.codec) == (N, 64, 48, "h264")
    assert m.fps == pytest.approx(25.0)
    assert m.duration == pytest.approx(N / 25)
    assert not m.is_vfr


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_access_returns_the_requested_frames(cfr, backend):
    idx = [89, 3, 44, 45, 12, 0, 3, 60]
    with open_video(cfr, backend) as vr:
        frames = vr.get_frames(idx)
    assert frames.shape == (len(idx), 48, 64, 3) and frames.dtype == np.uint8
    assert [read_index(f) for f in frames] == idx
    # pixels match the drawn frames within codec rounding
    expected = np.stack([index_frame(i) for i in idx]).astype(np.int16)
    assert np.abs(frames.astype(np.int16) - expected).mean() < 6


def test_backends_agree_pixel_for_pixel_within_codec_rounding(cfr):
    idx = [0, 17, 50, 88]
    got = {b: open_video(cfr, b).get_frames(idx).astype(np.int16) for b in BACKENDS}
    ref = got["pyav"]
    for b, frames in got.items():
        assert np.abs(frames - ref).mean() < 2.0, b


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_frames_streams_in_order_with_step_size_and_gray(cfr, backend):
    with open_video(cfr, backend) as vr:
        full = list(vr.iter_frames(start=5, stop=60, step=9))
        small = list(vr.iter_frames(start=5, stop=60, step=9, size=(32, 24), gray=True))
    assert [f.index for f in full] == list(range(5, 60, 9))
    assert [read_index(f.image) for f in full] == list(range(5, 60, 9))
    assert [f.time for f in full] == pytest.approx([i / 25 for i in range(5, 60, 9)], abs=1e-3)
    assert all(f.image.shape == (24, 32) and f.image.dtype == np.uint8 for f in small)
    assert [f.index for f in small] == [f.index for f in full]


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_frames_covers_every_frame(cfr, backend):
    with open_video(cfr, backend) as vr:
        ids = [read_index(f.image) for f in vr.iter_frames()]
    assert ids == list(range(N))


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_vfr_clip_uses_presentation_timestamps(vfr, vfr_times, backend):
    with open_video(vfr, backend) as vr:
        assert vr.meta.is_vfr
        assert vr.meta.num_frames == len(vfr_times)
        np.testing.assert_allclose(vr.timestamps(), vfr_times, atol=1e-3)
        # the frame on screen at t is the last one shown at or before t
        frames = vr.get_frames_at([0.0, 0.12, 0.5, 0.9, 1.305, 99.0])
    assert [read_index(f) for f in frames] == [0, 1, 3, 4, 6, 9]


def test_sources_path_bytes_and_file_object_give_the_same_frames(cfr):
    data = cfr.read_bytes()
    a = open_video(str(cfr), "pyav").get_frames([7])
    b = open_video(data, "pyav").get_frames([7])
    with open(cfr, "rb") as fh:
        c = open_video(fh, "pyav").get_frames([7])
    assert np.array_equal(a, b) and np.array_equal(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_range_is_decoded_in_place_like_the_bytes(tmp_path, cfr, backend):
    """A video stored inside a bigger file (a tar member) read through FileRange: the
    same frames, times and metadata as its bytes, and pickled readers re-open it."""
    data = cfr.read_bytes()
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x01" * 1536 + data + b"\x02" * 700)  # other members around it
    rng = FileRange(str(blob), 1536, len(data))
    with open_video(data, backend) as a, open_video(rng, backend) as b:
        assert a.meta == b.meta and np.array_equal(a.timestamps(), b.timestamps())
        assert np.array_equal(a.get_frames([0, 44, 89]), b.get_frames([0, 44, 89]))
        clone = pickle.loads(pickle.dumps(b))
        assert [read_index(f.image) for f in clone.iter_frames(80)] == list(range(80, N))
    with rng.open() as f:  # reads stop at the end of the range, seeks stay inside it
        assert f.read() == data and f.seek(-10, 2) == len(data) - 10 and f.read(99) == data[-10:]


def test_file_range_errors(tmp_path):
    (tmp_path / "z").write_bytes(b"abc")
    with pytest.raises(DataError, match="zero-byte"):
        VideoReader(FileRange(str(tmp_path / "z"), 3))
    with pytest.raises(ConfigError, match="offset"):
        FileRange(str(tmp_path / "z"), -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reader_pickles_and_reopens_lazily(cfr, backend):
    vr = open_video(cfr.read_bytes(), backend)
    before = vr.get_frames([30])
    clone = pickle.loads(pickle.dumps(vr))
    assert clone._impl is None  # nothing opened until used
    assert np.array_equal(clone.get_frames([30]), before)


def _first_index(reader: VideoReader) -> int:
    return read_index(reader.get_frames([21])[0])


def test_reader_built_in_parent_works_in_forked_workers(cfr):
    readers = [VideoReader(cfr, backend=b) for b in BACKENDS]
    for r in readers:
        r.get_frames([1])  # used in the parent: the decoder must not leak into children
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(_first_index, readers, chunksize=1)
    assert got == [21] * len(readers)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["garbage", "truncated", "header_only", "audio", "empty"])
def test_bad_inputs_raise_dataerror_with_reason(tmp_path, cfr, backend, case):
    data = cfr.read_bytes()
    if case == "audio":
        src: object = tmp_path / "a.flac"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=0.3",
                        str(src)], check=True)
    else:
        src = {"garbage": b"not a video" * 50, "truncated": data[: len(data) // 2],
               "header_only": data[:200], "empty": b""}[case]
    want = {"audio": "no_video_stream", "empty": "empty_file"}.get(case, "undecodable_video")
    with pytest.raises(DataError) as ei:
        with open_video(src, backend) as vr:  # type: ignore[arg-type]
            vr.get_frames(range(vr.meta.num_frames))
    assert ei.value.reason == want


def test_truncated_streamable_container_reads_what_is_there(tmp_path):
    mkv = tmp_path / "c.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(write_cfr(tmp_path / "x.mp4", 60)),
                    "-c", "copy", str(mkv)], check=True)
    data = mkv.read_bytes()
    with open_video(data[: int(len(data) * 0.6)], "pyav") as vr:
        n = vr.meta.num_frames
        assert 0 < n < 60
        ids = [read_index(f.image) for f in vr.iter_frames()]
    assert ids == list(range(len(ids))) and len(ids) >= n - 2


def test_out_of_range_and_bad_arguments(cfr):
    vr = open_video(cfr, "pyav")
    with pytest.raises(DataError) as ei:
        vr.get_frames([N])
    assert ei.value.reason == "frame_out_of_range"
    with pytest.raises(ConfigError, match="allowed"):
        open_video(cfr, "gstreamer")
    with pytest.raises(ConfigError):
        list(vr.iter_frames(step=0))
    with pytest.raises(DataError) as ei:
        open_video(cfr.parent / "missing.mp4")
    assert ei.value.reason == "file_not_found"
    assert vr.get_frames([]).shape == (0, 48, 64, 3)


def test_gray_resized_frames_agree_across_backends(cfr):
    got = {}
    for b in BACKENDS:
        with open_video(cfr, b) as vr:
            got[b] = np.stack([f.image for f in vr.iter_frames(0, 30, 5, size=(32, 24),
                                                               gray=True)]).astype(np.int16)
    for b in BACKENDS:
        assert np.abs(got[b] - got["pyav"]).mean() < 3.0, b
