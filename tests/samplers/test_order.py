"""Epoch order: equal per-rank counts, coverage, determinism, buffered shuffle bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.samplers.order import EpochOrder, buffered_shuffle, make_rng, shard_permutation

counts_st = st.lists(st.integers(0, 12), min_size=1, max_size=8).filter(lambda c: sum(c) > 0)


@settings(max_examples=60, deadline=None)
@given(counts=counts_st, world=st.integers(1, 6), epoch=st.integers(0, 3),
       shuffle=st.booleans())
def test_wrap_gives_equal_counts_and_every_sample_once(counts, world, epoch, shuffle):
    order = EpochOrder(seed=7, shuffle=shuffle, shuffle_buffer=4)
    per = [order.rank_order(counts, epoch=epoch, rank=r, world_size=world)
           for r in range(world)]
    assert len({ids.size for ids, _ in per}) == 1
    real = np.concatenate([ids[~pad] for ids, pad in per])
    assert sorted(real.tolist()) == list(range(sum(counts)))
    assert sum(int(pad.sum()) for _, pad in per) == per[0][0].size * world - sum(counts)


@settings(max_examples=40, deadline=None)
@given(counts=counts_st, world=st.integers(1, 6))
def test_drop_gives_equal_counts_without_repeats(counts, world):
    if sum(counts) < world:
        with pytest.raises(ConfigError):
            EpochOrder(seed=0, pad_policy="drop").rank_order(counts, epoch=0, rank=0,
                                                             world_size=world)
        return
    order = EpochOrder(seed=0, pad_policy="drop")
    per = [order.rank_order(counts, epoch=0, rank=r, world_size=world) for r in range(world)]
    assert {ids.size for ids, _ in per} == {sum(counts) // world}
    allids = np.concatenate([ids for ids, _ in per])
    assert len(set(allids.tolist())) == allids.size
    assert not any(pad.any() for _, pad in per)


@settings(max_examples=30, deadline=None)
@given(counts=counts_st, world=st.integers(1, 4), seed=st.integers(-5, 2**40))
def test_order_is_pure_function_of_seed_epoch_rank(counts, world, seed):
    a = EpochOrder(seed=seed).rank_order(counts, epoch=2, rank=world - 1, world_size=world)
    b = EpochOrder(seed=seed).rank_order(counts, epoch=2, rank=world - 1, world_size=world)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_epochs_and_seeds_change_the_order():
    counts = [50, 50, 50, 50]
    o = EpochOrder(seed=1)
    e0 = o.rank_order(counts, epoch=0, rank=0, world_size=1)[0]
    e1 = o.rank_order(counts, epoch=1, rank=0, world_size=1)[0]
    s2 = EpochOrder(seed=2).rank_order(counts, epoch=0, rank=0, world_size=1)[0]
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, s2)


def test_eval_order_is_shard_order_contiguous_per_rank():
    ids, pad = EpochOrder(seed=0, shuffle=False).rank_order([2, 3], epoch=5, rank=0,
                                                            world_size=2)
    assert ids.tolist() == [0, 1, 2] and not pad.any()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), buf=st.integers(0, 40), seed=st.integers(0, 1000))
def test_buffered_shuffle_is_permutation_within_buffer_reach(n, buf, seed):
    perm = buffered_shuffle(n, buffer_size=buf, rng=make_rng(seed))
    assert sorted(perm.tolist()) == list(range(n))
    # an item is emitted at the earliest buffer_size - 1 positions before its own
    pos = np.empty(n, dtype=np.int64)
    pos[perm] = np.arange(n)
    assert (pos >= np.arange(n) - max(buf - 1, 0)).all()


def test_shard_permutation_same_for_all_ranks_and_full_shuffle():
    assert np.array_equal(shard_permutation(9, seed=3, epoch=1),
                          shard_permutation(9, seed=3, epoch=1))
    perm = buffered_shuffle(20, buffer_size=None, rng=make_rng(0))
    assert sorted(perm.tolist()) == list(range(20))


def test_bad_config_lists_allowed_values():
    with pytest.raises(ConfigError, match="wrap, drop"):
        EpochOrder(seed=0, pad_policy="pad")
    with pytest.raises(ConfigError, match="no samples"):
        EpochOrder(seed=0).rank_order([0, 0], epoch=0, rank=0, world_size=1)


def test_exclude_removes_consumed_ids():
    ids, pad = EpochOrder(seed=0, shuffle=False).rank_order([4, 4], epoch=0, rank=0,
                                                            world_size=1, exclude=[0, 5, 7])
    assert ids.tolist() == [1, 2, 3, 4, 6]


@settings(max_examples=60, deadline=None)
@given(counts=counts_st, world=st.integers(1, 5), window=st.integers(1, 4),
       epoch=st.integers(0, 3), seed=st.integers(0, 2**40), drop=st.booleans(),
       keep_seed=st.integers(0, 3))
def test_block_shuffle_invariants(counts, world, window, epoch, seed, drop, keep_seed):
    """Window order: equal counts per rank, every kept sample once (wrap) or at most once
    (drop), a pure function of its inputs, and never more than ``window`` shards in use:
    once a shard's last sample is read no later sample (padding aside) comes from it."""
    pol = "drop" if drop else "wrap"
    keep = make_rng(keep_seed).random(sum(counts)) < 0.8 if keep_seed else None
    kept = sum(counts) if keep is None else int(keep.sum())
    if kept == 0 or (drop and kept < world):
        return
    order = EpochOrder(seed=seed, shuffle_window=window, pad_policy=pol)
    per = [order.rank_order(counts, epoch=epoch, rank=r, world_size=world, keep=keep)
           for r in range(world)]
    again = order.rank_order(counts, epoch=epoch, rank=world - 1, world_size=world, keep=keep)
    assert np.array_equal(again[0], per[-1][0]) and np.array_equal(again[1], per[-1][1])
    assert len({ids.size for ids, _ in per}) == 1
    real = np.concatenate([ids[~pad] for ids, pad in per]).tolist()
    want = list(range(sum(counts))) if keep is None else np.flatnonzero(keep).tolist()
    if drop:
        assert len(set(real)) == len(real) and set(real) <= set(want)
    else:
        assert sorted(real) == want
    shard_of = np.repeat(np.arange(len(counts)), counts)
    for ids, pad in per:
        sh = shard_of[ids[~pad]]
        last = {int(s): i for i, s in enumerate(sh.tolist())}
        first = {}
        for i, s in enumerate(sh.tolist()):
            first.setdefault(s, i)
        for i in range(sh.size):  # shards started and not finished at position i
            assert sum(first[s] <= i <= last[s] for s in first) <= window


def test_block_shuffle_mixes_within_window_only():
    counts = [10] * 6
    a = EpochOrder(seed=3, shuffle_window=2).rank_order(counts, epoch=0, rank=0, world_size=1)[0]
    shards = a // 10
    perm = shard_permutation(6, seed=3, epoch=0)
    for w in range(3):  # window w holds exactly the samples of shards 2w, 2w + 1 of the order
        assert set(shards[w * 20:(w + 1) * 20].tolist()) == set(perm[2 * w:2 * w + 2].tolist())
    assert not np.array_equal(a, np.sort(a))  # samples do move
    b = EpochOrder(seed=3, shuffle_window=2).rank_order(counts, epoch=1, rank=0, world_size=1)[0]
    assert not np.array_equal(a, b)
    with pytest.raises(ConfigError, match="shuffle_window"):
        EpochOrder(seed=0, shuffle_window=0)
