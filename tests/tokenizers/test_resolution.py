"""Resolution policies, NaViT packing plans and the multi-scale curriculum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmshard.errors import ConfigError, DataError
from mmshard.tokenizers.resolution import (
    RESOLUTION_POLICIES,
    CurriculumStage,
    FixedSize,
    MaxPatches,
    MultiScaleConfig,
    MultiScaleSchedule,
    PadToMultiple,
    ResolutionPolicy,
    ShortestSide,
    plan_packing,
    smart_resize,
)

sides = st.integers(min_value=1, max_value=4000)
SETTINGS = settings(max_examples=60, deadline=None)


def test_vit_l14_at_224_is_256_patches_plus_cls_257():
    policy = FixedSize(height=224, width=224, patch=14, extra_tokens=1)
    plan = policy.plan(480, 640)
    assert plan.grid == (16, 16)
    assert plan.num_patches == 256
    assert plan.num_tokens == 257
    arr, info = policy.apply(np.zeros((480, 640, 3), np.uint8))
    assert arr.shape == (224, 224, 3) and info == plan


def test_registry_names_and_dict_round_trip():
    assert RESOLUTION_POLICIES.names() == ["fixed", "max_patches", "pad_multiple", "shortest"]
    for policy in (FixedSize(height=64, width=96), ShortestSide(size=256, max_size=512),
                   PadToMultiple(patch=16, merge=2, max_pixels=512 * 512),
                   MaxPatches(max_patches=1024, patch=16)):
        d = json.loads(json.dumps(policy.to_dict()))
        assert ResolutionPolicy.from_dict(d) == policy


@pytest.mark.parametrize("bad", [
    lambda: FixedSize(height=0),
    lambda: ShortestSide(size=256, max_size=100),
    lambda: PadToMultiple(mode="crop"),
    lambda: PadToMultiple(patch=14, max_pixels=100),
    lambda: MaxPatches(max_patches=0),
    lambda: FixedSize(patch=14, extra_tokens=-1),
])
def test_bad_configs_are_config_errors(bad):
    with pytest.raises(ConfigError):
        bad()


def test_unknown_policy_lists_allowed_names():
    with pytest.raises(ConfigError, match="max_patches"):
        ResolutionPolicy.from_dict({"policy": "nope"})


def test_shortest_side_keeps_aspect_and_caps_longest():
    assert ShortestSide(size=224).plan(480, 640).to_dict()["height"] == 224
    plan = ShortestSide(size=224, max_size=300).plan(100, 1000)
    assert plan.width == 300 and plan.height == 30
    assert plan.grid == (30 // 14, 300 // 14)


def test_smart_resize_matches_qwen2vl_rounding():
    # nearest multiple of 28 per side when within budget
    assert smart_resize(480, 640) == (476, 644)
    # over budget: scaled down then floored to multiples of 28, area within budget
    h, w = smart_resize(4000, 3000, max_pixels=1_003_520)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 1_003_520
    # under budget: scaled up then ceiled
    h, w = smart_resize(20, 20)
    assert (h, w) == (56, 56)
    with pytest.raises(DataError, match="aspect"):
        smart_resize(10, 3000)


def test_pad_apply_pads_bottom_right_and_records_valid_region():
    img = np.full((20, 30, 3), 200, np.uint8)
    arr, plan = PadToMultiple(patch=14, pad_value=7).apply(Image.fromarray(img))
    assert arr.shape == (28, 42, 3)
    top, left, h, w = plan.valid
    assert (top, left, h, w) == (0, 0, 20, 30)
    assert (arr[:20, :30] == 200).all()
    assert (arr[20:] == 7).all() and (arr[:, 30:] == 7).all()


def test_apply_float_and_grayscale_arrays():
    gray = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    out, plan = ShortestSide(size=20).apply(gray)
    assert out.dtype == np.float32 and out.shape == (20, 25)
    assert 0.2 < out.mean() < 0.8
    out, _ = FixedSize(height=8, width=8).apply(np.zeros((16, 16, 2), np.uint8))
    assert out.shape == (8, 8, 2)
    with pytest.raises(DataError):
        FixedSize().apply(np.zeros((4, 4, 3), np.int64))


@SETTINGS
@given(h=sides, w=sides, n=st.integers(1, 4096), p=st.sampled_from([8, 14, 16, 32]))
def test_pix2struct_never_exceeds_budget(h, w, n, p):
    policy = MaxPatches(max_patches=n, patch=p)
    plan = policy.plan(h, w)
    rows, cols = plan.grid
    assert 1 <= rows and 1 <= cols
    assert plan.num_patches <= n
    assert policy.sequence_padding(plan) >= 0
    assert (plan.height, plan.width) == (rows * p, cols * p)
    # aspect error from the floors alone when neither side is clamped
    scale = math.sqrt(n * (p / h) * (p / w))
    if min(rows, cols) >= 2 and math.floor(scale * h / p) <= n and math.floor(scale * w / p) <= n:
        err = abs((rows / cols) / (h / w) - 1)
        assert err <= 1 / (min(rows, cols) - 1) + 1e-9


@SETTINGS
@given(h=sides, w=sides, p=st.sampled_from([14, 16]), merge=st.sampled_from([1, 2]),
       max_px=st.one_of(st.none(), st.integers(64 * 64, 2_000_000)),
       min_px=st.one_of(st.none(), st.integers(1, 64 * 64)))
def test_pad_multiple_canvas_is_multiple_and_in_budget(h, w, p, merge, max_px, min_px):
    policy = PadToMultiple(patch=p, merge=merge, max_pixels=max_px, min_pixels=min_px)
    plan = policy.plan(h, w)
    f = p * merge
    assert plan.canvas_height % f == 0 and plan.canvas_width % f == 0
    assert plan.height <= plan.canvas_height < plan.height + f
    assert plan.width <= plan.canvas_width < plan.width + f
    if max_px is not None:
        assert plan.canvas_height * plan.canvas_width <= max_px
    # the documented aspect bound (content sides >= 2, no one-pixel clamp)
    m = min(plan.height, plan.width)
    s = plan.height / h
    if m >= 2 and min(h, w) * s >= 1:
        err = abs((plan.height / plan.width) / (h / w) - 1)
        assert err <= 1 / (m - 1) + 1e-9


@SETTINGS
@given(h=st.integers(10, 3000), w=st.integers(10, 3000))
def test_pad_multiple_resize_mode_is_multiple(h, w):
    if max(h, w) / min(h, w) > 200:
        return
    plan = PadToMultiple(patch=14, merge=2, mode="resize").plan(h, w)
    assert plan.canvas_height == plan.height and plan.canvas_width == plan.width
    assert plan.height % 28 == 0 and plan.width % 28 == 0
    assert 56 * 56 <= plan.height * plan.width <= 14 * 14 * 4 * 1280


@SETTINGS
@given(sizes=st.lists(st.tuples(st.integers(1, 600), st.integers(1, 600)), max_size=40),
       seq_len=st.integers(16, 2048), algorithm=st.sampled_from(["ffd", "greedy"]),
       extra=st.integers(0, 2))
def test_packing_places_every_image_once_within_seq_len(sizes, seq_len, algorithm, extra):
    policy = PadToMultiple(patch=16, extra_tokens=extra)
    plan = plan_packing(sizes, seq_len=seq_len, policy=policy, algorithm=algorithm,
                        oversize="shrink")
    placed = sorted(i for s in plan.sequences for i in s.items)
    assert placed == list(range(len(sizes)))
    for seq in plan.sequences:
        assert seq.used <= seq_len and seq.padding >= 0
        ids = seq.segment_ids()
        assert ids.shape == (seq_len,)
        assert (ids == 0).sum() == seq.padding
        for k, n in enumerate(seq.lengths, start=1):
            assert (ids == k).sum() == n
        pos = seq.patch_positions()
        assert (pos[:, 0] >= 0).sum() == seq.used - extra * len(seq.items)
    for i in plan.shrunk:
        assert plan.plans[i].num_tokens <= seq_len
    # deterministic
    assert plan == plan_packing(sizes, seq_len=seq_len, policy=policy, algorithm=algorithm,
                                oversize="shrink")


def test_greedy_keeps_input_order_and_ffd_packs_tighter():
    sizes = [(16, 16 * 3), (16, 16 * 8), (16, 16 * 3), (16, 16 * 7), (16, 16 * 2)]
    policy = PadToMultiple(patch=16)
    greedy = plan_packing(sizes, seq_len=10, policy=policy, algorithm="greedy")
    order = [i for s in greedy.sequences for i in s.items]
    assert order == [0, 1, 2, 3, 4]
    ffd = plan_packing(sizes, seq_len=10, policy=policy, algorithm="ffd")
    assert len(ffd.sequences) <= len(greedy.sequences)
    assert len(ffd.sequences) == 3 and ffd.efficiency == pytest.approx(23 / 30)
    loc = ffd.location()
    assert sorted(loc) == list(range(5))


def test_oversize_image_is_a_clear_error_or_shrunk():
    policy = PadToMultiple(patch=16, extra_tokens=1)
    with pytest.raises(DataError, match="image 1 .*seq_len 64"):
        plan_packing([(32, 32), (512, 512)], seq_len=64, policy=policy)
    plan = plan_packing([(32, 32), (512, 512)], seq_len=64, policy=policy, oversize="shrink")
    assert plan.shrunk == (1,)
    assert plan.plans[1].num_tokens <= 64 and plan.plans[1].grid == (7, 7)
    with pytest.raises(ConfigError, match="ffd"):
        plan_packing([], seq_len=8, policy=policy, algorithm="best")


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
