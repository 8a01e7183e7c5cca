"""The clips job's configuration: how videos are planned into clips and how they are cut."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..._registry import config_from_dict, config_to_dict
from ...errors import ConfigError
from ...tokenizers.clips import (
    FixedWindowConfig,
    FixedWindowPlanner,
    SceneClipConfig,
    SceneClipPlanner,
)
from ...tokenizers.keyframes import KeyframesConfig

__all__ = ["MODES", "TAILS", "X264_PRESETS", "ClipsConfig"]

MODES = ("fixed", "scenes")
TAILS = ("drop", "keep", "shift")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")


@dataclass(frozen=True, kw_only=True)
class ClipsConfig:
    """Everything that decides the bytes of a clips dataset.

    Planning: ``mode`` ``fixed`` (windows of ``window_s`` every ``stride_s``, default
    ``window_s``; ``tail`` drop | keep | shift the last partial window; clips shorter
    than ``min_clip_s`` dropped) or ``scenes`` (one clip per scene, ``trim_s`` off both
    ends, shorter than ``min_clip_s`` dropped, longer than ``max_clip_s`` split evenly;
    scenes come from the ``keyframes_field_set`` sidecar when the dataset has it, else
    from the detector with ``detector`` options).

    Encoding: libx264 ``preset``/``crf``, ``gop`` keyframe interval in frames (0: the
    encoder's default), ``max_side`` downscale (0: source size), one encoder thread.

    >>> ClipsConfig(mode="scenes", min_clip_s=1.0, max_clip_s=20.0).mode
    'scenes'
    """

    mode: str = "fixed"
    window_s: float = 10.0
    stride_s: float | None = None
    tail: str = "keep"
    min_clip_s: float = 0.0
    max_clip_s: float | None = None
    trim_s: float = 0.0
    keyframes_field_set: str = "keyframes"
    detector: KeyframesConfig = field(default_factory=KeyframesConfig)
    crf: int = 20
    preset: str = "veryfast"
    gop: int = 0
    max_side: int = 0
    max_failure_rate: float = 0.5
    name: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.tail not in TAILS:
            raise ConfigError(f"tail must be one of {', '.join(TAILS)}; got {self.tail!r}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(X264_PRESETS)}; got "
                              f"{self.preset!r}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be an int in [0, 51], got {self.crf!r}")
        for name in ("gop", "max_side"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name} must be an int >= 0 (0: default), got {v!r}")
        if 0 < self.max_side < 16:
            raise ConfigError(f"max_side must be 0 or >= 16 pixels, got {self.max_side}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if isinstance(self.detector, dict):
            object.__setattr__(self, "detector",
                               config_from_dict(KeyframesConfig, self.detector))
        self.planner()  # the planner's own checks (window, stride, lengths)

    def planner(self) -> FixedWindowPlanner | SceneClipPlanner:
        """The clip planner these options describe."""
        if self.mode == "fixed":
            if self.min_clip_s > self.window_s:
                raise ConfigError(f"min_clip_s ({self.min_clip_s}) must be <= window_s "
                                  f"({self.window_s}) in fixed mode")
            return FixedWindowPlanner(FixedWindowConfig(
                length_s=self.window_s, stride_s=self.stride_s, tail=self.tail,
                min_length_s=self.min_clip_s))
        return SceneClipPlanner(SceneClipConfig(trim_s=self.trim_s,
                                                min_length_s=self.min_clip_s,
                                                max_length_s=self.max_clip_s))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipsConfig:
        return config_from_dict(cls, dict(data))


