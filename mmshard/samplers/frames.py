"""Frame samplers: which frames of a video a training or evaluation step decodes.

Pure index logic from metadata alone (``num_frames``, ``fps``, optionally per-frame
``timestamps``, a ``keyframes`` list, per-frame ``motion`` scores) -- no decoding.  Every
sampler returns a :class:`FrameSample` of sorted, in-bounds frame indices and their
timestamps.

Randomness comes from a ``numpy.random.Generator`` seeded with ``(seed, epoch, key)``
(``key`` is an optional sample key such as the video's shard key), never a global RNG,
so the same (seed, epoch, key) always gives the same frames, different epochs give
different frames, and ``state_dict()`` / ``load_state_dict()`` restore a sampler exactly.
``training=False`` makes every sampler deterministic (middle of segments, no jitter).

Shared post-processing, configured on every sampler: ``jitter`` (+/- frames, training
only, clipped to the video) and ``min_gap_s`` (consecutive picks at least this far apart
in time; a video too short for that raises ``DataError("video_too_short")``).

>>> s = TSNSampler(TSNConfig(num_segments=8, mode="random", min_gap_s=0.5), seed=1)
>>> s.set_epoch(3)
>>> out = s.sample(num_frames=18000, fps=30.0, key="vid_000001")
>>> len(out.indices), bool((out.indices[1:] > out.indices[:-1]).all())
(8, True)

Samplers are registered by name in ``FRAME_SAMPLERS``: ``stride``, ``uniform``, ``tsn``,
``fps``, ``keyframe``, ``motion``; ``build_frame_sampler(name, options, seed=...)`` makes
one from a dict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._registry import Registry, config_from_dict, config_to_dict
from ..errors import ConfigError, DataError

__all__ = [
    "FRAME_SAMPLERS",
    "FpsConfig",
    "FpsSampler",
    "FrameSample",
    "FrameSampler",
    "KeyframeSampler",
    "KeyframeSamplerConfig",
    "MotionConfig",
    "MotionSampler",
    "StrideConfig",
    "StrideSampler",
    "TSNConfig",
    "TSNSampler",
    "UniformConfig",
    "UniformSampler",
    "build_frame_sampler",
]

FRAME_SAMPLERS: Registry[Callable[..., FrameSampler]] = Registry("frame sampler")


@dataclass(frozen=True)
class FrameSample:
    """Sampled frames: ``indices`` (int64, sorted, in ``[0, num_frames)``) and their
    ``timestamps`` in seconds (float64)."""

    indices: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True, kw_only=True)
class _Common:
    """Options every sampler has: ``jitter`` frames (training only) and ``min_gap_s``."""

    jitter: int = 0
    min_gap_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.jitter, int) or self.jitter < 0:
            raise ConfigError(f"jitter must be an int >= 0 frames, got {self.jitter!r}")
        if self.min_gap_s < 0:
            raise ConfigError(f"min_gap_s must be >= 0 seconds, got {self.min_gap_s!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _key_int(key: str | int | None) -> int:
    if key is None:
        return 0
    if isinstance(key, int):
        return key & 0xFFFFFFFFFFFF
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=6).digest(), "big")


class FrameSampler:
    """Base class: seed/epoch state, timestamps, jitter and minimum-gap post-processing.

    Subclasses implement ``_pick(n, ts, rng, training, keyframes, motion) -> indices``.
    """

    name = "base"
    config_class: type = _Common

    def __init__(self, config: Any = None, *, seed: int = 0) -> None:
        self.config = self.config_class() if config is None else config
        if not isinstance(self.config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                              f"got {type(self.config).__name__}")
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.epoch = 0

    # -- state -----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``sample`` makes."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: sampler name, config, seed, epoch."""
        return {"sampler": self.name, "config": config_to_dict(self.config),
                "seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the sampler name must match)."""
        if state.get("sampler") != self.name:
            raise ConfigError(f"state is for sampler {state.get('sampler')!r}, not {self.name!r}")
        self.config = config_from_dict(self.config_class, dict(state["config"]))
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])

    def rng(self, key: str | int | None = None) -> np.random.Generator:
        """The generator for (seed, epoch, key)."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, _key_int(key)])

    # -- sampling --------------------------------------------------------------------
    def sample(self, num_frames: int, fps: float, *, timestamps: Sequence[float] | None = None,
               keyframes: Sequence[int] | None = None, motion: Sequence[float] | None = None,
               key: str | int | None = None, training: bool = True) -> FrameSample:
        """Frame indices and times for one video.

        ``timestamps`` (per-frame pts, seconds) make the sampler VFR-exact; without them
        frame ``i`` is at ``i / fps``.  ``key`` decorrelates videos within an epoch.

        >>> UniformSampler(UniformConfig(num_frames=4)).sample(100, 25.0).indices.tolist()
        [12, 37, 62, 87]
        """
        if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise DataError("empty_video", f"num_frames must be >= 1, got {num_frames!r}")
        n = int(num_frames)
        if timestamps is not None:
            ts = np.asarray(timestamps, np.float64).reshape(-1)
            if len(ts) != n:
                raise ConfigError(f"timestamps has {len(ts)} entries for {n} frames")
        else:
            if not fps or fps <= 0:
                raise DataError("bad_fps", f"fps must be > 0 without timestamps, got {fps!r}")
            ts = np.arange(n, dtype=np.float64) / float(fps)
        rng = self.rng(key)
        idx = np.asarray(self._pick(n, ts, rng, training, keyframes, motion), np.int64)
        idx = np.sort(np.clip(idx, 0, n - 1))
        cfg = self.config
        if training and cfg.jitter > 0 and len(idx):
            idx = np.sort(np.clip(idx + rng.integers(-cfg.jitter, cfg.jitter + 1, len(idx)),
                                  0, n - 1))
        if cfg.min_gap_s > 0 and len(idx) > 1:
            idx = _enforce_gap(idx, ts, cfg.min_gap_s)
        return FrameSample(indices=idx, timestamps=ts[idx])

    def _pick(self, n: int, ts: np.ndarray, rng: np.random.Generator, training: bool,
              keyframes: Sequence[int] | None, motion: Sequence[float] | None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, seed={self.seed}, epoch={self.epoch})"


def _enforce_gap(idx: np.ndarray, ts: np.ndarray, gap: float) -> np.ndarray:
    """Move picks the least needed so consecutive ones are >= ``gap`` seconds apart."""
    eps = 1e-9
    out = idx.copy()
    n = len(ts)
    for i in range(1, len(out)):  # forward: push later picks right (clamped to the end)
        need = ts[out[i - 1]] + gap - eps
        if ts[out[i]] < need:
            out[i] = min(int(np.searchsorted(ts, need, side="left")), n - 1)
    for i in range(len(out) - 2, -1, -1):  # backward: pull earlier picks left
        limit = ts[out[i + 1]] - gap + eps
        if ts[out[i]] > limit:
            out[i] = int(np.searchsorted(ts, limit, side="right")) - 1
            if out[i] < 0:
                span = ts[-1] - ts[0]
                raise DataError("video_too_short",
                                f"cannot place {len(idx)} frames {gap} s apart in "
                                f"{span:.3f} s; lower num_frames or min_gap_s")
    return out


def _stratified(n: int, count: int, rng: np.random.Generator | None) -> np.ndarray:
    """One index per equal segment: the middle (rng None) or uniform within it."""
    edges = np.linspace(0, n, count + 1)
    if rng is None:
        pos = (edges[:-1] + edges[1:]) / 2
    else:
        pos = edges[:-1] + rng.random(count) * (edges[1:] - edges[:-1])
    return np.minimum(np.floor(pos).astype(np.int64), n - 1)


# ---- stride -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class StrideConfig(_Common):
    """Every ``every``-th frame; ``max_frames`` caps the count (a random window in
    training, the centred one otherwise); ``random_offset`` starts at a random phase."""

    every: int = 4
    max_frames: int | None = None
    random_offset: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("every", self.every)
        if self.max_frames is not None:
            _positive("max_frames", self.max_frames)


@FRAME_SAMPLERS.register("stride")
class StrideSampler(FrameSampler):
    """Uniform every k frames.

    >>> StrideSampler(StrideConfig(every=10)).sample(35, 10.0, training=False).indices.tolist()
    [0, 10, 20, 30]
    """

    name = "stride"
    config_class = StrideConfig

    def _pick(self, n, ts, rng, training, keyframes, motion):
        cfg = self.config
        k = cfg.every
        offset = int(rng.integers(0, min(k, n))) if training and cfg.random_offset else 0
        idx = np.arange(offset, n, k)
        m = cfg.max_frames
        if m is not None and len(idx) > m:
            start = int(rng.integers(0, len(idx) - m + 1)) if training else (len(idx) - m) // 2
            idx = idx[start:start + m]
        return idx


# ---- uniform N --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class UniformConfig(_Common):
    """``num_frames`` evenly spread over the whole video (segment centres)."""

    num_frames: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("num_frames", self.num_frames)


@FRAME_SAMPLERS.register("uniform")
class UniformSampler(FrameSampler):
    """N frames evenly over the video; deterministic (add ``jitter`` for training)."""

    name = "uniform"
    config_class = UniformConfig

    def _pick(self, n, ts, rng, training, keyframes, motion):
        return _stratified(n, self.config.num_frames, None)


# ---- TSN segments -----------------------------------------------------------------------

TSN_MODES = ("middle", "random", "dense")


@dataclass(frozen=True, kw_only=True)
class TSNConfig(_Common):
    """TSN: split the video into ``num_segments`` equal segments and pick per segment
    the ``middle`` frame, a ``random`` one (training; middle in evaluation) or ``dense``:
    ``frames_per_segment`` consecutive frames ``dense_stride`` apart (a random start in
    training, centred in evaluation)."""

    num_segments: int = 8
    mode: str = "random"
    frames_per_segment: int = 1
    dense_stride: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("num_segments", self.num_segments)
        _choice("mode", self.mode, TSN_MODES)
        _positive("frames_per_segment", self.frames_per_segment)
        _positive("dense_stride", self.dense_stride)
        if self.mode != "dense" and self.frames_per_segment != 1:
            raise ConfigError("frames_per_segment > 1 needs mode='dense'")


@FRAME_SAMPLERS.register("tsn")
class TSNSampler(FrameSampler):
    """Temporal Segment Network sampling (middle | random | dense).

    >>> s = TSNSampler(TSNConfig(num_segments=4, mode="random"))
    >>> s.sample(100, 25.0, training=False).indices.tolist()   # evaluation: middles
    [12, 37, 62, 87]
    """

    name = "tsn"
    config_class = TSNConfig

    def _pick(self, n, ts, rng, training, keyframes, motion):
        cfg = self.config
        random = training and cfg.mode != "middle"
        if cfg.mode != "dense":
            return _stratified(n, cfg.num_segments, rng if random else None)
        edges = np.linspace(0, n, cfg.num_segments + 1)
        span = (cfg.frames_per_segment - 1) * cfg.dense_stride
        out = []
        for a, b in zip(edges[:-1], edges[1:]):
            room = max(b - a - 1 - span, 0.0)
            start = a + (rng.random() * room if random else room / 2)
            out.append(np.floor(start).astype(np.int64)
                       + np.arange(cfg.frames_per_segment) * cfg.dense_stride)
        return np.concatenate(out)


# ---- target fps -------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FpsConfig(_Common):
    """Resample to ``target_fps`` using real timestamps (VFR-aware); ``max_frames`` keeps
    a window of that many (random start in training, centred otherwise)."""

    target_fps: float = 2.0
    max_frames: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_fps > 0:
            raise ConfigError(f"target_fps must be > 0, got {self.target_fps!r}")
        if self.max_frames is not None:
            _positive("max_frames", self.max_frames)


@FRAME_SAMPLERS.register("fps")
class FpsSampler(FrameSampler):
    """Frames at a fixed rate in time, whatever the source frame rate.

    >>> FpsSampler(FpsConfig(target_fps=1.0)).sample(100, 25.0, training=False).indices.tolist()
    [0, 25, 50, 75]
    """

    name = "fps"
    config_class = FpsConfig

    def _pick(self, n, ts, rng, training, keyframes, motion):
        cfg = self.config
        period = 1.0 / cfg.target_fps
        end = ts[-1] + (ts[-1] - ts[-2] if n > 1 else period)
        phase = float(rng.random() * period) if training else 0.0
        targets = ts[0] + phase + np.arange(0.0, max(end - ts[0] - phase, 0.0), period)
        if len(targets) == 0:
            targets = ts[:1]
        m = cfg.max_frames
        if m is not None and len(targets) > m:
            s = int(rng.integers(0, len(targets) - m + 1)) if training else (len(targets) - m) // 2
            targets = targets[s:s + m]
        # the frame on screen at each target time
        return np.searchsorted(ts, targets + 1e-9, side="right") - 1


# ---- keyframe aligned -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class KeyframeSamplerConfig(_Common):
    """``num_frames`` picks aligned to the given keyframes (scene starts or chosen
    keyframes from ``kf.json``): evenly spread keyframes in evaluation, a random subset in
    training; with fewer keyframes than ``num_frames`` the rest are segment middles."""

    num_frames: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("num_frames", self.num_frames)


@FRAME_SAMPLERS.register("keyframe")
class KeyframeSampler(FrameSampler):
    """Keyframe-aligned sampling; needs ``keyframes=`` in :meth:`sample`.

    >>> KeyframeSampler(KeyframeSamplerConfig(num_frames=2)).sample(
    ...     100, 25.0, keyframes=[0, 30, 60, 90], training=False).indices.tolist()
    [0, 60]
    """

    name = "keyframe"
    config_class = KeyframeSamplerConfig

    def _pick(self, n, ts, rng, training, keyframes, motion):
        if keyframes is None:
            raise ConfigError("the keyframe sampler needs keyframes=[...] (from kf.json)")
        kf = np.unique(np.clip(np.asarray(keyframes, np.int64), 0, n - 1))
        m = self.config.num_frames
        if len(kf) >= m:
            if training:
                return np.sort(rng.choice(kf, size=m, replace=False))
            return kf[np.floor(np.arange(m) * len(kf) / m).astype(np.int64)]
        fill = _stratified(n, m, rng if training else None)
        # keep every keyframe; replace the segment picks nearest to them
        taken = np.zeros(m, bool)
        for k in kf:
            free = np.flatnonzero(~taken)
            j = free[np.argmin(np.abs(fill[free] - k))]
            fill[j], taken[j] = k, True
        return fill


# ---- motion weighted --------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class MotionConfig(_Common):
    """``num_frames`` placed by inverse-CDF of per-frame motion: more picks where motion
    is high.  ``uniform_mix`` (0..1) blends in a uniform density so static parts are not
    skipped entirely."""

    num_frames: int = 8
    uniform_mix: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("num_frames", self.num_frames)
        if not 0.0 <= self.uniform_mix <= 1.0:
            raise ConfigError(f"uniform_mix must be in [0, 1], got {self.uniform_mix!r}")


@FRAME_SAMPLERS.register("motion")
class MotionSampler(FrameSampler):
    """Motion-weighted sampling; needs ``motion=`` (one score >= 0 per frame, e.g. mean
    optical-flow magnitude).  Stratified quantiles of the motion CDF: deterministic
    midpoints in evaluation, one random draw per stratum in training."""

    name = "motion"
    config_class = MotionConfig

    def _pick(self, n, ts, rng, training, keyframes, motion):
        if motion is None:
            raise ConfigError("the motion sampler needs motion=[...] (one score per frame)")
        w = np.asarray(motion, np.float64).reshape(-1)
        if len(w) != n:
            raise ConfigError(f"motion has {len(w)} scores for {n} frames")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise DataError("bad_motion", "motion scores must be finite and >= 0")
        mix = self.config.uniform_mix
        total = w.sum()
        p = (1 - mix) * (w / total) + mix / n if total > 0 else np.full(n, 1.0 / n)
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        m = self.config.num_frames
        u = (np.arange(m) + (rng.random(m) if training else 0.5)) / m
        return np.minimum(np.searchsorted(cdf, u, side="right"), n - 1)


def build_frame_sampler(name: str, options: Mapping[str, Any] | Any | None = None, *,
                        seed: int = 0) -> FrameSampler:
    """Build the sampler registered as ``name`` from a config object, a dict or None.

    >>> build_frame_sampler("tsn", {"num_segments": 4, "mode": "middle"}).config.num_segments
    4
    """
    cls = FRAME_SAMPLERS.get(name)
    cfg_cls = cls.config_class  # type: ignore[attr-defined]
    if options is None:
        cfg = cfg_cls()
    elif isinstance(options, cfg_cls):
        cfg = options
    elif isinstance(options, Mapping):
        cfg = config_from_dict(cfg_cls, dict(options))
    else:
        raise ConfigError(f"options for frame sampler {name!r} must be a "
                          f"{cfg_cls.__name__} or a mapping, got {type(options).__name__}")
    return cls(cfg, seed=seed)
