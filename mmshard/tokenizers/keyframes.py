"""Shot cuts and keyframes: a colour + luma content score with an adaptive threshold,
dissolve detection, optional flow gating, or a learned detector (TransNetV2).

The detector decodes a video once, in order, with no seek and no frame index built
(:class:`~mmshard.media.video_scan.VideoScan`: multithreaded PyAV decode, the small
analysis frame shrunk from the YUV planes, no full-size RGB conversion; frame numbers
exactly those of :class:`VideoReader`).  Features are computed a batch of 32 frames at a
time (one OpenCV call per feature over the batch, each frame's HSV image, histogram and
block means computed once); the decisions then run over those numbers frame by frame.
The state is
bounded -- the last ``2 * gradual_window`` small frames, the last ``2 * gradual_window +
2`` decoded frames (for the keyframe thumbnails, which come from the same pass: exact
frames, no second decode), a window of recent scores, one record and one thumbnail per
scene -- so memory does not grow with the video's length.  Backends other than
``auto``/``pyav`` stream small frames from :class:`VideoReader` and decode the
thumbnails afterwards.

Per frame ``t`` (at ``analysis_width``, HSV):

- ``score``: the mean absolute change of hue (circular), saturation and value (luma)
  against frame ``t-1``, over 255, in ``[0, 1]`` -- the colour *and* the brightness of
  every pixel, so a cut between two shots of similar palette (a film's warm interiors)
  still scores high while a colour histogram barely moves.
- threshold: ``fixed`` (``score > min_score``) or ``adaptive`` (``score > max(min_score,
  adaptive_ratio * median of the previous adaptive_window scores)``, capped at
  ``max_score``: a cut must stand out from the local level of motion, and a change of
  more than ``max_score`` is a cut whatever the motion before it).
- ``hist``: the chi-square distance of 8x8x8 RGB histograms of frames ``t-1`` and ``t``
  above ``hist_threshold`` is a cut too (the whole palette changed: it catches cuts
  out of shots whose pixels all move, where the pixel score is high everywhere).
- ``use_flow``: Farneback optical flow between grey frames at ``flow_width``; a cut
  candidate is rejected when warping frame ``t-1`` by the flow explains the change
  (residual below ``flow_gate`` of the raw change: fast camera motion, not a cut), and
  the mean flow per scene is recorded (``motion``) for motion-aware sampling.
- ``min_scene_len`` frames between cuts.
- ``gradual`` (on by default): frame ``c`` is the middle of a dissolve or fade when the
  frames ``K = gradual_window`` before and after it differ by more than
  ``gradual_threshold`` while ``c`` is close to their average (a linear mix: the mean
  residual of 4x4-block RGB means below ``gradual_linearity`` of their mean difference;
  the blocks average out the texture and noise of moving shots, which no mix explains)
  and no hard change lies between them; a run of such frames is one transition,
  reported once at its strongest frame.
- ``method="transnetv2"``: the TransNetV2 network (``mmshard[video-ml]``, see
  :mod:`mmshard.tokenizers.transnet`) predicts the cuts instead; everything else
  (scenes, keyframes, thumbnails) is the same.
- ``decode="fast"``: the pass lets the decoder skip the in-loop deblocking filter
  (H.264/HEVC; the other codecs decode exactly either way) and take FFmpeg's
  non-bit-exact shortcuts; the thumbnails then come from those frames, so they are not
  bit-exact (on the real-footage bench set 39-48 dB PSNR against the exact frames at
  thumbnail size, about the loss of the JPEG itself).  ``"exact"`` (default) decodes
  exactly.  It applies to the one-pass scan (backend ``auto``/``pyav``); the other
  backends decode exactly either way.

Output of :meth:`KeyframeDetector.detect`: the ``kf.json`` dict (scenes with start/end
frames and times, cut kind and score, keyframes with their frame, time and thumbnail
file name, method, config, version) and the thumbnails as JPEG bytes, in order, to be
stored as ``kf.000.jpg``, ``kf.001.jpg`` ...

>>> det = KeyframeDetector(KeyframesConfig())
>>> kf, thumbs = det.detect("clip.mp4")                     # doctest: +SKIP
>>> [s["start"] for s in kf["scenes"]], len(thumbs)         # doctest: +SKIP
([0, 75, 150], 3)
"""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .._registry import config_to_dict
from ..errors import ConfigError
from ..media.video_reader import BACKENDS, VideoFrame, VideoReader, available_backends
from .base import TOKENIZERS, provenance_of

