"""Frame-accurate video reading with interchangeable backends (decord, torchcodec, PyAV,
OpenCV).

One interface, :class:`VideoReader`, over four decoders chosen at run time:

- ``decord``: fastest random access (``get_batch``), but it seeks wrongly (silently
  returns other frames) on AVI/MPEG-4 Part 2, MPEG-PS/TS and HEVC: it is used, and
  accepted, only where the parity harness found it exact (see ``_SUPPORT``).
- ``torchcodec``: the PyTorch project's FFmpeg decoder (``seek_mode="exact"`` scans the
  stream once on open).
- ``pyav``: the reference; exact frame count and presentation timestamps from the
  container (so variable-frame-rate clips are handled), random access by seeking to the
  keyframe before the target and decoding forward; MPEG-4 Part 2 "packed B-frames"
  (DivX/XviD AVI) are unpacked with the ``mpeg4_unpack_bframes`` bitstream filter.
- ``opencv``: ``cv2.VideoCapture`` with ``CAP_PROP_POS_FRAMES`` seeks; bytes are spilled
  to a temporary file.  It cannot see per-frame timestamps: prefer ``pyav`` for VFR.

Every backend is either frame-exact on a file or refuses it with
``DataError("backend_unsupported")``: ``tests/media/test_video_parity.py`` compares each
backend's frames with frames decoded by the ffmpeg CLI (raw RGB by frame number) on AVI
(MPEG-4 Part 2 with B-frames, MJPEG), MPEG-PS, MPEG-TS, VFR MP4, H.264, HEVC, VP9 and
AV1, and ``_SUPPORT`` lists, per backend, the (container, codec) pairs where it was
exact.  ``backend="auto"`` takes the first backend, in the order of
:func:`available_backends`, that accepts the file's container and codec.

Frame ``i`` is the i-th frame in presentation order, on every backend.  Timestamps are
seconds relative to the first frame's presentation time (frame 0 is at 0.0).

The reader opens its decoder lazily on first use and drops it when pickled, so a reader
built in a parent process can be sent to DataLoader or Ray workers: each worker re-opens
it (a decord reader shared across ``fork`` deadlocks).

>>> with open_video("clip.mp4") as vr:                        # doctest: +SKIP
...     vr.meta.num_frames, vr.get_frames([0, 10]).shape
(250, (2, 240, 320, 3))

Errors are :class:`~mmshard.errors.DataError` with a ledger reason: ``empty_file``,
``undecodable_video``, ``no_video_stream``, ``unsupported_codec``, ``frame_out_of_range``,
``backend_unsupported``.  Every time (timestamps, duration) is finite, starts at 0 and is
below the duration.
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..errors import ConfigError, DataError, DependencyMissingError

__all__ = [
    "BACKENDS",
    "FileRange",
    "VideoFrame",
    "VideoMeta",
    "VideoReader",
    "available_backends",
    "open_video",
    "source_bytes",
    "source_handle",
]

BACKENDS = ("auto", "decord", "torchcodec", "pyav", "opencv")
_IMPORT_NAME = {"decord": "decord", "torchcodec": "torchcodec", "pyav": "av", "opencv": "cv2"}
# torchcodec first (fastest sequential and random access in bench/video.py), then PyAV
# (exact everywhere); decord only where both are missing
_AUTO_ORDER = ("torchcodec", "pyav", "decord", "opencv")

# Where each backend was frame-exact in the parity harness (container family, codec);
# "*" matches any.  A backend refuses a file outside its entries (decord and OpenCV
# silently return other frames or stop early there); pyav and torchcodec take any file.
_SUPPORT: dict[str, frozenset[tuple[str, str]]] = {
    "decord": frozenset({("mp4", "h264"), ("mp4", "vp9"), ("mkv", "h264"), ("mkv", "vp8"),
                         ("mkv", "vp9"), ("*", "mjpeg"), ("avi", "msmpeg4v3"),
                         ("avi", "msmpeg4v2"), ("avi", "msmpeg4")}),
    "opencv": frozenset({("mp4", "h264"), ("mp4", "hevc"), ("mp4", "vp9"), ("mkv", "h264"),
                         ("mkv", "hevc"), ("mkv", "vp8"), ("mkv", "vp9"), ("avi", "mpeg4"),
                         ("*", "mjpeg"), ("avi", "msmpeg4v3"), ("avi", "msmpeg4v2"),
                         ("avi", "msmpeg4")}),
    "pyav": frozenset({("*", "*")}),
    # torchcodec 0.13 stops early on the last frames of AVI/MPEG-PS/MPEG-TS B-frame streams
    "torchcodec": frozenset({("mp4", "*"), ("mkv", "*"), ("*", "mjpeg"), ("avi", "msmpeg4"),
                             ("avi", "msmpeg4v2"), ("avi", "msmpeg4v3"), ("avi", "cinepak")}),
}
_CODEC_ALIAS = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx-vp9": "vp9", "libvpx": "vp8"}
_FAMILY = {"mov": "mp4", "mp4": "mp4", "matroska": "mkv", "webm": "mkv", "avi": "avi",
           "mpeg": "mpeg-ps", "mpegts": "mpeg-ts", "vob": "mpeg-ps"}


@dataclass(frozen=True)
class FileRange:
    """A video stored as ``size`` bytes at ``offset`` of a local file (a tar member of a
    shard): a :class:`VideoReader` source that is read in place, never into memory.

    Every decoder open gets its own handle (:meth:`open`), so the probe, the decoder and
    an audio pass never share a file position; it pickles as three fields.

    >>> r = FileRange("shard.tar", 1536, 12_000_000)           # doctest: +SKIP
    >>> VideoReader(r, backend="pyav").meta.num_frames          # doctest: +SKIP
    250
    """

    path: str
    offset: int = 0
    size: int = -1  # -1: to the end of the file

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise ConfigError(f"FileRange offset must be >= 0, got {self.offset}")
        if self.size == -1:
            object.__setattr__(self, "size", max(0, os.path.getsize(self.path) - self.offset))
        if self.size < 0:
            raise ConfigError(f"FileRange size must be >= 0 (or -1), got {self.size}")

    def __len__(self) -> int:
        return self.size

    def open(self) -> io.BufferedReader:
        """A new seekable binary reader of the range (position 0 = ``offset``)."""
        return io.BufferedReader(_RangeRaw(self.path, self.offset, self.size), 1 << 16)

    def read_bytes(self) -> bytes:
        """The whole range in memory (for code that needs bytes, e.g. a content hash)."""
        with self.open() as f:
            return f.read()


class _RangeRaw(io.RawIOBase):
    """Raw reader of ``[offset, offset + size)`` of a file, positions relative to it."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._f = open(path, "rb", buffering=0)
        self._lo, self._n, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (0, self._pos, self._n)[whence]
        self._pos = min(max(0, base + pos), self._n)
        return self._pos

    def readinto(self, b: Any) -> int:
        want = min(len(b), self._n - self._pos)
        if want <= 0:
            return 0
        self._f.seek(self._lo + self._pos)
        got = self._f.readinto(memoryview(b)[:want]) or 0
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


