"""Weighted mixing: ratios, stratified quotas, determinism, cycling small datasets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.samplers.mixing import Mixing, mix_streams


def _streams(sizes):
    bases = np.cumsum([0, *sizes])

    def stream(d, cycle):
        rng = np.random.default_rng([d, cycle])
        return rng.permutation(sizes[d]) + bases[d], np.zeros(sizes[d], bool)
    return stream, bases


@settings(max_examples=25, deadline=None)
@given(w=st.lists(st.floats(0.1, 5.0), min_size=2, max_size=4), seed=st.integers(0, 99))
def test_random_mixing_ratios_within_tolerance(w, seed):
    sizes = [4000] * len(w)
    stream, _ = _streams(sizes)
    m = Mixing(weights=tuple(w), samples_per_epoch=4000)
    ids, pad, src = mix_streams(m, stream, sizes, seed=seed, epoch=0, rank=0, batch_size=8)
    frac = np.bincount(src, minlength=len(w)) / src.size
    assert np.abs(frac - m.probs).max() < 0.05
    again = mix_streams(m, stream, sizes, seed=seed, epoch=0, rank=0, batch_size=8)
    assert np.array_equal(ids, again[0])


@settings(max_examples=25, deadline=None)
@given(w=st.lists(st.integers(1, 6), min_size=2, max_size=3), bs=st.integers(2, 16))
def test_stratified_batches_have_fixed_quotas(w, bs):
    sizes = [50, 70, 90][:len(w)]
    stream, bases = _streams(sizes)
    m = Mixing(weights=tuple(float(x) for x in w), stratify=True)
    ids, _, src = mix_streams(m, stream, sizes, seed=0, epoch=0, rank=0, batch_size=bs)
    assert ids.size % bs == 0
    q = m.quotas(bs)
    assert q.sum() == bs
    for i in range(0, ids.size, bs):
        assert np.bincount(src[i:i + bs], minlength=len(w)).tolist() == q.tolist()
    owner = np.searchsorted(bases, ids, side="right") - 1
    assert np.array_equal(owner, src)  # each position holds a sample of its dataset


def test_small_dataset_cycles_when_upweighted():
    sizes = [10, 100]
    stream, _ = _streams(sizes)
    m = Mixing(weights=(1.0, 1.0), samples_per_epoch=100)
    ids, _, src = mix_streams(m, stream, sizes, seed=0, epoch=0, rank=0, batch_size=4)
    small = ids[src == 0]
    assert small.size > 20 and set(small.tolist()) == set(range(10))


def test_default_length_exhausts_scarcest_dataset_once():
    m = Mixing(weights=(1.0, 3.0))
    assert m.epoch_length([10, 100], 4) == 40


def test_bad_weights():
    with pytest.raises(ConfigError, match="positive"):
        Mixing(weights=(1.0, 0.0))
    with pytest.raises(ConfigError, match="one weight per dataset"):
        Mixing(weights=(1.0,)).epoch_length([3, 4], 2)
