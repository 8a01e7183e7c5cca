"""One sequential pass over a video for analysis (shot cuts, motion): small frames
straight from the decoded YUV planes, numbered exactly like :class:`VideoReader`.

:class:`VideoReader` is built for random access: on open it demuxes the stream for the
frame index, then decodes the first frames to check their order (and, for MPEG-4 Part 2
"packed B-frames", the whole stream once to count them), and every pass seeks to a
keyframe first.  A detector reads every frame once, in order, so :class:`VideoScan`
does less:

- one demux pass for the packet times (no decoding; the frame times and the count),
  then one decode from the start, multithreaded (``thread_type="AUTO"``, one thread per
  CPU), with no seek;
- the luma plane (and the two chroma planes) of each decoded frame are shrunk where they
  lie, without a full-size RGB conversion (:func:`shrink_plane`: a bilinear step to twice
  the analysis size, then a 2x2 area mean), and the small image is converted to RGB
  (BT.601, as
  ``VideoReader.iter_frames(analysis=True)``);
- the decoded ``av.VideoFrame`` comes with each small frame, so a caller keeps the few
  it needs at full size (keyframe thumbnails) without a second decode.

Frame numbers are the reader's (PyAV backend): frame ``i`` is the frame whose pts is the
``i``-th smallest packet pts; a broken leading GOP that does not decode is dropped, as
the ffmpeg CLI does; where the decoder's pts do not follow the packet order (AVI packed
B-frames) frame ``i`` is the ``i``-th frame the decoder outputs.  The count and times
are final once the pass has ended (``num_frames``, ``timestamps()``).
``tests/media/test_video_scan.py`` checks index, time and pixels against the reader on
the AVI, MPEG-PS, MPEG-TS and MP4 fixtures of the parity harness.

>>> with VideoScan("clip.mp4", size=(64, 48)) as scan:       # doctest: +SKIP
...     for f in scan:
...         f.index, f.image.shape                            # (0, (48, 64, 3)) ...
...     scan.num_frames
250
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..errors import ConfigError, DataError
from .video_reader import (
    VideoMeta,
    _av_errors,
    _av_open,
    _check_times,
    _source_of,
    _timing_facts,
)

__all__ = ["ScanFrame", "VideoScan", "shrink_plane"]

_PLANAR = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")
_CHECK = 16  # decoded frames whose pts decide the numbering mode (as the reader)


class ScanFrame(NamedTuple):
    """One frame of a scan: its index, time (s), small image and the decoded frame."""

    index: int
    time: float
    image: np.ndarray
    frame: Any  # av.VideoFrame at full size (convert it only if you need it)


def shrink_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 plane shrunk to ``size=(width, height)``: a plane at least 4x larger each
    way is first resampled bilinearly to twice the size (each sample the mean of the 2x2
    source pixels around it: cheap, it reads only those rows), then every output pixel
    is the mean of a 2x2 block of those (OpenCV's area filter); a smaller plane is area
    averaged directly.

    >>> shrink_plane(np.full((480, 640), 7, np.uint8), (64, 48)).shape
    (48, 64)
    """
    import cv2

    h, w = plane.shape[:2]
    tw, th = int(size[0]), int(size[1])
    if w >= 4 * tw and h >= 4 * th:
        plane = cv2.resize(plane, (2 * tw, 2 * th), interpolation=cv2.INTER_LINEAR)
    if (plane.shape[1], plane.shape[0]) == (tw, th):
        return np.ascontiguousarray(plane)
    return cv2.resize(plane, (tw, th), interpolation=cv2.INTER_AREA)