Source = str | bytes | FileRange


def source_handle(src: Source) -> str | BinaryIO:
    """What a decoder opens: a path as it is, bytes and ranges as file objects."""
    if isinstance(src, str):
        return src
    if isinstance(src, FileRange):
        return src.open()
    return io.BytesIO(src)


def source_bytes(src: Source) -> bytes:
    """The encoded bytes of a source (reads a path or range whole: only for hashing)."""
    if isinstance(src, bytes):
        return src
    if isinstance(src, FileRange):
        return src.read_bytes()
    with open(src, "rb") as f:
        return f.read()


@dataclass(frozen=True, kw_only=True)
class VideoMeta:
    """Facts about the first video stream.

    ``fps`` is the average rate; ``is_vfr`` is true when frame durations differ by more
    than 10% of the median (then use :meth:`VideoReader.timestamps`, not ``i / fps``).
    """

    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    codec: str
    is_vfr: bool


class VideoFrame(NamedTuple):
    """One decoded frame from :meth:`VideoReader.iter_frames`: its index, time, pixels."""

    index: int
    time: float
    image: np.ndarray


def available_backends() -> list[str]:
    """Backends whose decoder library is importable here, in ``auto`` preference order.

    >>> "pyav" in available_backends()                          # doctest: +SKIP
    True
    """
    return [b for b in _AUTO_ORDER if importlib.util.find_spec(_IMPORT_NAME[b]) is not None]


def container_family(format_name: str) -> str:
    """``mp4`` | ``mkv`` | ``avi`` | ``mpeg-ps`` | ``mpeg-ts`` | the FFmpeg name, for a
    demuxer name such as ``"mov,mp4,m4a,3gp,3g2,mj2"``.

    >>> container_family("matroska,webm")
    'mkv'
    """
    first = format_name.split(",")[0]
    return _FAMILY.get(first, first)


def backend_refusal(backend: str, family: str, codec: str) -> str | None:
    """Why ``backend`` refuses a (container family, codec) file, or None if it accepts.

    >>> backend_refusal("decord", "avi", "mpeg4") is not None
    True
    """
    ok = _SUPPORT[backend]
    if {(family, codec), ("*", codec), (family, "*"), ("*", "*")} & ok:
        return None
    return (f"the {backend} backend is not frame-exact on {codec} in {family} (it returns "
            f"other frames or stops early there); use backend='pyav', 'torchcodec' or "
            f"'auto'")


