"""Shot cuts and keyframes: colour-histogram chi-square (+ optional Farneback flow).

The detector streams a video once through :meth:`VideoReader.iter_frames` at a small
size and keeps only a bounded state -- the last ``gradual_window + 1`` histograms, the
previous grey frame, a rolling window of scores, and one small record (plus one JPEG
thumbnail) per scene -- so memory does not grow with the video's length.  Long videos
are therefore processed as overlapping chunks in effect: each frame is compared with
the ``gradual_window`` frames before it, which is the overlap carried from chunk to chunk.

Per frame ``t`` (downscaled to ``analysis_width``):

- ``hist``: 8x8x8 RGB histogram (``cv2.calcHist``), normalised to sum 1, and the
  symmetric chi-square distance to frame ``t-1``:
  ``0.5 * sum((a - b)^2 / (a + b))`` in ``[0, 1]`` (0: same colours, 1: disjoint).
- ``flow`` (``use_flow``): mean Farneback optical-flow magnitude between grey frames
  ``t-1`` and ``t`` at ``flow_width``, as a fraction of the width, added with
  ``flow_weight``; it is also averaged per scene (``motion``) for motion-aware sampling.
- threshold: ``fixed`` (``score > fixed_threshold``) or ``adaptive``
  (``score > median + max(min_threshold, adaptive_k * MAD)`` over the last
  ``adaptive_window`` scores: a cut must stand out from the local level).
- ``min_scene_len`` frames between cuts.
- ``gradual`` (fade/dissolve tolerant): frame ``t`` is also compared with frame
  ``t - gradual_window`` (never across the last cut); a run of frames above
  ``gradual_threshold`` is one gradual transition, reported once at its centre.

Output of :meth:`KeyframeDetector.detect`: the ``kf.json`` dict (scenes with start/end
frames and times, cut kind and score, keyframes with their frame, time and thumbnail
file name, method, config, version) and the thumbnails as JPEG bytes, in order, to be
stored as ``kf.000.jpg``, ``kf.001.jpg`` ...

>>> det = KeyframeDetector(KeyframesConfig(gradual=True))
>>> kf, thumbs = det.detect("clip.mp4")                     # doctest: +SKIP
>>> [s["start"] for s in kf["scenes"]], len(thumbs)         # doctest: +SKIP
([0, 75, 150], 3)
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .._registry import config_to_dict
from ..errors import ConfigError
from ..media.video_reader import BACKENDS, VideoFrame, VideoReader
from .base import TOKENIZERS, provenance_of

__all__ = ["KeyframeDetector", "KeyframesConfig", "detect_keyframes", "hist_chi2"]

THRESHOLDS = ("fixed", "adaptive")


@dataclass(frozen=True, kw_only=True)
class KeyframesConfig:
    """Options of the shot-cut / keyframe detector (see the module docstring)."""

    backend: str = "auto"
    analysis_width: int = 128
    bins: int = 8
    threshold: str = "adaptive"
    fixed_threshold: float = 0.3
    adaptive_k: float = 6.0
    adaptive_window: int = 48
    min_threshold: float = 0.15
    min_scene_len: int = 12
    use_flow: bool = False
    flow_weight: float = 0.5
    flow_width: int = 64
    gradual: bool = False
    gradual_window: int = 16
    gradual_threshold: float = 0.35
    keyframe_offset: int = 6
    max_keyframes: int = 64
    thumb_size: int = 224
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got "
                              f"{self.backend!r}")
        if self.threshold not in THRESHOLDS:
            raise ConfigError(f"threshold must be one of {', '.join(THRESHOLDS)}; got "
                              f"{self.threshold!r}")
        for name in ("analysis_width", "bins", "adaptive_window", "min_scene_len",
                     "flow_width", "gradual_window", "max_keyframes", "thumb_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {v!r}")
        if self.analysis_width < 8 or self.flow_width < 8:
            raise ConfigError("analysis_width and flow_width must be >= 8 pixels")
        if not 2 <= self.bins <= 64:
            raise ConfigError(f"bins must be in [2, 64], got {self.bins}")
        for name in ("fixed_threshold", "min_threshold", "gradual_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1] (chi-square distance), got {v}")
        if self.adaptive_k < 0 or self.flow_weight < 0:
            raise ConfigError("adaptive_k and flow_weight must be >= 0")
        if self.keyframe_offset < 0:
            raise ConfigError(f"keyframe_offset must be >= 0 frames, got {self.keyframe_offset}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.gradual and self.gradual_window < 2:
            raise ConfigError("gradual_window must be >= 2 frames when gradual=True")


def _hist(img: np.ndarray, bins: int) -> np.ndarray:
    import cv2

    h = cv2.calcHist([img], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
    return h / max(float(h.sum()), 1.0)


def hist_chi2(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric chi-square distance of two normalised histograms, in ``[0, 1]``.

    >>> hist_chi2(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    s = a + b
    m = s > 0
    return float(0.5 * np.sum((a[m] - b[m]) ** 2 / s[m]))


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


class _Scene:
    __slots__ = ("start", "time", "kind", "score", "motion_sum", "motion_n", "kf")

    def __init__(self, start: int, time: float, kind: str, score: float) -> None:
        self.start, self.time, self.kind, self.score = start, time, kind, score
        self.motion_sum, self.motion_n = 0.0, 0
        self.kf: tuple[int, float, bytes] | None = None


@TOKENIZERS.register("keyframes")
class KeyframeDetector:
    """Shot-cut and keyframe detector; ``detect(src) -> (kf_dict, jpeg_thumbnails)``.

    ``src`` is a path, bytes, a binary file or an open :class:`VideoReader`.

    >>> kf, thumbs = KeyframeDetector().detect(video_bytes)     # doctest: +SKIP
    >>> kf["keyframes"][0]["file"]                              # doctest: +SKIP
    'kf.000.jpg'
    """

    name = "keyframes"
    version = "1"
    config_class = KeyframesConfig
    storage_dtype = np.dtype(np.uint8)  # outputs are JSON + JPEG bytes, not an array

    def __init__(self, config: KeyframesConfig | None = None) -> None:
        self.config = KeyframesConfig() if config is None else config
        if not isinstance(self.config, KeyframesConfig):
            raise ConfigError(f"KeyframeDetector needs a KeyframesConfig, got "
                              f"{type(self.config).__name__}")

    def provenance(self) -> dict[str, Any]:
        """``{"tokenizer": "keyframes", "version": ..., "config": {...}}``."""
        return provenance_of(self)

    @property
    def method(self) -> str:
        c = self.config
        return "hist_chi2" + ("+flow" if c.use_flow else "") + ("+gradual" if c.gradual else "")

    def __call__(self, src: str | os.PathLike[str] | bytes | BinaryIO | VideoReader
                 ) -> tuple[dict[str, Any], list[bytes]]:
        return self.detect(src)

    def detect(self, src: str | os.PathLike[str] | bytes | BinaryIO | VideoReader
               ) -> tuple[dict[str, Any], list[bytes]]:
        """Detect scenes in a video and return ``(kf_dict, thumbnails)``.

        Raises :class:`~mmshard.errors.DataError` for undecodable input.
        """
        c = self.config
        own = not isinstance(src, VideoReader)
        reader = VideoReader(src, backend=c.backend) if own else src  # type: ignore[arg-type]
        try:
            meta = reader.meta
            scale = min(1.0, c.thumb_size / max(meta.width, meta.height))
            thumb_wh = (_even(meta.width * scale), _even(meta.height * scale))
            # Small sources are analysed at their own size (no scaler pass per frame: the
            # analysis resize is one cheap cv2 call and thumbnails are made only for
            # keyframes); large ones are scaled by the decoder to the thumbnail size first.
            native = max(meta.width, meta.height) <= 2 * c.thumb_size
            frames = reader.iter_frames(size=None if native else thumb_wh)
            return self.detect_frames(frames, fps=meta.fps, width=meta.width,
                                      height=meta.height, thumb_wh=thumb_wh)
        finally:
            if own:
                reader.close()

    def detect_frames(self, frames: Iterable[VideoFrame], *, fps: float, width: int,
                      height: int, thumb_wh: tuple[int, int] | None = None
                      ) -> tuple[dict[str, Any], list[bytes]]:
        """The streaming core over any in-order iterable of RGB :class:`VideoFrame`;
        ``width``/``height``/``fps`` are the source facts recorded.  Thumbnails are the
        frames as given, or resized to ``thumb_wh`` when that is set."""
        import cv2

        c = self.config

        def jpeg(img: np.ndarray) -> bytes:
            return self._jpeg(img, thumb_wh)

        k = c.gradual_window
        hists: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=k + 1)
        # recent (index, time) pairs: a gradual cut is placed up to a few windows back
        times: collections.deque[tuple[int, float]] = collections.deque(maxlen=4 * k + 8)
        recent: collections.deque[float] = collections.deque(maxlen=c.adaptive_window)
        scenes: list[_Scene] = []
        prev_grey: np.ndarray | None = None
        prev_img: np.ndarray | None = None
        run: list[Any] | None = None  # [start_t, end_t, max_score] of a gradual run
        last_t, last_time = -1, 0.0
        frame_step = 1.0 / fps if fps > 0 else 0.0
        an_wh = fl_wh = None

        def keyframe_due(scene: _Scene, t: int) -> bool:
            return scene.kf is None and t >= scene.start + c.keyframe_offset

        for f in frames:
            t, img = f.index, f.image
            if an_wh is None:
                h0, w0 = img.shape[:2]
                aw, fw = min(c.analysis_width, w0), min(c.flow_width, w0)
                an_wh = (aw, _even(aw * h0 / w0))
                fl_wh = (fw, _even(fw * h0 / w0))
            small = cv2.resize(img, an_wh, interpolation=cv2.INTER_AREA)
            hist = _hist(small, c.bins)
            motion = 0.0
            if c.use_flow:
                grey = cv2.cvtColor(cv2.resize(img, fl_wh, interpolation=cv2.INTER_AREA),
                                    cv2.COLOR_RGB2GRAY)
                if prev_grey is not None:
                    flow = cv2.calcOpticalFlowFarneback(prev_grey, grey, None, 0.5, 2, 9, 2,
                                                        5, 1.1, 0)
                    motion = float(np.sqrt((flow ** 2).sum(-1)).mean()) / fl_wh[0]
                prev_grey = grey
            if not scenes:
                scenes.append(_Scene(t, f.time, "start", 0.0))
            else:
                d1 = hist_chi2(hist, hists[-1][1])
                score = d1 + (c.flow_weight * min(1.0, 10.0 * motion) if c.use_flow else 0.0)
                thr = self._threshold(recent)
                recent.append(score)
                since = t - scenes[-1].start
                if score > thr and since >= c.min_scene_len:
                    if scenes[-1].kf is None and prev_img is not None:  # a short scene
                        scenes[-1].kf = (last_t, last_time, jpeg(prev_img))
                    scenes.append(_Scene(t, f.time, "cut", round(score, 6)))
                    run = None
                elif c.gradual and len(hists) > 1:
                    ref_t = max(t - k, scenes[-1].start)
                    ref = next((h for i, h in hists if i >= ref_t), None)
                    dk = hist_chi2(hist, ref) if ref is not None and t - ref_t >= 2 else 0.0
                    if dk > c.gradual_threshold:
                        run = [t, t, dk] if run is None else [run[0], t, max(run[2], dk)]
                    elif run is not None:
                        self._close_run(run, scenes, k, times, frame_step)
                        run = None
            sc = scenes[-1]
            sc.motion_sum += motion
            sc.motion_n += 1
            if keyframe_due(sc, t):
                sc.kf = (t, f.time, jpeg(img))
            hists.append((t, hist))
            times.append((t, f.time))
            last_t, last_time, prev_img = t, f.time, img
        if run is not None:
            self._close_run(run, scenes, k, times, frame_step)
        if scenes and scenes[-1].kf is None and prev_img is not None:
            scenes[-1].kf = (last_t, last_time, jpeg(prev_img))
        return self._result(scenes, last_t + 1, last_time + frame_step, fps, width, height)

    # -- helpers ---------------------------------------------------------------------
    def _threshold(self, recent: collections.deque[float]) -> float:
        c = self.config
        if c.threshold == "fixed":
            return c.fixed_threshold
        if len(recent) < 3:
            return max(c.min_threshold, c.fixed_threshold)
        arr = np.fromiter(recent, np.float64, len(recent))
        med = float(np.median(arr))
        mad = float(np.median(np.abs(arr - med)))
        return med + max(c.min_threshold, c.adaptive_k * mad)

    def _close_run(self, run: list[Any], scenes: list[_Scene], k: int,
                   times: collections.deque[tuple[int, float]], frame_step: float) -> None:
        """End a gradual run: one scene start at the transition's centre."""
        start, end, score = run
        if end - start < 1:
            return  # a one-frame blip is noise, not a transition
        pos = (start + end) // 2 - k // 2
        prev = scenes[-1]
        if pos - prev.start < self.config.min_scene_len:
            return
        time = next((tm for i, tm in times if i == pos),
                    prev.time + (pos - prev.start) * frame_step)
        new = _Scene(pos, time, "gradual", round(float(score), 6))
        # the keyframe already taken for frames after pos belongs to the new scene
        if prev.kf is not None and prev.kf[0] >= pos:
            new.kf, prev.kf = prev.kf, None
        scenes.append(new)

    def _jpeg(self, img: np.ndarray, wh: tuple[int, int] | None = None) -> bytes:
        import cv2

        if wh is not None and (img.shape[1], img.shape[0]) != tuple(wh):
            img = cv2.resize(img, tuple(wh), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:  # pragma: no cover - imencode fails only on invalid arrays
            raise ConfigError("JPEG encoding of a thumbnail failed")
        return buf.tobytes()

    def _result(self, scenes: list[_Scene], n: int, end_time: float, fps: float, width: int,
                height: int) -> tuple[dict[str, Any], list[bytes]]:
        c = self.config
        out_scenes = []
        for i, s in enumerate(scenes):
            end = scenes[i + 1].start if i + 1 < len(scenes) else n
            end_t = scenes[i + 1].time if i + 1 < len(scenes) else end_time
            d = {"start": s.start, "end": end, "start_time": round(s.time, 6),
                 "end_time": round(end_t, 6), "kind": s.kind, "score": s.score}
            if c.use_flow:
                d["motion"] = round(s.motion_sum / max(s.motion_n, 1), 6)
            out_scenes.append(d)
        with_kf = [i for i, s in enumerate(scenes) if s.kf is not None]
        if len(with_kf) > c.max_keyframes:
            pick = np.floor(np.arange(c.max_keyframes) * len(with_kf) / c.max_keyframes)
            with_kf = [with_kf[int(j)] for j in pick]
        keyframes, thumbs = [], []
        for j, i in enumerate(with_kf):
            t, time, jpg = scenes[i].kf  # type: ignore[misc]
            keyframes.append({"frame": t, "time": round(time, 6), "scene": i,
                              "file": f"kf.{j:03d}.jpg"})
            thumbs.append(jpg)
        kf = {
            "tokenizer": self.name,
            "version": self.version,
            "method": self.method,
            "config": config_to_dict(c),
            "num_frames": n,
            "fps": fps,
            "width": width,
            "height": height,
            "scene_starts": [s.start for s in scenes],
            "keyframe_frames": [k["frame"] for k in keyframes],
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
