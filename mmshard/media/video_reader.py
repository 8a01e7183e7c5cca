"""Frame-accurate video reading with interchangeable backends (decord, PyAV, OpenCV).

One interface, :class:`VideoReader`, over three decoders chosen at run time:

- ``decord``: fastest random access (``get_batch``); used by ``backend="auto"`` when
  importable.
- ``pyav``: the reference; exact frame count and presentation timestamps from the
  container (so variable-frame-rate clips are handled), random access by seeking to the
  keyframe before the target and decoding forward.
- ``opencv``: ``cv2.VideoCapture`` with ``CAP_PROP_POS_FRAMES`` seeks; bytes are spilled
  to a temporary file.  It cannot see per-frame timestamps: prefer ``pyav`` for VFR.

Frame ``i`` is the i-th frame in presentation order, on every backend.  Timestamps are
seconds relative to the first frame's presentation time (frame 0 is at 0.0).

The reader opens its decoder lazily on first use and drops it when pickled, so a reader
built in a parent process can be sent to DataLoader or Ray workers: each worker re-opens
it (a decord reader shared across ``fork`` deadlocks).

>>> with open_video("clip.mp4") as vr:                        # doctest: +SKIP
...     vr.meta.num_frames, vr.get_frames([0, 10]).shape
(250, (2, 240, 320, 3))

Errors are :class:`~mmshard.errors.DataError` with a ledger reason: ``empty_file``,
``undecodable_video``, ``no_video_stream``, ``unsupported_codec``, ``frame_out_of_range``.
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
    "VideoFrame",
    "VideoMeta",
    "VideoReader",
    "available_backends",
    "open_video",
]

BACKENDS = ("auto", "decord", "pyav", "opencv")
_IMPORT_NAME = {"decord": "decord", "pyav": "av", "opencv": "cv2"}


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
    return [b for b in ("decord", "pyav", "opencv")
            if importlib.util.find_spec(_IMPORT_NAME[b]) is not None]


def _resolve_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown video backend {name!r}; allowed: {', '.join(BACKENDS)}")
    avail = available_backends()
    if name == "auto":
        if not avail:
            raise DependencyMissingError(
                "no video decoder is importable; install one of: decord, av, "
                "opencv-python-headless")
        return avail[0]
    if name not in avail:
        raise DependencyMissingError(
            f"video backend {name!r} needs the {_IMPORT_NAME[name]!r} module, which is not "
            f"importable; install it or use one of {avail or ['(none available)']}")
    return name


def _source_of(src: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
               ) -> str | bytes:
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

    ``src`` is a path, bytes or a binary file object (read once, kept as bytes).  The
    decoder opens lazily; pickling drops it and the copy re-opens on first use.

    >>> vr = VideoReader("clip.mp4", backend="pyav")            # doctest: +SKIP
    >>> frames = vr.get_frames([0, 5, 9])  # uint8 [3, H, W, 3] RGB  # doctest: +SKIP
    >>> for f in vr.iter_frames(step=10, size=(64, 48), gray=True):  # doctest: +SKIP
    ...     print(f.index, f.time, f.image.shape)
    """

    def __init__(self, src: str | os.PathLike[str] | bytes | BinaryIO, *,
                 backend: str = "auto") -> None:
        self.backend = _resolve_backend(backend)
        self._src = _source_of(src)
        self._impl: _Backend | None = None

    # -- lifecycle -------------------------------------------------------------------
    def _open(self) -> _Backend:
        if self._impl is None:
            self._impl = _BACKEND_CLASSES[self.backend](self._src)
        return self._impl

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
        return {"backend": self.backend, "_src": self._src, "_impl": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        src = self._src if isinstance(self._src, str) else f"<{len(self._src)} bytes>"
        return f"VideoReader({src!r}, backend={self.backend!r})"

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
                    size: tuple[int, int] | None = None, gray: bool = False
                    ) -> Iterator[VideoFrame]:
        """Stream frames ``start:stop:step`` in order with bounded memory.

        ``size=(width, height)`` resizes, ``gray=True`` gives ``[H, W]`` luma frames.
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
        return self._stream(start, stop, step, size, gray)

    def _stream(self, start: int, stop: int, step: int, size: tuple[int, int] | None,
                gray: bool) -> Iterator[VideoFrame]:
        # a generator method: it keeps the reader (and so its decoder) alive while iterated
        if start < stop:
            yield from self._open().iter_frames(start, stop, step, size, gray)


def open_video(src: str | os.PathLike[str] | bytes | BinaryIO, backend: str = "auto"
               ) -> VideoReader:
    """Open a video from a path, bytes or binary file with the named backend.

    ``backend``: ``auto`` (decord, else PyAV, else OpenCV) | ``decord`` | ``pyav`` |
    ``opencv``.  Decoding problems raise :class:`~mmshard.errors.DataError`.

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
    fps = fps_hint if fps_hint > 0 else (n / duration if duration > 0 else 0.0)
    return float(fps), duration, is_vfr


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, ValueError, OSError, IndexError, EOFError)


def _av_open(src: str | bytes):
    """Open a container with PyAV and return (container, stream), mapping failures."""
    import av

    try:
        container = av.open(src if isinstance(src, str) else io.BytesIO(src), "r")
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