def _resolve_backend(name: str) -> str:
    """Validate a backend name; ``auto`` stays ``auto`` (chosen per file on open)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown video backend {name!r}; allowed: {', '.join(BACKENDS)}")
    avail = available_backends()
    if name == "auto":
        if not avail:
            raise DependencyMissingError(
                "no video decoder is importable; install one of: decord, av, torchcodec, "
                "opencv-python-headless")
        return name
    if name not in avail:
        raise DependencyMissingError(
            f"video backend {name!r} needs the {_IMPORT_NAME[name]!r} module, which is not "
            f"importable; install it or use one of {avail or ['(none available)']}")
    return name


def _choose_backend(name: str, src: Source) -> str:
    """The backend that reads ``src``: ``name`` if it accepts the file's container and
    codec (else DataError ``backend_unsupported``), or for ``auto`` the first that does."""
    if importlib.util.find_spec("av") is None:  # no prober: trust the named backend
        return name if name != "auto" else available_backends()[0]
    family, codec = _probe_format(src)
    if name != "auto":
        why = backend_refusal(name, family, codec)
        if why:
            raise DataError("backend_unsupported", why)
        return name
    for b in available_backends():
        if backend_refusal(b, family, codec) is None:
            return b
    raise DataError("backend_unsupported",  # pragma: no cover - pyav accepts everything
                    f"no installed backend is frame-exact on {codec} in {family}")


def _source_of(src: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
               ) -> Source:
    if isinstance(src, FileRange):
        if src.size == 0:
            raise DataError("empty_file", f"zero-byte video at {src.path}:{src.offset}")
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.isfile(path):
            raise DataError("file_not_found", f"video file {path!r} does not exist")
        if os.path.getsize(path) == 0:
            raise DataError("empty_file", f"video file {path!r} has zero bytes")
        return path
    elif hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, bytes):
            raise ConfigError("a video file object must be opened in binary mode ('rb')")
    else:
        raise ConfigError(
            f"video source must be a path, bytes or a binary file object, got "
            f"{type(src).__name__}")
    if not data:
        raise DataError("empty_file", "zero-byte video")
    return data


class VideoReader:
    """Random-access and streaming reader of one video; a context manager.

    ``src`` is a path, bytes, a :class:`FileRange` (read in place) or a binary file
    object (read once, kept as bytes).  The decoder opens lazily; pickling drops it and
    the copy re-opens on first use.
    ``fast=True`` lets the PyAV decoder skip the in-loop deblocking filter and use
    non-bit-exact shortcuts (about 1.5-2x faster on H.264): for analysis passes only,
    the pixels differ slightly from the exact decode.  ``threads=1`` decodes on one
    thread (PyAV): the same frames on every run even where a damaged stream makes
    frame-threaded error concealment vary; 0 lets FFmpeg choose.

    >>> vr = VideoReader("clip.mp4", backend="pyav")            # doctest: +SKIP
    >>> frames = vr.get_frames([0, 5, 9])  # uint8 [3, H, W, 3] RGB  # doctest: +SKIP
    >>> for f in vr.iter_frames(step=10, size=(64, 48), gray=True):  # doctest: +SKIP
    ...     print(f.index, f.time, f.image.shape)
    """

    def __init__(self, src: str | os.PathLike[str] | bytes | FileRange | BinaryIO, *,
                 backend: str = "auto", fast: bool = False, threads: int = 0) -> None:
        self.requested = _resolve_backend(backend)
        self.fast = fast
        self.threads = threads
        self._src = _source_of(src)
        self._impl: _Backend | None = None
        self._chosen: str | None = None

    @property
    def backend(self) -> str:
        """The backend that decodes this file (``auto`` is resolved on first use)."""
        if self._chosen is None:
            self._chosen = _choose_backend(self.requested, self._src)
        return self._chosen

    def with_backend(self, backend: str, *, fast: bool | None = None) -> VideoReader:
        """A new reader of the same source with another backend (the caller closes it).

        >>> pyav = vr.with_backend("pyav")                      # doctest: +SKIP
        """
        other = VideoReader(self._src, backend=backend,
                            fast=self.fast if fast is None else fast)
        if isinstance(self._impl, _PyAVBackend) and other.backend == "pyav":
            # the frame index is the same: no second demux and decode-order check
            other._impl = _PyAVBackend(self._src, fast=other.fast, facts=self._impl.facts())
        return other

    # -- lifecycle -------------------------------------------------------------------
    def _open(self) -> _Backend:
        if self._impl is None:
            while True:
                cls = _BACKEND_CLASSES[self.backend]
                try:
                    self._impl = cls(self._src, fast=self.fast, threads=self.threads) if (
                        cls is _PyAVBackend) else cls(self._src)
                    break
                except DataError as e:
                    # auto: a backend that refuses this file on open (frame counts that
                    # disagree, invalid times) hands over to the next one that accepts it
                    nxt = self._next_backend() if (
                        self.requested == "auto" and e.reason == "backend_unsupported") else None
                    if nxt is None:
                        raise
                    self._chosen = nxt
        return self._impl

    def _next_backend(self) -> str | None:
        family, codec = _probe_format(self._src)
        order = available_backends()
        for b in order[order.index(self.backend) + 1:]:
            if backend_refusal(b, family, codec) is None:
                return b
        return None

    def close(self) -> None:
        """Release the decoder (the reader re-opens if used again)."""
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> VideoReader:
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"requested": self.requested, "_chosen": self._chosen, "_src": self._src,
                "fast": self.fast, "threads": self.threads, "_impl": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        src = self._src if isinstance(self._src, (str, FileRange)) else (
            f"<{len(self._src)} bytes>")
        return f"VideoReader({src!r}, backend={self._chosen or self.requested!r})"

    # -- facts -----------------------------------------------------------------------
    @property
    def meta(self) -> VideoMeta:
        """fps, num_frames, duration, width, height, codec, is_vfr."""
        m = self._open().meta
        return VideoMeta(**m)

    def __len__(self) -> int:
        return self.meta.num_frames

    def timestamps(self) -> np.ndarray:
        """Presentation time (seconds, frame 0 at 0.0) of every frame, float64 ``[N]``."""
        return self._open().timestamps().copy()

    # -- access ----------------------------------------------------------------------
    def _check(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.meta.num_frames
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][:5].tolist()
            raise DataError("frame_out_of_range",
                            f"frame indices {bad} outside [0, {n}); clip the sampler output")
        return idx

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``[N, H, W, 3]`` RGB.

        Only the needed parts of the stream are decoded where the backend can seek.

        >>> vr.get_frames([3, 1, 3]).shape                       # doctest: +SKIP
        (3, 240, 320, 3)
        """
        idx = self._check(indices)
        m = self.meta
        if idx.size == 0:
            return np.empty((0, m.height, m.width, 3), np.uint8)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = self._open().get_sorted(uniq)
        return frames[inverse]

    def index_at(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Index of the frame on screen at each time (last frame with pts <= t), clipped."""
        ts = self.timestamps()
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        idx = np.searchsorted(ts, t + 1e-6, side="right") - 1
        return np.clip(idx, 0, len(ts) - 1)

    def get_frames_at(self, timestamps: Sequence[float] | np.ndarray) -> np.ndarray:
        """Frames on screen at the given times in seconds (VFR-aware), ``[N, H, W, 3]``."""
        return self.get_frames(self.index_at(timestamps))

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1,
                    size: tuple[int, int] | None = None, gray: bool = False,
                    analysis: bool = False) -> Iterator[VideoFrame]:
        """Stream frames ``start:stop:step`` in order with bounded memory.

        ``size=(width, height)`` resizes, ``gray=True`` gives ``[H, W]`` luma frames.
        ``analysis=True`` (with ``size``) trades exact colours for speed where the
        backend can: PyAV shrinks the decoded YUV planes with OpenCV's area filter and
        converts the small image (no full-size swscale pass) -- for shot detection and
        motion, not for pixels a model sees.
        Yields :class:`VideoFrame` ``(index, time, image)``.

        >>> [f.index for f in vr.iter_frames(0, 30, 10)]         # doctest: +SKIP
        [0, 10, 20]
        """
        if step < 1:
            raise ConfigError(f"iter_frames step must be >= 1, got {step}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ConfigError(f"iter_frames size must be (width, height) >= 1, got {size}")
        n = self.meta.num_frames
        stop = n if stop is None else min(stop, n)
        if start < 0:
            raise ConfigError(f"iter_frames start must be >= 0, got {start}")
        return self._stream(start, stop, step, size, gray, analysis and size is not None)

    def iter_decoded(self, start: int, stop: int) -> Iterator[tuple[int, int, Any]]:
        """``(index, pts, av.VideoFrame)`` for frames ``[start, stop)`` in presentation
        order, from PyAV (the reader must use backend ``pyav``): ``pts`` is the frame's
        place in the reader's index, in :attr:`time_base` units, increasing -- use it,
        not ``frame.pts``, to re-encode (AVI packed B-frames and broken streams carry
        pts that belong to other frames).  For cutting and re-encoding."""
        impl = self._open()
        if not isinstance(impl, _PyAVBackend):
            raise ConfigError(f"iter_decoded needs backend='pyav', this reader uses "
                              f"{self.backend!r}")
        for i, frame in impl._decode_targets(range(start, min(stop, len(impl._pts)))):
            yield i, int(impl._pts[i] - impl._pts[0]), frame

    @property
    def time_base(self) -> Any:
        """The PyAV stream's time base (a Fraction) of :meth:`iter_decoded` pts."""
        impl = self._open()
        if not isinstance(impl, _PyAVBackend):
            raise ConfigError("time_base needs backend='pyav'")
        return impl._stream.time_base

    def _stream(self, start: int, stop: int, step: int, size: tuple[int, int] | None,
                gray: bool, analysis: bool) -> Iterator[VideoFrame]:
        # a generator method: it keeps the reader (and so its decoder) alive while iterated
        if start < stop:
            impl = self._open()
            if analysis and isinstance(impl, _PyAVBackend):
                yield from impl.iter_small(start, stop, step, size, gray)  # type: ignore[arg-type]
            else:
                yield from impl.iter_frames(start, stop, step, size, gray)


def open_video(src: str | os.PathLike[str] | bytes | BinaryIO, backend: str = "auto"
               ) -> VideoReader:
    """Open a video from a path, bytes or binary file with the named backend.

    ``backend``: ``auto`` (the first of torchcodec, PyAV, decord, OpenCV that is
    frame-exact on the file's container and codec and accepts it on open) | ``decord`` |
    ``torchcodec`` | ``pyav`` | ``opencv``.  Decoding problems raise
    :class:`~mmshard.errors.DataError`; a named backend that is not frame-exact on the
    file raises ``backend_unsupported``.

    >>> with open_video(open("clip.mp4", "rb"), backend="pyav") as vr:   # doctest: +SKIP
    ...     first = vr.get_frames([0])[0]
    """
    vr = VideoReader(src, backend=backend)
    vr._open()
    return vr



# ---- backends (private) -----------------------------------------------------------------

_CHUNK = 32  # frames per decord batch when streaming


def _finish(img: np.ndarray, size: tuple[int, int] | None, gray: bool) -> np.ndarray:
    """Resize (area) and/or convert an RGB frame to luma with OpenCV."""
    import cv2

    if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
        img = cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA)
    if gray:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img)


