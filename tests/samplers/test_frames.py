"""Frame samplers: the seed exercise, per-sampler semantics, and invariants (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError, DataError
from mmshard.samplers.frames import (
    FRAME_SAMPLERS,
    FpsConfig,
    FpsSampler,
    KeyframeSampler,
    KeyframeSamplerConfig,
    MotionConfig,
    MotionSampler,
    StrideConfig,
    StrideSampler,
    TSNConfig,
    TSNSampler,
    UniformConfig,
    UniformSampler,
    build_frame_sampler,
)

PROPS = settings(max_examples=40, deadline=None)


# ---- the seed exercise ------------------------------------------------------------------

def test_seed_exercise_32_frames_of_a_10_minute_30fps_video():
    n, fps = 10 * 60 * 30, 30.0
    s = TSNSampler(TSNConfig(num_segments=32, mode="random", min_gap_s=0.5), seed=7)
    seg = n / 32
    train = s.sample(n, fps, key="vid_a")
    ev = s.sample(n, fps, key="vid_a", training=False)
    for out in (train, ev):
        assert len(out) == 32
        assert np.all(np.diff(out.timestamps) >= 0.5 - 1e-9)
        assert out.indices.min() >= 0 and out.indices.max() < n
        np.testing.assert_allclose(out.timestamps, out.indices / fps)
    # evaluation: exactly the middle frame of each segment, the same every epoch
    assert ev.indices.tolist() == [int((k + 0.5) * seg) for k in range(32)]
    s.set_epoch(5)
    assert s.sample(n, fps, key="vid_a", training=False).indices.tolist() == ev.indices.tolist()
    # training: one frame inside each segment, changing with the epoch
    assert all(k * seg <= i < (k + 1) * seg for k, i in enumerate(train.indices))
    assert s.sample(n, fps, key="vid_a").indices.tolist() != train.indices.tolist()


def test_min_gap_repairs_adjacent_random_picks():
    # 4 segments over 2 s at 10 fps: random picks may land 0.1 s apart; gap 0.4 s holds
    s = TSNSampler(TSNConfig(num_segments=4, mode="random", min_gap_s=0.4))
    for epoch in range(20):
        s.set_epoch(epoch)
        out = s.sample(20, 10.0)
        assert np.all(np.diff(out.timestamps) >= 0.4 - 1e-9)


def test_min_gap_impossible_raises_video_too_short():
    s = UniformSampler(UniformConfig(num_frames=10, min_gap_s=1.0))
    with pytest.raises(DataError) as ei:
        s.sample(50, 25.0)  # 2 s video cannot hold 10 frames 1 s apart
    assert ei.value.reason == "video_too_short"


# ---- semantics of each sampler ----------------------------------------------------------

def test_stride_every_k_with_window():
    s = StrideSampler(StrideConfig(every=5, max_frames=3))
    assert s.sample(100, 25.0, training=False).indices.tolist() == [40, 45, 50]
    out = s.sample(100, 25.0).indices
    assert len(out) == 3 and np.all(np.diff(out) == 5)


def test_tsn_dense_takes_consecutive_frames_per_segment():
    s = TSNSampler(TSNConfig(num_segments=2, mode="dense", frames_per_segment=3,
                             dense_stride=2))
    ev = s.sample(100, 25.0, training=False).indices.tolist()
    assert len(ev) == 6 and ev[:3] == [ev[0], ev[0] + 2, ev[0] + 4]
    assert all(i < 50 for i in ev[:3]) and all(i >= 50 for i in ev[3:])
    tr = s.sample(100, 25.0).indices
    assert np.all(np.diff(tr[:3]) == 2) and np.all(np.diff(tr[3:]) == 2)


def test_tsn_short_video_repeats_frames():
    out = TSNSampler(TSNConfig(num_segments=8, mode="middle")).sample(3, 25.0)
    assert len(out) == 8 and set(out.indices.tolist()) <= {0, 1, 2}
    assert np.all(np.diff(out.indices) >= 0)


def test_fps_sampler_uses_vfr_timestamps():
    # frames at irregular times; 2 fps targets 0, .5, 1.0, 1.5
    ts = [0.0, 0.05, 0.3, 0.49, 0.7, 1.2, 1.55, 1.6]
    out = FpsSampler(FpsConfig(target_fps=2.0)).sample(len(ts), 5.0, timestamps=ts,
                                                      training=False)
    assert out.indices.tolist() == [0, 3, 4, 5]
    np.testing.assert_allclose(out.timestamps, [ts[i] for i in [0, 3, 4, 5]])


def test_fps_sampler_resamples_rate():
    out = FpsSampler(FpsConfig(target_fps=5.0)).sample(300, 30.0, training=False)
    assert out.indices.tolist() == list(range(0, 300, 6))


def test_keyframe_sampler_aligns_to_keyframes_and_fills():
    kf = [0, 40, 80, 120, 160]
    s = KeyframeSampler(KeyframeSamplerConfig(num_frames=3))
    assert set(s.sample(200, 25.0, keyframes=kf).indices.tolist()) <= set(kf)
    assert s.sample(200, 25.0, keyframes=kf, training=False).indices.tolist() == [0, 40, 120]
    many = KeyframeSampler(KeyframeSamplerConfig(num_frames=8)).sample(
        200, 25.0, keyframes=kf, training=False)
    assert len(many) == 8 and set(kf) <= set(many.indices.tolist())
    with pytest.raises(ConfigError, match="keyframes"):
        s.sample(200, 25.0)


def test_motion_sampler_puts_more_frames_where_motion_is_high():
    motion = np.full(300, 0.01)
    motion[200:250] = 5.0
    s = MotionSampler(MotionConfig(num_frames=16, uniform_mix=0.1))
    for training in (False, True):
        idx = s.sample(300, 30.0, motion=motion, training=training).indices
        assert np.sum((idx >= 200) & (idx < 250)) >= 10
    even = s.sample(300, 30.0, motion=np.ones(300), training=False).indices
    assert even.tolist() == UniformSampler(UniformConfig(num_frames=16)).sample(
        300, 30.0).indices.tolist()


def test_jitter_moves_frames_by_at_most_j_and_only_in_training():
    base = UniformSampler(UniformConfig(num_frames=10)).sample(1000, 25.0).indices
    s = UniformSampler(UniformConfig(num_frames=10, jitter=3))
    assert s.sample(1000, 25.0, training=False).indices.tolist() == base.tolist()
    moved = s.sample(1000, 25.0).indices
    assert np.all(np.abs(moved - base) <= 3) and moved.tolist() != base.tolist()
    edge = UniformSampler(UniformConfig(num_frames=5, jitter=50)).sample(10, 25.0).indices
    assert edge.min() >= 0 and edge.max() <= 9


# ---- registry, config, state ------------------------------------------------------------

def test_registry_and_config_validation():
    assert FRAME_SAMPLERS.names() == ["fps", "keyframe", "motion", "stride", "tsn", "uniform"]
    s = build_frame_sampler("tsn", {"num_segments": 4, "mode": "dense",
                                    "frames_per_segment": 2}, seed=3)
    assert isinstance(s, TSNSampler) and s.seed == 3
    with pytest.raises(ConfigError, match="middle, random, dense"):
        TSNConfig(mode="sideways")
    with pytest.raises(ConfigError, match="allowed"):
        build_frame_sampler("tsn", {"segments": 4})
    with pytest.raises(ConfigError, match="known"):
        build_frame_sampler("nope")
    with pytest.raises(ConfigError):
        UniformConfig(num_frames=0)


def test_state_dict_round_trip_resumes_exactly():
    a = TSNSampler(TSNConfig(num_segments=6, jitter=2), seed=11)
    a.set_epoch(4)
    b = TSNSampler(TSNConfig(num_segments=2), seed=0)
    b.load_state_dict(a.state_dict())
    assert b.config == a.config and (b.seed, b.epoch) == (11, 4)
    assert b.sample(500, 25.0, key="k").indices.tolist() == \
        a.sample(500, 25.0, key="k").indices.tolist()
    with pytest.raises(ConfigError):
        UniformSampler().load_state_dict(a.state_dict())


# ---- invariants -------------------------------------------------------------------------

def _samplers(draw) -> object:
    kind = draw(st.sampled_from(["stride", "uniform", "tsn", "fps", "motion", "keyframe"]))
    jitter = draw(st.integers(0, 5))
    if kind == "stride":
        return StrideSampler(StrideConfig(every=draw(st.integers(1, 20)), jitter=jitter,
                                          max_frames=draw(st.none() | st.integers(1, 30))))
    if kind == "uniform":
        return UniformSampler(UniformConfig(num_frames=draw(st.integers(1, 40)), jitter=jitter))
    if kind == "tsn":
        mode = draw(st.sampled_from(["middle", "random", "dense"]))
        return TSNSampler(TSNConfig(num_segments=draw(st.integers(1, 20)), mode=mode,
                                    frames_per_segment=draw(st.integers(1, 4))
                                    if mode == "dense" else 1, jitter=jitter))
    if kind == "fps":
        return FpsSampler(FpsConfig(target_fps=draw(st.floats(0.2, 40.0)), jitter=jitter))
    if kind == "keyframe":
        return KeyframeSampler(KeyframeSamplerConfig(num_frames=draw(st.integers(1, 20))))
    return MotionSampler(MotionConfig(num_frames=draw(st.integers(1, 40)), jitter=jitter))


def _expected_count(s, n: int) -> int | None:
    c = s.config
    if isinstance(s, (UniformSampler, MotionSampler, KeyframeSampler)):
        return c.num_frames
    if isinstance(s, TSNSampler):
        return c.num_segments * c.frames_per_segment
    return None


@PROPS
@given(data=st.data(), n=st.integers(1, 3000), fps=st.sampled_from([10.0, 24.0, 30.0]),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 50), training=st.booleans())
def test_indices_sorted_in_bounds_counted_and_deterministic(data, n, fps, seed, epoch,
                                                            training):
    s = data.draw(st.composite(lambda draw: _samplers(draw))())
    s.seed = seed
    s.set_epoch(epoch)
    kw = {"motion": np.abs(np.sin(np.arange(n) / 7.0)),
          "keyframes": list(range(0, n, max(1, n // 6)))}
    a = s.sample(n, fps, key="v1", training=training, **kw)
    b = s.sample(n, fps, key="v1", training=training, **kw)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.dtype == np.int64
    assert np.all(np.diff(a.indices) >= 0)
    assert len(a) == 0 or (a.indices.min() >= 0 and a.indices.max() < n)
    np.testing.assert_allclose(a.timestamps, a.indices / fps)
    want = _expected_count(s, n)
    if want is not None:
        assert len(a) == want
    assert len(a) >= 1


@PROPS
@given(n=st.integers(300, 20000), segs=st.integers(2, 32), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 1000))
def test_random_modes_differ_between_epochs_and_keys(n, segs, seed, epoch):
    s = TSNSampler(TSNConfig(num_segments=segs, mode="random"), seed=seed)
    s.set_epoch(epoch)
    a = s.sample(n, 30.0, key="x").indices.tolist()
    s.set_epoch(epoch + 1)
    assert s.sample(n, 30.0, key="x").indices.tolist() != a
    s.set_epoch(epoch)
    assert s.sample(n, 30.0, key="y").indices.tolist() != a


@PROPS
@given(n=st.integers(2, 5000), count=st.integers(2, 40), gap=st.floats(0.01, 3.0),
       seed=st.integers(0, 2**31), jitter=st.integers(0, 10))
def test_min_gap_holds_or_raises(n, count, gap, seed, jitter):
    s = TSNSampler(TSNConfig(num_segments=count, mode="random", min_gap_s=gap, jitter=jitter),
                   seed=seed)
    fps = 25.0
    try:
        out = s.sample(n, fps)
    except DataError as e:
        assert e.reason == "video_too_short"
        step = int(np.ceil(gap * fps - 1e-6))  # frames one gap needs on the grid
        assert (count - 1) * step > n - 1
        return
    assert len(out) == count
    assert np.all(np.diff(out.timestamps) >= gap - 1e-6)
    assert out.indices.min() >= 0 and out.indices.max() < n
