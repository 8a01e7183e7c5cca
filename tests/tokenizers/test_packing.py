"""NaViT packing plans (tokenizers/packing.py) over resize-family plans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError, DataError
from mmshard.media.resize import PadToMultiple
from mmshard.tokenizers.packing import plan_packing

SETTINGS = settings(max_examples=60, deadline=None)


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