def _timing_facts(ts: np.ndarray, fps_hint: float) -> tuple[float, float, bool]:
    """(fps, duration, is_vfr) from relative timestamps and the container's rate."""
    n = len(ts)
    if n > 1:
        d = np.diff(ts)
        med = float(np.median(d))
        is_vfr = bool(med > 0 and np.max(np.abs(d - med)) > 0.1 * med)
        step = med if med > 0 else (1.0 / fps_hint if fps_hint > 0 else 0.0)
    else:
        is_vfr = False
        step = 1.0 / fps_hint if fps_hint > 0 else 0.0
    duration = float(ts[-1] + step) if n else 0.0
    fps = fps_hint if 0 < fps_hint < 1e4 else (n / duration if duration > 0 else 0.0)
    return float(fps), duration, is_vfr


def _check_times(ts: np.ndarray, backend: str) -> None:
    """Refuse timestamps that are not finite and increasing (decord reports 3.8e17 s on
    some AVIs): every time field derived from them must be a real time."""
    if not np.all(np.isfinite(ts)) or (len(ts) > 1 and not np.all(np.diff(ts) > 0)) or (
            len(ts) and ts[-1] > 1e7):
        raise DataError("backend_unsupported",
                        f"the {backend} backend reports invalid frame times (not finite or "
                        f"not increasing, last {float(ts[-1]) if len(ts) else 0.0:.4g} s); "
                        f"use backend='pyav' or 'auto'")


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, ValueError, OSError, IndexError, EOFError)


