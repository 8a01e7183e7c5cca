"""The one resize family (mmshard/media/resize.py): plans, pixels, configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmshard.errors import ConfigError, DataError
from mmshard.media.resize import (
    RESIZES,
    CenterCrop,
    FixedResize,
    Longest,
    MaxPatches,
    NoResize,
    PadToMultiple,
    Shortest,
    build_resize,
    resize_from_dict,
    smart_resize,
)

sides = st.integers(min_value=1, max_value=4000)
SETTINGS = settings(max_examples=60, deadline=None)


def _near(value: int, exact: float) -> bool:
    """A side rounded from ``exact`` (never below one pixel)."""
    return abs(value - max(1.0, exact)) <= 0.5 + 1e-9


def test_vit_l14_at_224_is_256_patches_plus_cls_257():
    policy = FixedResize(size=(224, 224), patch=14, extra_tokens=1)
    plan = policy.plan(480, 640)
    assert (plan.grid, plan.num_patches, plan.num_tokens) == ((16, 16), 256, 257)
    arr, info = policy.apply(np.zeros((480, 640, 3), np.uint8))
    assert arr.shape == (224, 224, 3) and info == plan


def test_registry_names_and_dict_round_trip():
    assert set(RESIZES.names()) >= {"none", "fixed", "shortest", "longest", "center_crop",
                                    "pad_multiple", "max_patches"}
    for policy in (NoResize(), FixedResize(size=(64, 96)), Shortest(size=256, max_size=512),
                   Longest(size=300, upscale=False), CenterCrop(size=(32, 48)),
                   PadToMultiple(patch=16, merge=2, max_pixels=512 * 512),
                   MaxPatches(max_patches=1024, patch=16, resample="lanczos")):
        d = json.loads(json.dumps(policy.to_dict()))
        assert resize_from_dict(d) == policy
    # dicts written by the old tokenizers.resolution FixedSize still load
    assert resize_from_dict({"policy": "fixed", "height": 32, "width": 48}).size == (32, 48)


@pytest.mark.parametrize("bad", [
    lambda: FixedResize(size=(0, 4)),
    lambda: Shortest(size=256, max_size=100),
    lambda: PadToMultiple(mode="crop"),
    lambda: PadToMultiple(patch=14, max_pixels=100),
    lambda: MaxPatches(max_patches=0),
    lambda: Longest(size=8, extra_tokens=-1),
    lambda: CenterCrop(size=8, resample="sinc"),
])
def test_bad_configs_are_config_errors(bad):
    with pytest.raises(ConfigError):
        bad()


def test_unknown_policy_or_option_lists_allowed_names():
    with pytest.raises(ConfigError, match="max_patches"):
        resize_from_dict({"policy": "nope"})
    with pytest.raises(ConfigError, match="allowed: .*size"):
        build_resize("longest", sz=3)


def test_shortest_side_keeps_aspect_and_caps_longest():
    assert Shortest(size=224).plan(480, 640).height == 224
    plan = Shortest(size=224, max_size=300).plan(100, 1000)
    assert (plan.height, plan.width) == (30, 300)
    assert plan.grid == (30 // 16, 300 // 16)


def test_smart_resize_matches_qwen2vl_rounding():
    assert smart_resize(480, 640) == (476, 644)
    h, w = smart_resize(4000, 3000, max_pixels=1_003_520)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 1_003_520
    assert smart_resize(20, 20) == (56, 56)
    with pytest.raises(DataError, match="aspect"):
        smart_resize(10, 3000)


def test_pad_apply_pads_bottom_right_and_records_valid_region():
    img = np.full((20, 30, 3), 200, np.uint8)
    arr, plan = PadToMultiple(patch=14, pad_value=7).apply(Image.fromarray(img))
    assert arr.shape == (28, 42, 3)
    assert plan.valid == (0, 0, 20, 30)
    assert (arr[:20, :30] == 200).all()
    assert (arr[20:] == 7).all() and (arr[:, 30:] == 7).all()


def test_apply_float_and_grayscale_arrays():
    gray = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    out, _ = Shortest(size=20).apply(gray)
    assert out.dtype == np.float32 and out.shape == (20, 25)
    assert 0.2 < out.mean() < 0.8
    out, _ = FixedResize(size=(8, 8)).apply(np.zeros((16, 16, 2), np.uint8))
    assert out.shape == (8, 8, 2) and out.dtype == np.uint8
    with pytest.raises(DataError):
        FixedResize().apply(np.zeros((4, 4, 3), np.int64))


def test_a_bucket_hint_wins_and_a_resolution_rescales():
    img = Image.new("RGB", (640, 480))
    assert Longest(size=100)(img, (32, 48)).size == (48, 32)
    assert FixedResize(size=(8, 8))(img, (16, 24)).size == (24, 16)
    assert Longest(size=100).at_resolution(200).plan(480, 640).resize_width == 200
    assert MaxPatches(max_patches=4, patch=16).at_resolution(64).max_patches == 16
    assert NoResize().at_resolution(64) == NoResize()


@SETTINGS
@given(h=sides, w=sides, size=st.integers(1, 1024), up=st.booleans())
def test_shortest_and_longest_hit_their_target_keeping_the_aspect(h, w, size, up):
    for policy, side in ((Shortest(size=size, upscale=up), min),
                         (Longest(size=size, upscale=up), max)):
        plan = policy.plan(h, w)
        scale = size / side(h, w)
        if scale >= 1 and not up:  # never grown
            assert (plan.height, plan.width) == (h, w)
            continue
        assert _near(plan.height, h * scale) and _near(plan.width, w * scale)
        assert side(plan.height, plan.width) == size or min(h, w) * scale < 1
        assert plan.canvas_height == plan.height and plan.canvas_width == plan.width


@SETTINGS
@given(h=sides, w=sides, th=st.integers(1, 512), tw=st.integers(1, 512), up=st.booleans())
def test_center_crop_lands_inside_the_scaled_image_at_the_target(h, w, th, tw, up):
    plan = CenterCrop(size=(th, tw), upscale=up).plan(h, w)
    assert 0 <= plan.top and plan.top + plan.height <= plan.resize_height
    assert 0 <= plan.left and plan.left + plan.width <= plan.resize_width
    if up or max(th / h, tw / w) < 1:
        assert (plan.height, plan.width) == (th, tw)
    else:
        assert plan.height <= th and plan.width <= tw


@SETTINGS
@given(h=sides, w=sides, p=st.sampled_from([14, 16]), merge=st.sampled_from([1, 2]),
       size=st.sampled_from([0, 224, 1000]), up=st.booleans(),
       max_px=st.one_of(st.none(), st.integers(64 * 64, 2_000_000)),
       min_px=st.one_of(st.none(), st.integers(1, 64 * 64)))
def test_pad_multiple_canvas_is_a_multiple_and_in_budget(h, w, p, merge, size, up, max_px,
                                                         min_px):
    policy = PadToMultiple(patch=p, merge=merge, size=size, upscale=up, max_pixels=max_px,
                           min_pixels=min_px)
    plan = policy.plan(h, w)
    f = p * merge
    assert plan.canvas_height % f == 0 and plan.canvas_width % f == 0
    assert plan.height <= plan.canvas_height < plan.height + f
    assert plan.width <= plan.canvas_width < plan.width + f
    assert plan.valid == (0, 0, plan.height, plan.width)
    if max_px is not None:
        assert plan.canvas_height * plan.canvas_width <= max_px
    if size and max_px is None and min_px is None:
        assert max(plan.height, plan.width) <= max(size, max(h, w) if not up else size)
    m = min(plan.height, plan.width)
    if m >= 2 and min(h, w) * plan.height / h >= 1:  # the documented aspect bound
        err = abs((plan.height / plan.width) / (h / w) - 1)
        assert err <= 1 / (m - 1) + 1e-9


@SETTINGS
@given(h=st.integers(10, 3000), w=st.integers(10, 3000))
def test_pad_multiple_resize_mode_is_qwen2vl_smart_resize(h, w):
    if max(h, w) / min(h, w) > 200:
        return
    plan = PadToMultiple(patch=14, merge=2, mode="resize").plan(h, w)
    assert (plan.canvas_height, plan.canvas_width) == (plan.height, plan.width)
    assert (plan.height, plan.width) == smart_resize(h, w)
    assert 56 * 56 <= plan.height * plan.width <= 14 * 14 * 4 * 1280


@SETTINGS
@given(h=sides, w=sides, n=st.integers(1, 4096), p=st.sampled_from([8, 14, 16, 32]))
def test_max_patches_never_exceeds_its_budget(h, w, n, p):
    policy = MaxPatches(max_patches=n, patch=p)
    plan = policy.plan(h, w)
    rows, cols = plan.grid
    assert rows >= 1 and cols >= 1 and plan.num_patches <= n
    assert policy.sequence_padding(plan) >= 0
    assert (plan.height, plan.width) == (rows * p, cols * p)
    scale = math.sqrt(n * (p / h) * (p / w))
    if min(rows, cols) >= 2 and math.floor(scale * h / p) <= n and math.floor(scale * w / p) <= n:
        assert abs((rows / cols) / (h / w) - 1) <= 1 / (min(rows, cols) - 1) + 1e-9


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90),
       name=st.sampled_from(["none", "fixed", "shortest", "longest", "center_crop",
                             "pad_multiple", "max_patches"]),
       mode=st.sampled_from(["RGB", "L"]))
def test_pixels_follow_the_plan(h, w, name, mode):
    opts = {"fixed": {"size": (12, 20)}, "shortest": {"size": 24}, "longest": {"size": 24},
            "center_crop": {"size": 16}, "pad_multiple": {"patch": 8, "pad_value": 9},
            "max_patches": {"max_patches": 12, "patch": 8}}.get(name, {})
    policy = build_resize(name, **opts)
    img = Image.new(mode, (w, h), 200)
    plan = policy.plan(h, w)
    out = policy.apply_pil(img)
    assert out.size == (plan.canvas_width, plan.canvas_height) and out.mode == mode
    arr, plan2 = policy.apply(np.asarray(img))
    assert plan2 == plan and arr.shape[:2] == (plan.canvas_height, plan.canvas_width)
    if plan.padding_pixels:
        assert (arr[plan.height:] == 9).all() and (arr[:, plan.width:] == 9).all()