class _PyAVBackend(_Backend):
    """Reference backend: demux once for pts and keyframes, seek + decode forward."""

    def __init__(self, src: str | bytes) -> None:
        self._container, self._stream = _av_open(src)
        st = self._stream
        st.thread_type = "AUTO"
        pts: list[int] = []
        keys: list[int] = []
        try:
            for packet in self._container.demux(st):
                if packet.size == 0:
                    continue
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
        rate = st.average_rate or st.guessed_rate
        fps, duration, is_vfr = _timing_facts(self._ts, float(rate) if rate else 0.0)
        ctx = st.codec_context
        self.meta = dict(fps=fps, num_frames=len(self._pts), duration=duration,
                         width=int(ctx.width), height=int(ctx.height), codec=str(ctx.name),
                         is_vfr=is_vfr)
        self._decoder: Iterator[Any] | None = None
        self._last = -1  # index of the last frame the live decoder produced
        # prove the stream decodes (a codec we cannot decode fails here, not later)
        first = next(self._decode_targets([0]), None)
        if first is None:
            self.close()
            raise DataError("undecodable_video", "the first frame does not decode")

    def timestamps(self) -> np.ndarray:
        return self._ts

    def _seek_before(self, i: int, back: int = 0) -> None:
        """Position the decoder at the keyframe ``back`` keyframes before frame ``i``."""
        target = int(self._pts[i])
        k = int(np.searchsorted(self._keys, target, side="right")) - 1 - back
        kpts = int(self._keys[max(k, 0)])
        self._container.seek(kpts, stream=self._stream, backward=True, any_frame=False)
        self._decoder = iter(self._container.decode(self._stream))
        self._last = -1

    def _needs_seek(self, i: int) -> bool:
        if self._decoder is None or self._last < 0 or self._last >= i:
            return True
        # seek only when a keyframe lies between the decoder position and the target
        cur, target = int(self._pts[self._last]), int(self._pts[i])
        k = int(np.searchsorted(self._keys, target, side="right")) - 1
        return k >= 0 and int(self._keys[k]) > cur

    def _decode_targets(self, targets: Iterable[int]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, av.VideoFrame)`` for ascending ``targets`` (lazily consumed)."""
        errors = _av_errors()
        for i in targets:
            i = int(i)
            back = 0
            if self._needs_seek(i):
                self._seek_before(i)
            while True:
                try:
                    frame = next(self._decoder)  # type: ignore[arg-type]
                except StopIteration:
                    self._decoder = None
                    raise DataError("undecodable_video",
                                    f"frame {i} is missing: the stream ends early "
                                    "(truncated file?)") from None
                except errors as e:
                    self._decoder = None
                    raise DataError("undecodable_video", f"decoding frame {i} failed: {e}"
                                    ) from e
                j = self._index.get(int(frame.pts)) if frame.pts is not None else None
                if j is None:
                    continue
                if self._last < 0 and j > i:
                    # the seek landed after the target: go one keyframe further back
                    back += 1
                    if back > 3:
                        self._container.seek(0, stream=self._stream)
                        self._decoder = iter(self._container.decode(self._stream))
                    else:
                        self._seek_before(i, back)
                    continue
                self._last = j
                if j == i:
                    yield i, frame
                    break
                if j > i:
                    raise DataError("undecodable_video", f"frame {i} did not decode")

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

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            c.close()
            self._container = None
        self._decoder = None


def _codec_name(src: str | bytes) -> str:
    """Codec of the first video stream (PyAV header read), validating the container."""
    if importlib.util.find_spec("av") is None:
        return "unknown"
    container, stream = _av_open(src)
    try:
        return str(stream.codec_context.name)
    finally:
        container.close()


class _DecordBackend(_Backend):
    """decord: ``get_batch`` random access; streamed in batches of 32 frames."""

    def __init__(self, src: str | bytes) -> None:
        import decord

        codec = _codec_name(src)
        try:
            self._vr = decord.VideoReader(src if isinstance(src, str) else io.BytesIO(src),
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
        fps, duration, is_vfr = _timing_facts(self._ts, fps_hint)
        self.meta = dict(fps=fps, num_frames=n, duration=duration, width=first.shape[1],
                         height=first.shape[0], codec=codec, is_vfr=is_vfr)

    def timestamps(self) -> np.ndarray:
        return self._ts

    def _batch(self, idx: np.ndarray) -> np.ndarray:
        try:
            return self._vr.get_batch(idx.tolist()).asnumpy()
        except Exception as e:
            raise DataError("undecodable_video", f"decord failed on frames "
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

    def close(self) -> None:
        self._vr = None


class _OpenCVBackend(_Backend):
    """OpenCV VideoCapture; bytes go to a temporary file; CFR timestamps (i / fps)."""

    _FORWARD = 24  # read forward instead of seeking when the target is this close

    def __init__(self, src: str | bytes) -> None:
        import tempfile

        import cv2

        codec = _codec_name(src)
        self._tmp: str | None = None
        if isinstance(src, bytes):
            fd, self._tmp = tempfile.mkstemp(suffix=".video")
            with os.fdopen(fd, "wb") as f:
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


_BACKEND_CLASSES: dict[str, type[_Backend]] = {
    "decord": _DecordBackend,
    "pyav": _PyAVBackend,
    "opencv": _OpenCVBackend,
}