def _decode_threads() -> int:
    """Decoder threads for a pass: one per CPU this process may run on (at most 16).
    ffmpeg's own default (``thread_count=0``) is one more than the CPUs, which on a
    small machine leaves the analysis thread fighting an extra decoder thread: measured
    on 2 cores, 2 threads decode 6-19% faster than ffmpeg's default 3."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _plane(pl: Any) -> np.ndarray:
    return np.frombuffer(pl, np.uint8).reshape(pl.height, pl.line_size)[:, :pl.width]


class VideoScan:
    """A single in-order pass over ``src`` (path, bytes, binary file, or what
    :class:`VideoReader` takes) yielding :class:`ScanFrame` at ``size=(w, h)``.

    ``gray=True`` gives luma ``[h, w]`` images; ``fast=True`` lets the decoder skip the
    in-loop deblocking filter (not bit-exact; for analysis only); ``threads=1`` decodes
    on one thread.  Iterate once; :attr:`meta` is the container's view before the pass
    and exact after it.
    """

    def __init__(self, src: str | os.PathLike[str] | bytes | BinaryIO | Any, *,
                 size: tuple[int, int] | None = None, width: int | None = None,
                 gray: bool = False, fast: bool = False, threads: int = 0) -> None:
        if (size is None) == (width is None):
            raise ConfigError("VideoScan needs size=(width, height) or width=, not both")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ConfigError(f"VideoScan size must be (width, height) >= 1, got {size}")
        if width is not None and width < 2:
            raise ConfigError(f"VideoScan width must be >= 2 pixels, got {width}")
        self.gray, self.fast, self.threads = gray, fast, threads
        self._src = _source_of(src)
        self._container: Any = None
        self._pts = self._index_pass()
        self._n: int | None = None
        if size is None:  # the aspect ratio kept, even sides, never larger than the video
            w0, h0 = self._wh
            aw = min(int(width), w0)  # type: ignore[arg-type]
            size = (_even(aw), _even(aw * h0 / w0))
        self.size = (int(size[0]), int(size[1]))

    @property
    def frame_size(self) -> tuple[int, int]:
        """The video's (width, height)."""
        return self._wh

    # -- index ----------------------------------------------------------------------
    def _index_pass(self) -> np.ndarray:
        """Sorted unique packet pts (the reader's frame index) from one demux pass."""
        container, stream = _av_open(self._src)
        try:
            pts = [p.pts if p.pts is not None else p.dts for p in container.demux(stream)
                   if p.size]
            self._tb = float(stream.time_base)
            rate = stream.average_rate or stream.guessed_rate
            self._rate = float(rate) if rate else 0.0
            ctx = stream.codec_context
            self._wh = (int(ctx.width), int(ctx.height))
            self._codec = str(ctx.name)
        except _av_errors() as e:
            raise DataError("undecodable_video", f"demuxing failed: {e}") from e
        finally:
            container.close()
        arr = np.unique(np.asarray([p for p in pts if p is not None], np.int64))
        if not len(arr):
            raise DataError("undecodable_video", "the video stream holds no frames")
        _check_times(self._times(arr), "pyav")
        return arr

    def _times(self, pts: np.ndarray) -> np.ndarray:
        return (pts - pts[0]).astype(np.float64) * self._tb

    @property
    def num_frames(self) -> int:
        """Frames in the video (exact after the pass; before it, the packet count)."""
        return self._n if self._n is not None else len(self._pts)

    def timestamps(self) -> np.ndarray:
        """Presentation time (s, frame 0 at 0.0) of every frame, as the reader's."""
        return self._times(self._pts[:self.num_frames])

    @property
    def meta(self) -> VideoMeta:
        """fps, num_frames, duration, width, height, codec, is_vfr (as the reader's)."""
        fps, duration, is_vfr = _timing_facts(self.timestamps(), self._rate)
        return VideoMeta(fps=fps, num_frames=self.num_frames, duration=duration,
                         width=self._wh[0], height=self._wh[1], codec=self._codec,
                         is_vfr=is_vfr)

    # -- the pass -------------------------------------------------------------------
    def _decoded(self) -> Iterator[Any]:
        self._container, stream = _av_open(self._src)
        stream.thread_type = "AUTO"  # frame threads where the codec has them, else slices
        stream.codec_context.thread_count = self.threads or _decode_threads()
        if self.fast:
            stream.codec_context.options = {"skip_loop_filter": "all", "flags2": "+fast"}
        ctx = stream.codec_context
        errors = _av_errors()
        try:
            for packet in self._container.demux(stream):
                if packet.size:
                    yield from ctx.decode(packet)
            yield from ctx.decode(None)
        except errors as e:
            raise DataError("undecodable_video", f"decoding failed: {e}") from e

    def __iter__(self) -> Iterator[ScanFrame]:
        if self._container is not None:
            raise ConfigError("a VideoScan is iterated once; make a new one")
        dec = self._decoded()
        head: list[Any] = []
        for fr in dec:
            head.append(fr)
            if len(head) >= min(_CHECK, len(self._pts)):
                break
        if not head:
            raise DataError("undecodable_video", "the first frame does not decode")
        seen = [f.pts for f in head]
        index = {int(p): i for i, p in enumerate(self._pts)}
        k = index.get(int(seen[0])) if seen[0] is not None else None
        if k and seen == self._pts[k:k + len(seen)].tolist():
            self._pts = self._pts[k:]  # a broken leading GOP: start where frames decode
            index = {int(p): i for i, p in enumerate(self._pts)}
        ordinal = seen != self._pts[:len(seen)].tolist()
        ts = self._times(self._pts)
        frames = (f for src in (head, dec) for f in src)
        i = 0
        if ordinal:  # decoder order is the truth: count what it outputs
            for fr in frames:
                if i >= len(self._pts):
                    break
                yield ScanFrame(i, float(ts[i]), self._small(fr), fr)
                i += 1
        else:
            for fr in frames:
                j = index.get(int(fr.pts)) if fr.pts is not None else None
                if j is None or j < i:
                    continue
                if j > i:
                    raise DataError("undecodable_video", f"frame {i} did not decode (the "
                                    f"decoder skipped to frame {j}): the file is damaged "
                                    "there")
                yield ScanFrame(i, float(ts[i]), self._small(fr), fr)
                i += 1
            if i < len(self._pts):
                raise DataError("undecodable_video", f"frame {i} is missing: the stream "
                                "ends early (truncated file?)")
        self._n = i
        self.close()

    def _small(self, frame: Any) -> np.ndarray:
        import cv2

        size = self.size
        if frame.format.name not in _PLANAR:
            img = frame.reformat(width=size[0], height=size[1], format="rgb24",
                                 interpolation="AREA").to_ndarray(format="rgb24")
            return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if self.gray else img
        y = shrink_plane(_plane(frame.planes[0]), size)
        if self.gray:
            return y
        u = shrink_plane(_plane(frame.planes[1]), size)
        v = shrink_plane(_plane(frame.planes[2]), size)
        return cv2.cvtColor(cv2.merge((y, v, u)), cv2.COLOR_YCrCb2RGB)  # Y, Cr, Cb order

    def close(self) -> None:
        """Release the decoder (also done when the pass ends)."""
        if self._container:
            self._container.close()
        self._container = False  # closed: a second pass is refused

    def __enter__(self) -> VideoScan:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