__all__ = ["KeyframeDetector", "KeyframesConfig", "content_score", "detect_keyframes",
           "hist_chi2"]

THRESHOLDS = ("fixed", "adaptive")
METHODS = ("content", "transnetv2")
DECODES = ("exact", "fast")


@dataclass(frozen=True, kw_only=True)
class KeyframesConfig:
    """Options of the shot-cut / keyframe detector (see the module docstring).

    >>> KeyframesConfig(gradual=False, min_score=0.12).threshold
    'adaptive'
    """

    method: str = "content"
    backend: str = "auto"
    analysis_width: int = 64
    threshold: str = "adaptive"
    min_score: float = 0.1
    max_score: float = 0.3
    hist_threshold: float = 0.3
    adaptive_ratio: float = 3.0
    adaptive_window: int = 24
    min_scene_len: int = 12
    use_flow: bool = False
    flow_width: int = 64
    flow_gate: float = 0.5
    gradual: bool = True
    gradual_window: int = 10
    gradual_threshold: float = 0.12
    gradual_linearity: float = 0.3
    transnet_threshold: float = 0.5
    device: str = "auto"
    decode: str = "exact"
    keyframe_offset: int = 6
    max_keyframes: int = 64
    thumb_size: int = 224
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got "
                              f"{self.method!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got "
                              f"{self.backend!r}")
        if self.threshold not in THRESHOLDS:
            raise ConfigError(f"threshold must be one of {', '.join(THRESHOLDS)}; got "
                              f"{self.threshold!r}")
        for name in ("analysis_width", "adaptive_window", "min_scene_len", "flow_width",
                     "gradual_window", "max_keyframes", "thumb_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {v!r}")
        if self.analysis_width < 8 or self.flow_width < 8:
            raise ConfigError("analysis_width and flow_width must be >= 8 pixels")
        for name in ("min_score", "max_score", "hist_threshold", "gradual_threshold",
                     "transnet_threshold", "flow_gate", "gradual_linearity"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        if self.max_score < self.min_score:
            raise ConfigError(f"max_score ({self.max_score}) must be >= min_score "
                              f"({self.min_score})")
        if self.adaptive_ratio < 0:
            raise ConfigError(f"adaptive_ratio must be >= 0, got {self.adaptive_ratio}")
        if self.keyframe_offset < 0:
            raise ConfigError(f"keyframe_offset must be >= 0 frames, got {self.keyframe_offset}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.gradual and self.gradual_window < 2:
            raise ConfigError("gradual_window must be >= 2 frames when gradual=True")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be one of auto, cpu, cuda; got {self.device!r}")
        if self.decode not in DECODES:
            raise ConfigError(f"decode must be one of {', '.join(DECODES)}; got "
                              f"{self.decode!r}")


def _hsv(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)


def content_score(a_hsv: np.ndarray, b_hsv: np.ndarray) -> float:
    """Mean absolute change of hue (circular), saturation and value, in ``[0, 1]``.

    >>> z = np.zeros((2, 2, 3), np.uint8)
    >>> content_score(z, z)
    0.0
    """
    return float(_scores(a_hsv[None], b_hsv[None])[0])


def hist_chi2(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric chi-square distance of two normalised histograms, in ``[0, 1]``.

    >>> hist_chi2(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    return float(_chi2s(np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[None])[0])


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


class _Scene:
    __slots__ = ("start", "kind", "score", "motion_sum", "motion_n")

    def __init__(self, start: int, kind: str, score: float) -> None:
        self.start, self.kind, self.score = start, kind, score
        self.motion_sum, self.motion_n = 0.0, 0


_BATCH = 32  # frames whose features are computed in one vectorised step


def _hsv_batch(imgs: np.ndarray) -> np.ndarray:
    """HSV of a stack of small RGB frames ``[B, h, w, 3]`` in one OpenCV call."""
    b, h, w, _ = imgs.shape
    return _hsv(np.ascontiguousarray(imgs).reshape(b * h, w, 3)).reshape(b, h, w, 3)


def _hist_batch(imgs: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised ``bins**3`` RGB histograms of ``[B, h, w, 3]`` frames, ``[B, bins**3]``
    (the bins of ``cv2.calcHist`` over ``[0, 256)`` per channel)."""
    b, shift = len(imgs), int(np.log2(bins))
    q = imgs >> (8 - shift)
    idx = ((q[..., 0].astype(np.int32) << shift | q[..., 1]) << shift) | q[..., 2]
    idx = idx.reshape(b, -1) + (np.arange(b, dtype=np.int32) * bins ** 3)[:, None]
    h = np.bincount(idx.ravel(), minlength=b * bins ** 3).reshape(b, bins ** 3)
    return h / np.maximum(h.sum(1, keepdims=True), 1.0)


def _scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`content_score` of frame pairs ``a[i], b[i]`` (``[B, h, w, 3]`` HSV):
    ``|a - b|`` per channel (OpenCV, on the uint8 planes), the hue distance taken the
    short way round the circle, summed exactly in integers."""
    import cv2

    n = len(a)
    if n == 0:
        return np.zeros(0)
    d = cv2.absdiff(np.ascontiguousarray(a).reshape(n, -1),
                    np.ascontiguousarray(b).reshape(n, -1)).reshape(a.shape)
    hue = d[..., 0]
    np.minimum(hue, np.negative(hue), out=hue)  # min(d, 256 - d): uint8 wraps at 256
    return d.reshape(n, -1).sum(1, dtype=np.int64) / d[0].size / 255.0


def _chi2s(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`hist_chi2` of histogram pairs ``a[i], b[i]``."""
    s = a + b
    m = s > 0
    return 0.5 * np.where(m, (a - b) ** 2 / np.where(m, s, 1.0), 0.0).sum(1)


_POOL = 4  # block size of the dissolve test (4x4 blocks of the 64-wide analysis frame)


def _pool(img: np.ndarray, f: int = 0) -> np.ndarray:
    """``[N, h, w, C]`` frames as float32, averaged over ``f x f`` blocks (``_POOL``): the
    dissolve's linear-mix test on block means of RGB (a cross-fade is linear in RGB),
    where the fine texture and noise of a moving shot (which no mix explains) have
    averaged out.  The rows and columns past the last whole block are dropped.

    >>> _pool(np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1), 2)[0, ..., 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    import cv2

    f = f or _POOL
    g = img.astype(np.float32)
    if f == 1:
        return g
    n, h, w, ch = g.shape
    hh, ww = h // f * f, w // f * f
    if n == 0 or hh == 0 or ww == 0:
        return np.zeros((n, h // f, w // f, ch), np.float32)
    # the frames stacked as one tall image: whole blocks never straddle two frames, and
    # an integer-factor area resize is the exact block mean
    g = np.ascontiguousarray(g[:, :hh, :ww]).reshape(n * hh, ww, ch)
    out = cv2.resize(g, (ww // f, n * hh // f), interpolation=cv2.INTER_AREA)
    return out.reshape(n, hh // f, ww // f, ch)


class _Features:
    """Per-frame features of an in-order frame stream, a batch at a time (numpy and
    OpenCV): ``score``/``chi`` against the previous frame, and for the dissolve test at
    frame ``t`` (middle ``t - K``, first ``t - 2K``) ``dk`` (content score of ``t`` against
    ``t - 2K``), ``span`` (mean change of the block means between them) and ``resid``
    (mean distance of the middle frame's block means from their average); NaN where the
    earlier frame does not exist.  Each frame's HSV image, histogram and block means are
    computed once; the last ``2K`` of them are carried between batches, so memory is
    bounded."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.tail_hsv: np.ndarray | None = None
        self.tail_pool: np.ndarray | None = None
        self.tail_hist: np.ndarray | None = None

    def push(self, imgs: np.ndarray) -> dict[str, np.ndarray]:
        k, b = self.k, len(imgs)
        hsv, hist, pooled = _hsv_batch(imgs), _hist_batch(imgs), _pool(imgs)
        first = self.tail_hsv is None
        allh = hsv if first else np.concatenate([self.tail_hsv, hsv])
        allp = pooled if first else np.concatenate([self.tail_pool, pooled])
        allq = hist if first else np.concatenate([self.tail_hist, hist])
        off = len(allh) - b  # position of this batch's first frame in allh (and allp)
        out = {name: np.full(b, np.nan) for name in ("score", "chi", "dk", "span", "resid")}
        s = max(0, 1 - off)  # the batch's first frame that has a previous frame
        if s < b:
            out["score"][s:] = _scores(allh[off + s:], allh[off + s - 1:-1])
            qo = len(allq) - b  # the histograms carry one frame, not 2K
            out["chi"][s:] = _chi2s(allq[qo + s:], allq[qo + s - 1:-1])
        s = max(0, 2 * k - off)  # the first that has a frame 2K before it
        if s < b:
            lo, hi = off + s - 2 * k, off + b - 2 * k
            out["dk"][s:] = _scores(allh[off + s:], allh[lo:hi])
            a, z, c = allp[lo:hi], allp[off + s:], allp[lo + k:hi + k]
            m = len(z)
            if z[0].size:  # a frame lower than one block has no block means (NaN)
                out["span"][s:] = np.abs(z - a).reshape(m, -1).mean(1)
                out["resid"][s:] = np.abs(c - (a + z) / 2).reshape(m, -1).mean(1)
        out["grey"] = allh[..., 2]  # luma of [tail + batch] for flow gating
        out["grey_off"] = np.array(off)
        self.tail_hsv, self.tail_pool, self.tail_hist = allh[-2 * k:], allp[-2 * k:], allq[-1:]
        return out


class _State:
    """The running decisions of one pass: scenes, the recent scores (sorted copy for the
    adaptive median), the open dissolve run, the last cut-like change."""

    def __init__(self) -> None:
        self.scenes: list[_Scene] = []
        self.recent: collections.deque[float] = collections.deque()
        self.sorted: list[float] = []
        self.run: list[Any] | None = None  # [start_c, end_c, best_c, best_score]
        self.last_jump = -1  # last frame with a single-step change above min_score
        self._fl: tuple[int, int] | None = None

    def push_score(self, score: float, window: int) -> None:
        self.recent.append(score)
        bisect.insort(self.sorted, score)
        if len(self.recent) > window:
            old = self.recent.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]

    def threshold(self, c: KeyframesConfig) -> float:
        """``min_score`` (fixed), or ``adaptive_ratio`` x the median of the recent
        scores, clipped to ``[min_score, max_score]``."""
        n = len(self.sorted)
        if c.threshold == "fixed" or n < 3:
            return c.min_score
        med = self.sorted[n // 2] if n % 2 else (self.sorted[n // 2 - 1] + self.sorted[n // 2]) / 2
        return min(c.max_score, max(c.min_score, c.adaptive_ratio * med))

    def fl_wh(self, flow_width: int, w0: int, h0: int) -> tuple[int, int]:
        if self._fl is None:
            fw = min(flow_width, w0)
            self._fl = (fw, _even(fw * h0 / w0))
        return self._fl


class _Keeper:
    """Keeps the keyframe thumbnails while the frames stream by: the last ``n`` frame
    handles, and a JPEG of each frame that will be a keyframe (``grab(handle)``).  The
    frames wanted are worked out again only when a scene is added (scenes are only
    ever appended), so a frame costs a dict insert and a look at three numbers."""

    def __init__(self, n: int, offset: int, grab: Any) -> None:
        self.ring: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self.n, self.offset, self.grab = n, offset, grab
        self.kept: dict[int, bytes] = {}
        self._scenes = -1
        self._wants: list[int] = []

    def add(self, t: int, handle: Any, scenes: list[_Scene]) -> None:
        ring = self.ring
        ring[t] = handle
        if len(ring) > self.n:
            ring.popitem(last=False)
        if len(scenes) != self._scenes:  # the last three scenes' keyframes
            self._scenes = len(scenes)
            self._wants = []
            for j in range(max(0, len(scenes) - 3), len(scenes)):
                want = scenes[j].start + self.offset
                if j + 1 < len(scenes):
                    want = min(want, scenes[j + 1].start - 1)
                self._wants.append(want)
        for want in self._wants:
            self.take(want, t)

    def take(self, want: int, t: int) -> None:
        if want <= t and want not in self.kept and want in self.ring:
            self.kept[want] = self.grab(self.ring[want])

    def flush(self, scenes: list[_Scene]) -> None:
        """At the end: keep what the final scene list needs that the ring still has."""
        t = max(self.ring) if self.ring else -1
        for j, sc in enumerate(scenes):
            end = scenes[j + 1].start if j + 1 < len(scenes) else t + 1
            self.take(min(sc.start + self.offset, end - 1), t)


@TOKENIZERS.register("keyframes")
class KeyframeDetector:
    """Shot-cut and keyframe detector; ``detect(src) -> (kf_dict, jpeg_thumbnails)``.

    ``src`` is a path, bytes, a binary file or an open :class:`VideoReader`.

    >>> kf, thumbs = KeyframeDetector().detect(video_bytes)     # doctest: +SKIP
    >>> kf["keyframes"][0]["file"]                              # doctest: +SKIP
    'kf.000.jpg'
    """

    name = "keyframes"
    version = "4"
    config_class = KeyframesConfig
    storage_dtype = np.dtype(np.uint8)  # outputs are JSON + JPEG bytes, not an array

    def __init__(self, config: KeyframesConfig | None = None) -> None:
        self.config = KeyframesConfig() if config is None else config
        if not isinstance(self.config, KeyframesConfig):
            raise ConfigError(f"KeyframeDetector needs a KeyframesConfig, got "
                              f"{type(self.config).__name__}")
        self._net: Any = None

    def provenance(self) -> dict[str, Any]:
        """``{"tokenizer": "keyframes", "version": ..., "config": {...}}``."""
        return provenance_of(self)

    @property
    def method(self) -> str:
        c = self.config
        if c.method == "transnetv2":
            return "transnetv2"
        return "content" + ("+flow" if c.use_flow else "") + ("+gradual" if c.gradual else "")

    def __call__(self, src: str | os.PathLike[str] | bytes | BinaryIO | VideoReader
                 ) -> tuple[dict[str, Any], list[bytes]]:
        return self.detect(src)

    def detect(self, src: str | os.PathLike[str] | bytes | BinaryIO | VideoReader
               ) -> tuple[dict[str, Any], list[bytes]]:
        """Detect scenes in a video and return ``(kf_dict, thumbnails)``.

        With ``backend="auto"`` or ``"pyav"`` the video is decoded once, in order
        (:class:`~mmshard.media.video_scan.VideoScan`: no frame index built, no seek,
        small frames taken from the YUV planes), and the keyframe thumbnails are taken
        from that same pass; other backends stream ``analysis_width`` frames from
        :class:`VideoReader` and decode the thumbnails afterwards.
        Raises :class:`~mmshard.errors.DataError` for undecodable input.
        """
        c = self.config
        own = not isinstance(src, VideoReader)
        requested = c.backend if own else src.requested  # type: ignore[union-attr]
        if requested in ("auto", "pyav") and "pyav" in available_backends():
            return self._detect_scan(src)
        reader = VideoReader(src, backend=c.backend) if own else src  # type: ignore[arg-type]
        try:
            meta = reader.meta
            if c.method == "transnetv2":
                scenes, n = self._transnet(reader)
            else:
                aw = min(c.analysis_width, meta.width)
                an_wh = (_even(aw), _even(aw * meta.height / meta.width))
                frames = ((f.index, f.image, None)
                          for f in reader.iter_frames(size=an_wh, analysis=True))
                scenes, n = self._analyse(frames, None)
            ts = reader.timestamps()
            n = min(n, len(ts)) if n else len(ts)
            kfs = self._keyframe_frames(scenes, n)
            thumb_wh = self._thumb_wh(meta.width, meta.height)
            thumbs = [self._jpeg(img, thumb_wh) for img in reader.get_frames(kfs)
                      ] if kfs else []
            return self._result(scenes, n, ts, meta.duration, meta.fps, meta.width,
                                meta.height, kfs, thumbs)
        finally:
            if own:
                reader.close()

    def _detect_scan(self, src: Any) -> tuple[dict[str, Any], list[bytes]]:
        """``detect`` over one sequential PyAV pass; thumbnails from the same frames."""
        from ..media.video_scan import VideoScan

        c = self.config
        source = src._src if isinstance(src, VideoReader) else src
        if c.method == "transnetv2":
            from .transnet import SIZE

            scan = VideoScan(source, size=SIZE, threads=0)
        else:
            scan = VideoScan(source, width=c.analysis_width, fast=c.decode == "fast")
        thumb_wh = self._thumb_wh(*scan.frame_size)
        keeper = _Keeper(2 * c.gradual_window + 2, c.keyframe_offset, lambda fr: self._jpeg(
            fr.to_ndarray(format="rgb24"), thumb_wh))
        try:
            if c.method == "transnetv2":
                scenes, n = self._transnet(scan)  # thumbnails decoded afterwards
            else:
                scenes, n = self._analyse(((f.index, f.image, f.frame) for f in scan), keeper)
        finally:
            scan.close()
        meta, ts = scan.meta, scan.timestamps()
        n = min(n, len(ts))
        kfs = self._keyframe_frames(scenes, n)
        missing = sorted({i for i in kfs if i not in keeper.kept})
        if missing:  # a keyframe that left the ring before it was known: decode it
            with VideoReader(source, backend="pyav") as vr:
                for i, img in zip(missing, vr.get_frames(missing)):
                    keeper.kept[i] = self._jpeg(img, thumb_wh)
        thumbs = [keeper.kept[i] for i in kfs]
        return self._result(scenes, n, ts, meta.duration, meta.fps, meta.width, meta.height,
                            kfs, thumbs)

    def _transnet(self, frames: Any) -> tuple[list[_Scene], int]:
        """Scenes from TransNetV2's cut probabilities (loaded once per detector)."""
        from .transnet import load_transnet, transnet_cuts

        c = self.config
        if self._net is None:
            self._net = load_transnet(c.device)
        cuts, n = transnet_cuts(self._net, frames, c.transnet_threshold)
        scenes = [_Scene(0, "start", 0.0)]
        for t, p in cuts:
            if t - scenes[-1].start >= c.min_scene_len:
                scenes.append(_Scene(t, "cut", round(p, 6)))
        return scenes, n

    def _thumb_wh(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.config.thumb_size / max(width, height))
        return _even(width * scale), _even(height * scale)

    def detect_frames(self, frames: Iterable[VideoFrame], *, fps: float, width: int,
                      height: int, thumb_wh: tuple[int, int] | None = None,
                      timestamps: np.ndarray | None = None
                      ) -> tuple[dict[str, Any], list[bytes]]:
        """The streaming core over an in-order iterable of consecutive RGB
        :class:`VideoFrame`; ``width``/``height``/``fps`` are the source facts recorded.
        Thumbnails are the frames as given, or resized to ``thumb_wh`` when that is set."""
        c = self.config
        keeper = _Keeper(2 * c.gradual_window + 2, c.keyframe_offset,
                         lambda img: self._jpeg(img, thumb_wh))
        an: tuple[int, int] | None = None

        def small(img: np.ndarray) -> np.ndarray:
            import cv2

            nonlocal an
            if an is None:
                h0, w0 = img.shape[:2]
                aw = min(c.analysis_width, w0)
                an = (aw, _even(aw * h0 / w0))
            return img if (img.shape[1], img.shape[0]) == an else cv2.resize(
                img, an, interpolation=cv2.INTER_AREA)

        scenes, n = self._analyse(((f.index, small(f.image), f.image) for f in frames), keeper)
        ts = timestamps if timestamps is not None else (
            np.arange(n, dtype=np.float64) / fps if fps > 0 else np.zeros(n))
        kfs = self._keyframe_frames(scenes, n)
        thumbs = [keeper.kept[i] for i in kfs]
        step = float(np.median(np.diff(ts))) if n > 1 else (1.0 / fps if fps > 0 else 0.0)
        return self._result(scenes, n, ts, float(ts[-1] + step) if n else 0.0, fps, width,
                            height, kfs, thumbs)

    # -- analysis --------------------------------------------------------------------
    def _analyse(self, items: Iterable[tuple[int, np.ndarray, Any]],
                 keeper: _Keeper | None) -> tuple[list[_Scene], int]:
        """One streaming pass over ``(index, small RGB image, handle)``: features a batch
        at a time (numpy), then the cut / dissolve decisions frame by frame."""
        c = self.config
        feats = _Features(c.gradual_window)
        state = _State()
        batch: list[tuple[int, np.ndarray, Any]] = []
        t = -1
        for item in items:
            batch.append(item)
            t = item[0]
            if len(batch) == _BATCH:
                self._decide(batch, feats.push(np.stack([b[1] for b in batch])), state,
                             keeper)
                batch = []
        if batch:
            self._decide(batch, feats.push(np.stack([b[1] for b in batch])), state, keeper)
        if state.run is not None:
            self._close_run(state.run, state.scenes)
        if keeper is not None:
            keeper.flush(state.scenes)
        return state.scenes, t + 1

    def _decide(self, batch: list[tuple[int, np.ndarray, Any]], f: dict[str, np.ndarray],
                st: _State, keeper: _Keeper | None) -> None:
        """The per-frame decisions for one batch of precomputed features."""
        c = self.config
        k = c.gradual_window
        scenes = st.scenes
        score_a, chi_a = f["score"].tolist(), f["chi"].tolist()
        dk_a, span_a, resid_a = f["dk"].tolist(), f["span"].tolist(), f["resid"].tolist()
        grey, goff = f["grey"], int(f["grey_off"])
        for b, (t, _, handle) in enumerate(batch):
            motion = 0.0
            score = score_a[b]
            if not scenes:
                scenes.append(_Scene(t, "start", 0.0))
            elif score == score:  # not NaN: there is a previous frame
                chi = chi_a[b]
                flow = None
                if c.use_flow:
                    flow, motion = self._flow(grey[goff + b - 1], grey[goff + b], st.fl_wh(
                        c.flow_width, grey.shape[2], grey.shape[1]))
                thr = st.threshold(c)
                st.push_score(score, c.adaptive_window)
                if score > thr or chi > c.hist_threshold:  # a cut-like change
                    st.last_jump = t
                palette = chi > c.hist_threshold  # the whole palette changed: a cut
                if (palette or score > thr) and t - scenes[-1].start >= c.min_scene_len and (
                        palette or not (c.use_flow and self._explained_by_motion(
                            grey[goff + b - 1], grey[goff + b], flow))):
                    if st.run is not None:
                        self._close_run(st.run, scenes)
                        st.run = None
                    scenes.append(_Scene(t, "cut", round(max(score, chi), 6)))
                elif c.gradual:
                    first = t - 2 * k
                    dk = dk_a[b]
                    hit = (dk == dk and st.last_jump < first and first >= scenes[-1].start
                           and dk > c.gradual_threshold and span_a[b] > 0
                           and resid_a[b] < c.gradual_linearity * span_a[b])
                    st.run = self._gradual_step(t - k, hit, dk, st.run, scenes)
            sc = scenes[-1]
            sc.motion_sum += motion
            sc.motion_n += 1
            if keeper is not None:
                keeper.add(t, handle, scenes)

    def _gradual_step(self, mid: int, hit: bool, dk: float, run: list[Any] | None,
                      scenes: list[_Scene]) -> list[Any] | None:
        """Grow the dissolve run with frame ``mid`` (a linear-mix middle) or close it."""
        if hit:
            if run is None:
                return [mid, mid, mid, dk]
            run[1] = mid
            if dk > run[3]:
                run[2], run[3] = mid, dk
            return run
        if run is not None:
            self._close_run(run, scenes)
        return None

    def _close_run(self, run: list[Any], scenes: list[_Scene]) -> None:
        """End a gradual run: one scene start at its strongest frame."""
        start, end, best, score = run
        if end - start < 1:
            return  # a one-frame blip is noise, not a transition
        if best - scenes[-1].start < self.config.min_scene_len:
            return
        scenes.append(_Scene(best, "gradual", round(float(score), 6)))

    @staticmethod
    def _flow(prev: np.ndarray, grey: np.ndarray, wh: tuple[int, int] | None
              ) -> tuple[np.ndarray, float]:
        import cv2

        a, b = prev, grey
        if wh is not None and (a.shape[1], a.shape[0]) != wh:
            a = cv2.resize(a, wh, interpolation=cv2.INTER_AREA)
            b = cv2.resize(b, wh, interpolation=cv2.INTER_AREA)
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 2, 5, 1.1, 0)
        return flow, float(np.sqrt((flow ** 2).sum(-1)).mean()) / a.shape[1]

    def _explained_by_motion(self, prev: np.ndarray, grey: np.ndarray,
                             flow: np.ndarray | None) -> bool:
        """True when warping the previous frame by the flow explains the change."""
        import cv2

        if flow is None:
            return False
        h, w = flow.shape[:2]
        a = cv2.resize(prev, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        b = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        # backward warp: the flow maps a -> b, so sample a at (x - flow)
        warped = cv2.remap(a, xx - flow[..., 0], yy - flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        raw = float(np.abs(b - a).mean())
        resid = float(np.abs(b - warped).mean())
        return raw > 0 and resid < self.config.flow_gate * raw

    # -- output ----------------------------------------------------------------------
    def _keyframe_frames(self, scenes: list[_Scene], n: int) -> list[int]:
        """One keyframe per scene (``keyframe_offset`` in, or its last frame), capped."""
        c = self.config
        out = []
        for i, s in enumerate(scenes):
            end = scenes[i + 1].start if i + 1 < len(scenes) else n
            out.append(min(s.start + c.keyframe_offset, end - 1))
        if len(out) > c.max_keyframes:
            pick = np.floor(np.arange(c.max_keyframes) * len(out) / c.max_keyframes)
            out = [out[int(j)] for j in pick]
        return out

    def _jpeg(self, img: np.ndarray, wh: tuple[int, int] | None = None) -> bytes:
        import cv2

        if wh is not None and (img.shape[1], img.shape[0]) != tuple(wh):
            img = cv2.resize(img, tuple(wh), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:  # pragma: no cover - imencode fails only on invalid arrays
            raise ConfigError("JPEG encoding of a thumbnail failed")
        return buf.tobytes()

    def _result(self, scenes: list[_Scene], n: int, ts: np.ndarray, end_time: float,
                fps: float, width: int, height: int, kfs: list[int], thumbs: list[bytes]
                ) -> tuple[dict[str, Any], list[bytes]]:
        c = self.config
        end_time = float(end_time) if np.isfinite(end_time) else float(ts[n - 1])
        out_scenes = []
        for i, s in enumerate(scenes):
            end = scenes[i + 1].start if i + 1 < len(scenes) else n
            end_t = float(ts[end]) if end < n else end_time
            d = {"start": s.start, "end": end, "start_time": round(float(ts[s.start]), 6),
                 "end_time": round(end_t, 6), "kind": s.kind, "score": s.score}
            if c.use_flow:
                d["motion"] = round(s.motion_sum / max(s.motion_n, 1), 6)
            out_scenes.append(d)
        starts = [s.start for s in scenes]
        keyframes = []
        for j, t in enumerate(kfs):
            scene = int(np.searchsorted(starts, t, side="right")) - 1
            keyframes.append({"frame": t, "time": round(float(ts[t]), 6), "scene": scene,
                              "file": f"kf.{j:03d}.jpg"})
        kf = {
            "tokenizer": self.name,
            "version": self.version,
            "method": self.method,
            "config": config_to_dict(c),
            "num_frames": n,
            "fps": fps,
            "width": width,
            "height": height,
            "scene_starts": starts,
            "keyframe_frames": list(kfs),
            "scenes": out_scenes,
            "keyframes": keyframes,
        }
        return kf, thumbs


def detect_keyframes(src: str | os.PathLike[str] | bytes | BinaryIO | VideoReader,
                     config: KeyframesConfig | None = None
                     ) -> tuple[dict[str, Any], list[bytes]]:
    """Shortcut for ``KeyframeDetector(config).detect(src)``.

    >>> kf, thumbs = detect_keyframes("clip.mp4")               # doctest: +SKIP
    """
    return KeyframeDetector(config).detect(src)
