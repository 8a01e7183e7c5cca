"""Clip extraction plans: cut one video into clip descriptors (pure, no decoding).

Two planners, registered in ``CLIP_PLANNERS``:

- ``fixed`` (:class:`FixedWindowPlanner`): windows of ``length_s`` seconds every
  ``stride_s`` seconds (``stride_s < length_s`` overlaps, ``>`` leaves gaps); the tail
  shorter than a window is dropped, kept (if at least ``min_length_s``) or covered by a
  last full window shifted to end at the video's end.
- ``scenes`` (:class:`SceneClipPlanner`): one clip per scene of a ``kf.json`` dict from
  :mod:`mmshard.tokenizers.keyframes`, optionally trimmed at both ends (to skip the
  transition), with short scenes dropped and long ones split into equal parts.

Each clip is a :class:`Clip` with start/end frame (end exclusive) and time, a
deterministic key ``<source key>_c0003`` and ``group`` = the source video's key, so a
group-aware split keeps every clip of one video in the same split.

>>> plan = FixedWindowPlanner(FixedWindowConfig(length_s=2.0, stride_s=1.0))
>>> [(c.key, c.start_frame, c.end_frame) for c in plan.plan("vid7", num_frames=100, fps=25.0)]
[('vid7_c0000', 0, 50), ('vid7_c0001', 25, 75), ('vid7_c0002', 50, 100)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._registry import Registry
from ..errors import ConfigError, DataError
from ..keys import KEY_RE

__all__ = [
    "CLIP_PLANNERS",
    "Clip",
    "FixedWindowConfig",
    "FixedWindowPlanner",
    "SceneClipConfig",
    "SceneClipPlanner",
    "clip_key",
]

CLIP_PLANNERS: Registry[Callable[..., Any]] = Registry("clip planner")
TAILS = ("drop", "keep", "shift")


@dataclass(frozen=True)
class Clip:
    """One clip of a source video: frames ``[start_frame, end_frame)``, seconds
    ``[start_time, end_time)``, its ``key``, ``group`` (the source key) and ``index``."""

    key: str
    group: str
    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for a manifest row or ``json`` field)."""
        return asdict(self)


def clip_key(source_key: str, index: int) -> str:
    """The key of clip ``index`` of ``source_key``: ``<key>_c<index:04d>``.

    >>> clip_key("abc", 3)
    'abc_c0003'
    """
    if not KEY_RE.match(source_key):
        raise ConfigError(f"source key {source_key!r} must match [A-Za-z0-9_-]+")
    if index < 0:
        raise ConfigError(f"clip index must be >= 0, got {index}")
    return f"{source_key}_c{index:04d}"


def _timeline(num_frames: int, fps: float, timestamps: Sequence[float] | None
              ) -> tuple[np.ndarray, float]:
    """Per-frame times and the video's end time."""
    if num_frames < 1:
        raise DataError("empty_video", f"num_frames must be >= 1, got {num_frames}")
    if timestamps is not None:
        ts = np.asarray(timestamps, np.float64).reshape(-1)
        if len(ts) != num_frames:
            raise ConfigError(f"timestamps has {len(ts)} entries for {num_frames} frames")
        step = float(np.median(np.diff(ts))) if num_frames > 1 else (1.0 / fps if fps > 0
                                                                       else 0.0)
        return ts, float(ts[-1] + step)
    if not fps or fps <= 0:
        raise DataError("bad_fps", f"fps must be > 0 without timestamps, got {fps!r}")
    return np.arange(num_frames, dtype=np.float64) / fps, num_frames / fps


def _frame_at(ts: np.ndarray, t: float) -> int:
    """First frame whose presentation time is >= t (len(ts) past the end)."""
    return int(np.searchsorted(ts, t - 1e-9, side="left"))


def _make(key: str, spans: list[tuple[int, int]], ts: np.ndarray, end_time: float
          ) -> list[Clip]:
    n = len(ts)
    out = []
    for a, b in spans:
        if b <= a:
            continue
        out.append(Clip(key=clip_key(key, len(out)), group=key, index=len(out),
                        start_frame=a, end_frame=b, start_time=round(float(ts[a]), 6),
                        end_time=round(float(ts[b]) if b < n else end_time, 6)))
    return out


# ---- fixed windows ----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FixedWindowConfig:
    """Windows of ``length_s`` every ``stride_s`` (default: ``length_s``, no overlap).

    ``tail``: ``drop`` the last partial window | ``keep`` it when at least
    ``min_length_s`` long | ``shift`` a full window back to end at the video's end.
    A video shorter than one window yields one clip of the whole video unless
    ``tail="drop"``.
    """

    length_s: float = 10.0
    stride_s: float | None = None
    tail: str = "keep"
    min_length_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.length_s > 0:
            raise ConfigError(f"length_s must be > 0, got {self.length_s!r}")
        if self.stride_s is not None and not self.stride_s > 0:
            raise ConfigError(f"stride_s must be > 0 (or None for length_s), got "
                              f"{self.stride_s!r}")
        if self.tail not in TAILS:
            raise ConfigError(f"tail must be one of {', '.join(TAILS)}; got {self.tail!r}")
        if not 0 <= self.min_length_s <= self.length_s:
            raise ConfigError(f"min_length_s must be in [0, length_s], got {self.min_length_s}")


