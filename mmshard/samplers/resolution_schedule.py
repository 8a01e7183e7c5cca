"""Multi-scale resolution curriculum: which resolution a training step (or epoch) uses.

A table of stages (from ``start_step`` on, draw ``resolutions`` with ``weights``); the
draw for a step is a pure function of ``(seed, step)`` (splitmix64, stable across
numpy versions), so every DDP rank agrees without communication.  The Loader takes a
schedule (``Loader(..., resolution=MultiScaleSchedule(...))``) and draws once per epoch
(step = epoch); its images are decoded with the resize policy
``at_resolution(draw)``.

>>> sched = MultiScaleSchedule(MultiScaleConfig(), seed=0)
>>> sched.resolution_at(5), sched.shares_at(25_000)
(224, {224: 0.5, 448: 0.3, 896: 0.2})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .._registry import config_from_dict, config_to_dict
from ..errors import ConfigError

__all__ = ["CurriculumStage", "MultiScaleConfig", "MultiScaleSchedule"]


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class CurriculumStage:
    """From ``start_step`` on, sample ``resolutions`` with the given ``weights``."""

    start_step: int
    resolutions: tuple[int, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.start_step, int) or self.start_step < 0:
            raise ConfigError(f"stage start_step must be an int >= 0, got {self.start_step!r}")
        if not self.resolutions or len(self.resolutions) != len(self.weights):
            raise ConfigError(f"stage at step {self.start_step}: resolutions "
                              f"{self.resolutions} and weights {self.weights} must be "
                              "non-empty and the same length")
        for r in self.resolutions:
            _positive("resolution", r)
        if any(w < 0 for w in self.weights) or not math.isclose(sum(self.weights), 1.0,
                                                                abs_tol=1e-6):
            raise ConfigError(f"stage at step {self.start_step}: weights {self.weights} must "
                              "be >= 0 and sum to 1")


def _default_stages() -> tuple[CurriculumStage, ...]:
    return (
        CurriculumStage(start_step=0, resolutions=(224,), weights=(1.0,)),
        CurriculumStage(start_step=10_000, resolutions=(224, 448), weights=(0.7, 0.3)),
        CurriculumStage(start_step=20_000, resolutions=(224, 448, 896),
                        weights=(0.5, 0.3, 0.2)),
    )


@dataclass(frozen=True, kw_only=True)
class MultiScaleConfig:
    """The curriculum table: stages sorted by ``start_step``, the first starting at 0.

    The default is the seed's table (stage 1: 100 % 224; stage 2: 70 % 224 / 30 % 448;
    stage 3: 50 / 30 / 20 % of 224 / 448 / 896) with stages starting at steps 0, 10k and
    20k; set ``stages`` to your own boundaries.
    """

    stages: tuple[CurriculumStage, ...] = _default_stages()

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, CurriculumStage) else
                       config_from_dict(CurriculumStage, dict(s)) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or stages[0].start_step != 0:
            raise ConfigError("the first curriculum stage must start at step 0")
        starts = [s.start_step for s in stages]
        if starts != sorted(set(starts)):
            raise ConfigError(f"stage start steps must be strictly increasing, got {starts}")


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class MultiScaleSchedule:
    """Deterministic multi-scale resolution curriculum.

    ``resolution_at(step)`` is a pure function of ``(seed, step)`` and the table (a
    splitmix64 hash, stable across numpy versions), so every rank of a DDP job picks the
    same resolution for a step. ``next()`` walks steps; ``state_dict()`` /
    ``load_state_dict()`` resume exactly.

    >>> sched = MultiScaleSchedule(MultiScaleConfig(), seed=0)
    >>> first = [sched.next() for _ in range(3)]; state = sched.state_dict()
    >>> a = [sched.next() for _ in range(3)]
    >>> sched.load_state_dict(state); a == [sched.next() for _ in range(3)]
    True
    """

    def __init__(self, config: MultiScaleConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or MultiScaleConfig()
        self.seed = int(seed)
        self.step = 0

    def stage_at(self, step: int) -> int:
        """Index of the stage in force at ``step``."""
        idx = 0
        for i, s in enumerate(self.config.stages):
            if step >= s.start_step:
                idx = i
        return idx

    def shares_at(self, step: int) -> dict[int, float]:
        """``{resolution: weight}`` in force at ``step``."""
        s = self.config.stages[self.stage_at(step)]
        return dict(zip(s.resolutions, s.weights))

    def resolution_at(self, step: int) -> int:
        """The resolution sampled for ``step`` (pure function of seed, step and table)."""
        if step < 0:
            raise ConfigError(f"step must be >= 0, got {step}")
        stage = self.config.stages[self.stage_at(step)]
        u = (_splitmix64((_splitmix64(self.seed & _MASK64) ^ step) & _MASK64) >> 11) / 2.0**53
        acc = 0.0
        for res, w in zip(stage.resolutions, stage.weights):
            acc += w
            if u < acc:
                return res
        return stage.resolutions[-1]

    def next(self) -> int:
        """The resolution for the current step, then advance one step."""
        res = self.resolution_at(self.step)
        self.step += 1
        return res

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step,
                "stages": config_to_dict(self.config)["stages"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``seed`` and ``step``; a state saved with another table is refused."""
        mine = config_to_dict(self.config)["stages"]
        theirs = state.get("stages", mine)
        if [dict(s) for s in theirs] != [dict(s) for s in mine]:
            raise ConfigError("curriculum state was saved with a different stage table; "
                              "build the schedule with the same MultiScaleConfig")
        self.seed = int(state["seed"])
        self.step = int(state["step"])
