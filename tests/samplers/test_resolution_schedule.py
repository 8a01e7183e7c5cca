"""The multi-scale resolution curriculum (samplers/resolution_schedule.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.samplers.resolution_schedule import (
    CurriculumStage,
    MultiScaleConfig,
    MultiScaleSchedule,
)


def test_curriculum_default_table_and_shares():
    sched = MultiScaleSchedule(seed=3)
    assert sched.shares_at(0) == {224: 1.0}
    assert sched.shares_at(15_000) == {224: 0.7, 448: 0.3}
    assert sched.shares_at(10**9) == {224: 0.5, 448: 0.3, 896: 0.2}
    assert {sched.resolution_at(s) for s in range(500)} == {224}
    draws = [sched.resolution_at(s) for s in range(30_000, 36_000)]
    shares = {r: draws.count(r) / len(draws) for r in (224, 448, 896)}
    assert shares[224] == pytest.approx(0.5, abs=0.03)
    assert shares[448] == pytest.approx(0.3, abs=0.03)
    assert shares[896] == pytest.approx(0.2, abs=0.03)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(0, 50))
def test_curriculum_is_deterministic_and_resumes_exactly(seed, steps):
    cfg = MultiScaleConfig(stages=(
        CurriculumStage(start_step=0, resolutions=(128, 256), weights=(0.5, 0.5)),
        CurriculumStage(start_step=20, resolutions=(256, 512), weights=(0.25, 0.75)),
    ))
    a = MultiScaleSchedule(cfg, seed=seed)
    for _ in range(steps):
        a.next()
    state = json.loads(json.dumps(a.state_dict()))
    expect = [a.next() for _ in range(30)]
    b = MultiScaleSchedule(cfg, seed=0)
    b.load_state_dict(state)
    assert [b.next() for _ in range(30)] == expect
    assert expect == [MultiScaleSchedule(cfg, seed=seed).resolution_at(s)
                      for s in range(steps, steps + 30)]


def test_curriculum_config_validation_and_table_mismatch():
    with pytest.raises(ConfigError, match="sum to 1"):
        CurriculumStage(start_step=0, resolutions=(224, 448), weights=(0.5, 0.6))
    with pytest.raises(ConfigError, match="step 0"):
        MultiScaleConfig(stages=(CurriculumStage(start_step=5, resolutions=(224,),
                                                 weights=(1.0,)),))
    cfg = MultiScaleConfig(stages=({"start_step": 0, "resolutions": [224], "weights": [1.0]},))
    assert cfg.stages[0].resolutions == (224,)
    other = MultiScaleSchedule(cfg)
    with pytest.raises(ConfigError, match="different stage table"):
        other.load_state_dict(MultiScaleSchedule().state_dict())