@CLIP_PLANNERS.register("fixed")
class FixedWindowPlanner:
    """Fixed-length (optionally overlapping) windows over a whole video."""

    name = "fixed"
    config_class = FixedWindowConfig

    def __init__(self, config: FixedWindowConfig | None = None) -> None:
        self.config = FixedWindowConfig() if config is None else config

    def plan(self, key: str, *, num_frames: int, fps: float,
             timestamps: Sequence[float] | None = None) -> list[Clip]:
        """Clips of video ``key`` (``timestamps`` make windows exact for VFR video)."""
        c = self.config
        ts, end = _timeline(num_frames, fps, timestamps)
        t0 = float(ts[0])
        length, stride = c.length_s, c.stride_s or c.length_s
        eps = 1e-9
        starts = []
        k = 0
        while t0 + k * stride + length <= end + eps:
            starts.append(t0 + k * stride)
            k += 1
        spans = [(_frame_at(ts, s), _frame_at(ts, s + length)) for s in starts]
        covered = starts[-1] + length if starts else t0
        next_start = t0 + k * stride
        if c.tail == "keep" and next_start < end - eps and end - next_start >= c.min_length_s:
            if not starts or covered < end - eps:
                spans.append((_frame_at(ts, next_start), num_frames))
        elif c.tail == "shift" and covered < end - eps:
            spans.append((_frame_at(ts, max(t0, end - length)), num_frames))
        return _make(key, spans, ts, end)


# ---- scene clips ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SceneClipConfig:
    """One clip per detected scene: ``trim_s`` cut from both ends, scenes shorter than
    ``min_length_s`` (after trimming) dropped, scenes longer than ``max_length_s`` split
    into the fewest equal parts that fit."""

    trim_s: float = 0.0
    min_length_s: float = 0.0
    max_length_s: float | None = None

    def __post_init__(self) -> None:
        if self.trim_s < 0 or self.min_length_s < 0:
            raise ConfigError("trim_s and min_length_s must be >= 0")
        if self.max_length_s is not None and not self.max_length_s > max(self.min_length_s,
                                                                         0.0):
            raise ConfigError(f"max_length_s must be > min_length_s, got {self.max_length_s}")


@CLIP_PLANNERS.register("scenes")
class SceneClipPlanner:
    """Scene clips from a ``kf.json`` dict (:class:`~mmshard.tokenizers.keyframes.
    KeyframeDetector` output).

    >>> kf = {"num_frames": 100, "fps": 25.0, "scenes": [
    ...     {"start": 0, "end": 40}, {"start": 40, "end": 100}]}
    >>> [(c.start_frame, c.end_frame) for c in SceneClipPlanner().plan("v", kf)]
    [(0, 40), (40, 100)]
    """

    name = "scenes"
    config_class = SceneClipConfig

    def __init__(self, config: SceneClipConfig | None = None) -> None:
        self.config = SceneClipConfig() if config is None else config

    def plan(self, key: str, kf: Mapping[str, Any], *,
             timestamps: Sequence[float] | None = None) -> list[Clip]:
        """Clips of video ``key`` from its keyframe dict (scenes with start/end frames)."""
        c = self.config
        try:
            n = int(kf["num_frames"])
            scenes = [(int(s["start"]), int(s["end"])) for s in kf["scenes"]]
            fps = float(kf.get("fps") or 0.0)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError("bad_keyframes", f"kf.json lacks num_frames/scenes: {e}") from e
        ts, end = _timeline(n, fps, timestamps)
        spans: list[tuple[int, int]] = []
        for a, b in scenes:
            if not 0 <= a < b <= n:
                raise DataError("bad_keyframes", f"scene [{a}, {b}) outside [0, {n})")
            t_a = float(ts[a]) + c.trim_s
            t_b = (float(ts[b]) if b < n else end) - c.trim_s
            if t_b - t_a < max(c.min_length_s, 1e-9):
                continue
            parts = 1 if c.max_length_s is None else max(1, math.ceil(
                (t_b - t_a) / c.max_length_s - 1e-9))
            edges = np.linspace(t_a, t_b, parts + 1)
            for s, e in zip(edges[:-1], edges[1:]):
                fa, fb = _frame_at(ts, s), min(_frame_at(ts, e), b)
                spans.append((max(fa, a), fb))
        return _make(key, spans, ts, end)