def _av_open(src: Source):
    """Open a container with PyAV and return (container, stream), mapping failures."""
    import av

    try:
        container = av.open(source_handle(src), "r")
    except _av_errors() as e:
        raise DataError("undecodable_video", f"cannot open as a video container: {e}") from e
    if not container.streams.video:
        container.close()
        raise DataError("no_video_stream", "the container has no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or not getattr(ctx, "name", None) or ctx.name == "none":
        container.close()
        raise DataError("unsupported_codec", "the video stream's codec has no decoder here")
    return container, stream


class _Backend:
    meta: dict[str, Any]

    def timestamps(self) -> np.ndarray:
        raise NotImplementedError

    def get_sorted(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def iter_frames(self, start: int, stop: int, step: int, size: tuple[int, int] | None,
                    gray: bool) -> Iterator[VideoFrame]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _BatchedBackend(_Backend):
    """A backend with exact random access by frame index (decord, torchcodec): sorted
    gets and streaming both read batches of ``_CHUNK`` frames through ``_frames``."""

    name = "backend"
    _ts: np.ndarray

    def _frames(self, idx: list[int]) -> np.ndarray:  # [N, H, W, 3] uint8
        raise NotImplementedError

    def timestamps(self) -> np.ndarray:
        return self._ts

    def _batch(self, idx: np.ndarray) -> np.ndarray:
        try:
            return self._frames(idx.tolist())
        except Exception as e:
            raise DataError("undecodable_video", f"{self.name} failed on frames "
                            f"{idx[:4].tolist()}...: {e}") from e

    def get_sorted(self, idx: np.ndarray) -> np.ndarray:
        return self._batch(idx)

    def iter_frames(self, start, stop, step, size, gray):
        targets = range(start, stop, step)
        for c in range(0, len(targets), _CHUNK):
            chunk = np.asarray(targets[c:c + _CHUNK], np.int64)
            batch = self._batch(chunk)
            for i, img in zip(chunk.tolist(), batch):
                yield VideoFrame(i, float(self._ts[i]), _finish(img, size, gray))
            del batch


class _PyAVBackend(_Backend):
    """Reference backend: demux once for pts and keyframes, seek + decode forward.

    Frame ``i`` is the frame whose pts is the i-th smallest packet pts.  Where the
    decoder's output pts do not follow that order (DivX-style "packed B-frames" in AVI:
    the pts the demuxer gives belong to other frames), the reader switches to ordinal
    mode: frame ``i`` is the i-th frame the decoder outputs from the start, as the
    ffmpeg CLI counts, and random access decodes forward from the start."""

    def __init__(self, src: Source, fast: bool = False,
                 facts: dict[str, Any] | None = None, threads: int = 0) -> None:
        self._container, self._stream = _av_open(src)
        st = self._stream
        if threads == 1:
            st.codec_context.thread_count = 1
        else:
            st.thread_type = "AUTO"
        if fast:  # applied when the decoder opens (first decode below)
            st.codec_context.options = {"skip_loop_filter": "all", "flags2": "+fast"}
        self._decoder: Iterator[Any] | None = None
        self._last = -1  # index of the last frame the live decoder produced
        if facts is not None:
            self.__dict__.update(facts)
            self.meta = dict(facts["meta"])
            return
        pts: list[int] = []
        keys: list[int] = []
        try:
            for packet in self._packets():
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:
                    continue
                pts.append(p)
                if packet.is_keyframe:
                    keys.append(p)
        except _av_errors() as e:
            self.close()
            raise DataError("undecodable_video", f"demuxing failed: {e}") from e
        if not pts:
            self.close()
            raise DataError("undecodable_video", "the video stream holds no frames")
        self._pts = np.unique(np.asarray(pts, np.int64))
        self._keys = np.unique(np.asarray(keys or [pts[0]], np.int64))
        self._index = {int(p): i for i, p in enumerate(self._pts)}
        tb = st.time_base
        self._ts = (self._pts - self._pts[0]).astype(np.float64) * float(tb)
        _check_times(self._ts, "pyav")
        rate = st.average_rate or st.guessed_rate
        fps, duration, is_vfr = _timing_facts(self._ts, float(rate) if rate else 0.0)
        ctx = st.codec_context
        self.meta = dict(fps=fps, num_frames=len(self._pts), duration=duration,
                         width=int(ctx.width), height=int(ctx.height), codec=str(ctx.name),
                         is_vfr=is_vfr)
        self._ordinal = False
        self._check_order()

    def facts(self) -> dict[str, Any]:
        """The frame index (pts, keyframes, mode, meta) to open a sibling without a scan."""
        return {"_pts": self._pts, "_keys": self._keys, "_index": self._index,
                "_ts": self._ts, "_ordinal": self._ordinal, "meta": self.meta}

    def _check_order(self, n: int = 16) -> None:
        """Decode the first ``n`` frames: prove the stream decodes (a codec we cannot
        decode fails here, not later) and that decoded pts follow the packet order."""
        self._restart(None)
        seen: list[int | None] = []
        try:
            for frame in self._decoder:  # type: ignore[union-attr]
                seen.append(frame.pts)
                if len(seen) >= min(n, len(self._pts)):
                    break
        except _av_errors() as e:
            self.close()
            raise DataError("undecodable_video", f"the first frames do not decode: {e}"
                            ) from e
        if not seen:
            self.close()
            raise DataError("undecodable_video", "the first frame does not decode")
        k = self._index.get(int(seen[0])) if seen[0] is not None else None
        if k and seen == self._pts[k:k + len(seen)].tolist():
            # the first k frames do not decode (a broken leading GOP): like the ffmpeg
            # CLI, the video starts at the first frame that does
            self._pts = self._pts[k:]
            self._keys = self._keys[self._keys >= self._pts[0]]
            self._index = {int(p): i for i, p in enumerate(self._pts)}
            tb = float(self._stream.time_base)
            self._ts = (self._pts - self._pts[0]).astype(np.float64) * tb
            fps, duration, is_vfr = _timing_facts(self._ts, self.meta["fps"])
            self.meta.update(num_frames=len(self._pts), duration=duration, is_vfr=is_vfr)
        self._ordinal = seen != self._pts[:len(seen)].tolist()
        if self._ordinal:
            # decoder order is the truth here: count what it outputs (one full pass)
            n = len(seen) + sum(1 for _ in self._decoder)  # type: ignore[arg-type]
            if n < len(self._pts):
                self._pts, self._ts = self._pts[:n], self._ts[:n]
                fps, duration, is_vfr = _timing_facts(self._ts, self.meta["fps"])
                self.meta.update(num_frames=n, duration=duration, is_vfr=is_vfr)
        self._decoder = None

    def _packets(self) -> Iterator[Any]:
        """Demuxed non-empty packets from the current position."""
        for packet in self._container.demux(self._stream):
            if packet.size:
                yield packet

    def _frames(self) -> Iterator[Any]:
        """Decoded frames from the current position to the end (decoder flushed)."""
        ctx = self._stream.codec_context
        for packet in self._packets():
            yield from ctx.decode(packet)
        yield from ctx.decode(None)

    def timestamps(self) -> np.ndarray:
        return self._ts

    def _restart(self, kpts: int | None) -> None:
        """Seek to keyframe pts ``kpts`` (None: the start) and start a fresh decoder."""
        if kpts is None:
            self._container.seek(0, stream=self._stream)
        else:
            self._container.seek(kpts, stream=self._stream, backward=True, any_frame=False)
        self._stream.codec_context.flush_buffers()
        self._decoder = iter(self._frames())
        self._last = -1

    def _seek_before(self, i: int, back: int = 0) -> None:
        """Position the decoder at the keyframe ``back`` keyframes before frame ``i``
        (from the start of the file after three tries)."""
        if back > 3:
            self._restart(None)
            return
        target = int(self._pts[i])
        k = int(np.searchsorted(self._keys, target, side="right")) - 1 - back
        self._restart(int(self._keys[max(k, 0)]))

    def _needs_seek(self, i: int) -> bool:
        if self._ordinal:  # only the start is a known position
            return self._decoder is None or self._last >= i
        if self._decoder is None or self._last < 0 or self._last >= i:
            return True
        # seek only when a keyframe lies between the decoder position and the target
        cur, target = int(self._pts[self._last]), int(self._pts[i])
        k = int(np.searchsorted(self._keys, target, side="right")) - 1
        return k >= 0 and int(self._keys[k]) > cur

    def _decode_targets(self, targets: Iterable[int]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, av.VideoFrame)`` for ascending ``targets`` (lazily consumed).

        A seek that lands after the target (or on a decoder that yields nothing until
        the end, as MPEG-TS can) is retried one keyframe further back."""
        errors = _av_errors()
        for i in targets:
            i = int(i)
            back = 0
            if self._needs_seek(i):
                if self._ordinal:
                    self._restart(None)
                else:
                    self._seek_before(i)
            while True:
                try:
                    frame = next(self._decoder)  # type: ignore[arg-type]
                except StopIteration:
                    self._decoder = None
                    if self._last < 0 and back <= 3 and not self._ordinal:
                        back += 1
                        self._seek_before(i, back)
                        continue
                    raise DataError("undecodable_video",
                                    f"frame {i} is missing: the stream ends early "
                                    "(truncated file?)") from None
                except errors as e:
                    self._decoder = None
                    raise DataError("undecodable_video", f"decoding frame {i} failed: {e}"
                                    ) from e
                if self._ordinal:
                    j = self._last + 1
                else:
                    j = self._index.get(int(frame.pts)) if frame.pts is not None else None
                if j is None:
                    continue
                if self._last < 0 and j > i and back <= 3 and not self._ordinal:
                    # the seek landed after the target: go one keyframe further back
                    back += 1
                    self._seek_before(i, back)
                    continue
                self._last = j
                if j == i:
                    yield i, frame
                    break
                if j > i:
                    raise DataError("undecodable_video", f"frame {i} did not decode "
                                    f"(the decoder skipped from frame {j - 1} or earlier "
                                    f"to {j}): the file is damaged there")

    def get_sorted(self, idx: np.ndarray) -> np.ndarray:
        m = self.meta
        out = np.empty((len(idx), m["height"], m["width"], 3), np.uint8)
        for k, (_, frame) in enumerate(self._decode_targets(idx.tolist())):
            out[k] = frame.to_ndarray(format="rgb24")
        return out

    def iter_frames(self, start, stop, step, size, gray):
        for i, frame in self._decode_targets(range(start, stop, step)):
            if size is not None:  # swscale resizes while converting: cheaper than after
                frame = frame.reformat(width=size[0], height=size[1], format="rgb24",
                                       interpolation="AREA")
            img = frame.to_ndarray(format="rgb24")
            if gray:  # the same RGB->luma formula as the other backends
                img = _finish(img, None, True)
            yield VideoFrame(i, float(self._ts[i]), img)

    def iter_small(self, start: int, stop: int, step: int, size: tuple[int, int],
                   gray: bool) -> Iterator[VideoFrame]:
        """Approximate small RGB (or luma) frames: 8-bit planar YUV planes are shrunk
        with ``cv2.INTER_AREA`` and converted with OpenCV (BT.601), skipping swscale's
        full-size conversion; other pixel formats go through :meth:`iter_frames`."""
        import cv2

        for i, frame in self._decode_targets(range(start, stop, step)):
            if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p",
                                         "yuv444p", "yuvj444p"):
                img = frame.reformat(width=size[0], height=size[1], format="rgb24",
                                     interpolation="AREA").to_ndarray(format="rgb24")
                yield VideoFrame(i, float(self._ts[i]), _finish(img, None, gray))
                continue
            planes = []
            for pl in frame.planes[:1] if gray else frame.planes[:3]:
                a = np.frombuffer(pl, np.uint8).reshape(pl.height, pl.line_size)[:, :pl.width]
                planes.append(cv2.resize(a, size, interpolation=cv2.INTER_AREA))
            if gray:
                img = planes[0]
            else:  # OpenCV's YCrCb order is Y, V, U
                img = cv2.cvtColor(np.dstack([planes[0], planes[2], planes[1]]),
                                   cv2.COLOR_YCrCb2RGB)
            yield VideoFrame(i, float(self._ts[i]), img)

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            c.close()
            self._container = None
        self._decoder = None


def _probe_format(src: Source) -> tuple[str, str]:
    """(container family, codec) of the first video stream (a PyAV header read)."""
    container, stream = _av_open(src)
    try:
        codec = str(stream.codec_context.name)
        return container_family(str(container.format.name)), _CODEC_ALIAS.get(codec, codec)
    finally:
        container.close()


def _packet_times(src: Source) -> np.ndarray:
    """Sorted presentation times (s, first at 0) of the video packets (demux only)."""
    container, stream = _av_open(src)
    tb = float(stream.time_base)
    try:
        pts = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
    except _av_errors() as e:
        raise DataError("undecodable_video", f"demuxing failed: {e}") from e
    finally:
        container.close()
    u = np.unique(np.asarray(pts, np.int64))
    return (u - (u[0] if len(u) else 0)).astype(np.float64) * tb


def _codec_name(src: Source) -> str:
    """Codec of the first video stream (PyAV header read), validating the container."""
    if importlib.util.find_spec("av") is None:
        return "unknown"
    return _probe_format(src)[1]


class _DecordBackend(_BatchedBackend):
    """decord: ``get_batch`` random access; streamed in batches of 32 frames."""

    name = "decord"

    def __init__(self, src: Source) -> None:
        import decord

        codec = _codec_name(src)
        try:
            self._vr = decord.VideoReader(source_handle(src),
                                          ctx=decord.cpu(0), num_threads=1)
            n = len(self._vr)
            if n == 0:
                raise DataError("undecodable_video", "the video stream holds no frames")
            stamps = np.asarray(self._vr.get_frame_timestamp(np.arange(n)), np.float64)
            first = self._vr[0].asnumpy()
            fps_hint = float(self._vr.get_avg_fps())
        except DataError:
            raise
        except Exception as e:  # decord raises its own DECORDError (a RuntimeError)
            raise DataError("undecodable_video", f"decord cannot read the video: {e}") from e
        self._ts = stamps[:, 0] - stamps[0, 0]
        _check_times(self._ts, "decord")
        fps, duration, is_vfr = _timing_facts(self._ts, fps_hint)
        self.meta = dict(fps=fps, num_frames=n, duration=duration, width=first.shape[1],
                         height=first.shape[0], codec=codec, is_vfr=is_vfr)

    def _frames(self, idx: list[int]) -> np.ndarray:
        return self._vr.get_batch(idx).asnumpy()

    def close(self) -> None:
        self._vr = None


class _OpenCVBackend(_Backend):
    """OpenCV VideoCapture; bytes go to a temporary file; CFR timestamps (i / fps)."""

    _FORWARD = 24  # read forward instead of seeking when the target is this close

    def __init__(self, src: Source) -> None:
        import tempfile

        import cv2

        codec = _codec_name(src)
        self._tmp: str | None = None
        if not isinstance(src, str):
            import shutil

            fd, self._tmp = tempfile.mkstemp(suffix=".video")
            with os.fdopen(fd, "wb") as f:
                if isinstance(src, FileRange):
                    with src.open() as r:
                        shutil.copyfileobj(r, f, 1 << 20)
                else:
                    f.write(src)
            path = self._tmp
        else:
            path = src
        self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self.close()
            raise DataError("undecodable_video", "OpenCV cannot open the video")
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps_hint = float(self._cap.get(cv2.CAP_PROP_FPS))
        if n <= 0:  # container has no count: count by grabbing
            n = 0
            while self._cap.grab():
                n += 1
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if n == 0:
            self.close()
            raise DataError("undecodable_video", "the video stream holds no frames")
        self._pos = 0  # index of the frame the next read() returns
        ok, first = self._cap.read()
        if not ok:
            self.close()
            raise DataError("undecodable_video", "the first frame does not decode")
        self._pos = 1
        fps = fps_hint if fps_hint > 0 else 25.0
        self._ts = np.arange(n, dtype=np.float64) / fps
        self.meta = dict(fps=fps, num_frames=n, duration=n / fps, width=first.shape[1],
                         height=first.shape[0], codec=codec, is_vfr=False)

    def timestamps(self) -> np.ndarray:
        return self._ts

    def _read(self, i: int) -> np.ndarray:
        import cv2

        if not (self._pos <= i < self._pos + self._FORWARD):
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            self._pos = i
        while self._pos < i:
            if not self._cap.grab():
                raise DataError("undecodable_video", f"frame {self._pos} does not decode")
            self._pos += 1
        ok, bgr = self._cap.read()
        if not ok:
            raise DataError("undecodable_video", f"frame {i} does not decode (truncated?)")
        self._pos = i + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def get_sorted(self, idx: np.ndarray) -> np.ndarray:
        m = self.meta
        out = np.empty((len(idx), m["height"], m["width"], 3), np.uint8)
        for k, i in enumerate(idx.tolist()):
            out[k] = self._read(i)
        return out

    def iter_frames(self, start, stop, step, size, gray):
        for i in range(start, stop, step):
            yield VideoFrame(i, float(self._ts[i]), _finish(self._read(i), size, gray))

    def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
            self._cap = None
        if getattr(self, "_tmp", None):
            try:
                os.unlink(self._tmp)  # type: ignore[arg-type]
            except OSError:
                pass
            self._tmp = None


class _TorchCodecBackend(_BatchedBackend):
    """torchcodec ``VideoDecoder`` (exact seek mode: one scan on open), NHWC uint8."""

    name = "torchcodec"

    def __init__(self, src: Source) -> None:
        from torchcodec.decoders import VideoDecoder

        codec = _codec_name(src)
        try:
            self._dec = VideoDecoder(src if isinstance(src, (str, bytes)) else src.open(),
                                     seek_mode="exact", dimension_order="NHWC",
                                     num_ffmpeg_threads=1)
            md = self._dec.metadata
            n = int(md.num_frames or 0)
            if n == 0:
                raise DataError("undecodable_video", "the video stream holds no frames")
            # pts of every frame from the scan (one cheap batch call, no pixels kept)
            first = self._dec.get_frame_at(0)
        except DataError:
            raise
        except Exception as e:  # torchcodec raises RuntimeError/ValueError from C++
            raise DataError("undecodable_video", f"torchcodec cannot read the video: {e}"
                            ) from e
        self._ts = _packet_times(src)
        if len(self._ts) != n:
            raise DataError("backend_unsupported",
                            f"torchcodec counts {n} frames where the container has "
                            f"{len(self._ts)} packets with a pts; use backend='pyav'")
        _check_times(self._ts, "torchcodec")
        fps, duration, is_vfr = _timing_facts(self._ts, float(md.average_fps or 0.0))
        h, w = int(first.data.shape[0]), int(first.data.shape[1])
        self.meta = dict(fps=fps, num_frames=n, duration=duration, width=w, height=h,
                         codec=codec, is_vfr=is_vfr)

    def _frames(self, idx: list[int]) -> np.ndarray:
        return self._dec.get_frames_at(idx).data.numpy()

    def close(self) -> None:
        self._dec = None


_BACKEND_CLASSES: dict[str, type[_Backend]] = {
    "decord": _DecordBackend,
    "torchcodec": _TorchCodecBackend,
    "pyav": _PyAVBackend,
    "opencv": _OpenCVBackend,
}
