"""Clip plans: fixed windows and scene clips; coverage, overlap, keys, groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError, DataError
from mmshard.tokenizers.clips import (
    CLIP_PLANNERS,
    FixedWindowConfig,
    FixedWindowPlanner,
    SceneClipConfig,
    SceneClipPlanner,
    clip_key,
)

PROPS = settings(max_examples=60, deadline=None)


def spans(clips):
    return [(c.start_frame, c.end_frame) for c in clips]


def test_non_overlapping_windows_with_tail_policies():
    kw = dict(num_frames=250, fps=25.0)  # 10 s
    def plan(**cfg):
        return FixedWindowPlanner(FixedWindowConfig(length_s=4.0, **cfg)).plan("v", **kw)
    assert spans(plan(tail="drop")) == [(0, 100), (100, 200)]
    assert spans(plan(tail="keep")) == [(0, 100), (100, 200), (200, 250)]
    assert spans(plan(tail="keep", min_length_s=3.0)) == [(0, 100), (100, 200)]
    assert spans(plan(tail="shift")) == [(0, 100), (100, 200), (150, 250)]
    last = plan(tail="keep")[-1]
    assert (last.start_time, last.end_time) == (8.0, 10.0)


def test_overlapping_and_gapped_windows():
    over = FixedWindowPlanner(FixedWindowConfig(length_s=2.0, stride_s=1.0)).plan(
        "v", num_frames=100, fps=25.0)
    assert spans(over) == [(0, 50), (25, 75), (50, 100)]
    gaps = FixedWindowPlanner(FixedWindowConfig(length_s=1.0, stride_s=2.0, tail="drop")).plan(
        "v", num_frames=100, fps=25.0)
    assert spans(gaps) == [(0, 25), (50, 75)]


def test_short_video_gives_one_whole_clip_unless_dropped():
    cfg = FixedWindowConfig(length_s=10.0)
    assert spans(FixedWindowPlanner(cfg).plan("v", num_frames=30, fps=30.0)) == [(0, 30)]
    drop = FixedWindowConfig(length_s=10.0, tail="drop")
    assert FixedWindowPlanner(drop).plan("v", num_frames=30, fps=30.0) == []


def test_windows_follow_vfr_timestamps():
    ts = [0.0, 0.5, 0.6, 0.7, 1.9, 2.0, 2.1, 3.5]
    clips = FixedWindowPlanner(FixedWindowConfig(length_s=1.0, tail="drop")).plan(
        "v", num_frames=len(ts), fps=0.0, timestamps=ts)
    assert spans(clips) == [(0, 4), (4, 5), (5, 7)]
    assert [c.start_time for c in clips] == [0.0, 1.9, 2.0]


def test_keys_and_groups_are_deterministic_and_leakage_safe():
    a = FixedWindowPlanner(FixedWindowConfig(length_s=1.0)).plan("vid_9", num_frames=75,
                                                                 fps=25.0)
    b = FixedWindowPlanner(FixedWindowConfig(length_s=1.0)).plan("vid_9", num_frames=75,
                                                                 fps=25.0)
    assert a == b
    assert [c.key for c in a] == ["vid_9_c0000", "vid_9_c0001", "vid_9_c0002"]
    assert {c.group for c in a} == {"vid_9"} and [c.index for c in a] == [0, 1, 2]
    assert a[1].to_dict()["key"] == "vid_9_c0001"
    assert clip_key("x", 12) == "x_c0012"
    with pytest.raises(ConfigError):
        clip_key("bad key/..", 0)


KF = {"num_frames": 250, "fps": 25.0, "scenes": [
    {"start": 0, "end": 40}, {"start": 40, "end": 50}, {"start": 50, "end": 250}]}


def test_scene_clips_one_per_scene():
    clips = SceneClipPlanner().plan("v", KF)
    assert spans(clips) == [(0, 40), (40, 50), (50, 250)]
    assert clips[-1].end_time == 10.0


def test_scene_clips_trim_drop_and_split():
    cfg = SceneClipConfig(trim_s=0.2, min_length_s=1.0, max_length_s=3.0)
    clips = SceneClipPlanner(cfg).plan("v", KF)
    # scene 1 (0.4 s) dropped; scene 0 trimmed 5 frames each end; scene 2 (8 s - 0.4 s)
    # split into 3 equal parts of about 2.53 s
    assert spans(clips)[0] == (5, 35)
    assert len(clips) == 4
    parts = spans(clips)[1:]
    assert parts[0][0] == 55 and parts[-1][1] == 245
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert all(e - s <= 3.0 * 25 for s, e in parts)
    assert [c.key for c in clips] == [f"v_c000{i}" for i in range(4)]


def test_scene_clips_from_real_detector_output(tmp_path):
    from _video_media import write_shots

    from mmshard.tokenizers.keyframes import detect_keyframes

    truth = write_shots(tmp_path / "s.mp4", [("texture", 30), ("gradient", 30)], seed=4)
    kf, _ = detect_keyframes(tmp_path / "s.mp4")
    clips = SceneClipPlanner().plan("s", kf)
    assert spans(clips) == [(0, truth["cuts"][0]), (truth["cuts"][0], truth["num_frames"])]


def test_bad_inputs():
    with pytest.raises(ConfigError, match="drop, keep, shift"):
        FixedWindowConfig(tail="wrap")
    with pytest.raises(ConfigError):
        FixedWindowConfig(length_s=0)
    with pytest.raises(DataError) as ei:
        SceneClipPlanner().plan("v", {"scenes": []})
    assert ei.value.reason == "bad_keyframes"
    with pytest.raises(DataError):
        SceneClipPlanner().plan("v", {"num_frames": 10, "fps": 25.0,
                                      "scenes": [{"start": 5, "end": 20}]})
    assert CLIP_PLANNERS.names() == ["fixed", "scenes"]


@PROPS
@given(n=st.integers(1, 2000), fps=st.sampled_from([10.0, 24.0, 29.97, 30.0]),
       length=st.floats(0.1, 20.0), ratio=st.floats(0.25, 2.0),
       tail=st.sampled_from(["drop", "keep", "shift"]))
def test_fixed_window_invariants(n, fps, length, ratio, tail):
    stride = length * ratio
    clips = FixedWindowPlanner(FixedWindowConfig(length_s=length, stride_s=stride, tail=tail)
                               ).plan("k", num_frames=n, fps=fps)
    for c in clips:
        assert 0 <= c.start_frame < c.end_frame <= n
        assert c.start_time < c.end_time
        assert c.end_time - c.start_time <= length + 1.0 / fps + 1e-6
    starts = [c.start_frame for c in clips]
    assert starts == sorted(starts)
    assert len({c.key for c in clips}) == len(clips)
    covered = np.zeros(n, bool)
    for c in clips:
        covered[c.start_frame:c.end_frame] = True
    if ratio <= 1.0 and tail != "drop":
        assert covered.all()  # no gaps and a tail policy that reaches the end
    if tail == "drop" and ratio >= 1.0:
        # non-overlapping full windows only
        assert all(a.end_frame <= b.start_frame for a, b in zip(clips, clips[1:]))


@PROPS
@given(cuts=st.lists(st.integers(1, 999), max_size=12, unique=True),
       max_len=st.none() | st.floats(0.5, 20.0))
def test_scene_clips_partition_the_video_when_untrimmed(cuts, max_len):
    n = 1000
    starts = [0, *sorted(cuts)]
    kf = {"num_frames": n, "fps": 25.0,
          "scenes": [{"start": a, "end": b} for a, b in zip(starts, [*starts[1:], n])]}
    clips = SceneClipPlanner(SceneClipConfig(max_length_s=max_len)).plan("s", kf)
    assert clips[0].start_frame == 0 and clips[-1].end_frame == n
    assert all(a.end_frame == b.start_frame for a, b in zip(clips, clips[1:]))
    # clips never straddle a scene boundary
    bounds = set(starts)
    for c in clips:
        assert not any(c.start_frame < b < c.end_frame for b in bounds)
