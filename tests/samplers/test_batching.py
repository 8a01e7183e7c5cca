"""Batch builders: sizes, buckets, group-aware, hard-negative co-batching, equalising."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.samplers.batching import (
    BucketBatching,
    FixedBatching,
    GroupAwareBatching,
    HardestFirst,
    NegativeCoBatching,
    NegativeTable,
    PlannedBatch,
    SampleMeta,
    equalize_batches,
)

RNG = np.random.default_rng(0)


def _plan(builder, n, bs, meta, drop_last=False, ids=None):
    ids = np.arange(n) if ids is None else ids
    return builder.plan(ids, np.zeros(ids.size, bool), batch_size=bs, drop_last=drop_last,
                        meta=meta, rng=np.random.default_rng(0), epoch=0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), bs=st.integers(1, 9), drop=st.booleans())
def test_fixed_batches_keep_order_and_sizes(n, bs, drop):
    plan = _plan(FixedBatching(), n, bs, SampleMeta(num_samples=n), drop)
    flat = np.concatenate([b.ids for b in plan]) if plan else np.zeros(0, int)
    assert flat.tolist() == list(range(n // bs * bs if drop else n))
    assert all(len(b) == bs for b in plan[:-1])


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(-1, 6), min_size=1, max_size=80), bs=st.integers(1, 8),
       drop=st.booleans())
def test_group_aware_never_colocates_a_group_and_keeps_every_sample(groups, bs, drop):
    g = np.asarray(groups)
    plan = _plan(GroupAwareBatching(), g.size, bs, SampleMeta(num_samples=g.size, groups=g),
                 drop)
    for b in plan:
        gs = [x for x in g[b.ids].tolist() if x >= 0]
        assert len(gs) == len(set(gs))
        assert len(b) <= bs
    got = sorted(np.concatenate([b.ids for b in plan]).tolist()) if plan else []
    if drop:
        assert all(len(b) == bs for b in plan)
    else:
        assert got == list(range(g.size))


def test_group_aware_defers_only_locally():
    g = np.array([0, 0, 1, 2, 3, 4])
    plan = _plan(GroupAwareBatching(), 6, 3, SampleMeta(num_samples=6, groups=g))
    assert [b.ids.tolist() for b in plan] == [[0, 2, 3], [1, 4, 5]]


def test_buckets_group_by_aspect_ratio_and_carry_size():
    w = np.array([100, 200, 100, 210, 50, 100])
    h = np.array([100, 100, 100, 100, 100, 100])
    bb = BucketBatching(ratios=(0.5, 1.0, 2.0), area=64 * 64, multiple=16)
    plan = _plan(bb, 6, 2, SampleMeta(num_samples=6, width=w, height=h))
    as_sets = {tuple(b.ids.tolist()): b.size for b in plan}
    assert as_sets[(0, 2)] == (64, 64)
    assert as_sets[(1, 3)] == (48, 96)
    assert as_sets[(4,)] == (96, 48)
    assert as_sets[(5,)] == (64, 64)
    for b in plan:
        assert len(set(bb.assign(w[b.ids], h[b.ids]).tolist())) == 1


def test_buckets_need_sizes():
    with pytest.raises(ConfigError, match="width/height"):
        _plan(BucketBatching(), 3, 2, SampleMeta(num_samples=3))


def _neg_table(tmp_path, rows):
    path = tmp_path / "neg.parquet"
    pq.write_table(pa.table({
        "query_key": [r[0] for r in rows], "negative_keys": [r[1] for r in rows],
        "negative_scores": [[0.9 - 0.1 * i for i in range(len(r[1]))] for r in rows],
        "negative_ranks": [list(range(1, len(r[1]) + 1)) for r in rows],
        "positive_score": [1.0] * len(rows)}), path)
    return NegativeTable.from_parquet(str(path))


def test_negatives_are_co_batched_with_their_query(tmp_path):
    keys = np.asarray([f"k{i}" for i in range(12)], dtype=object)
    table = _neg_table(tmp_path, [("k0", ["k7", "k9"]), ("k1", ["k11"]), ("k3", ["k0"])])
    meta = SampleMeta(num_samples=12, keys=keys, groups=np.arange(12))
    plan = _plan(NegativeCoBatching(negatives=table, per_query=2), 12, 4, meta)
    for b in plan:
        for qi, ni in b.neg_pairs.tolist():
            q, n = keys[b.ids[qi]], keys[b.ids[ni]]
            assert n in dict([("k0", ["k7", "k9"]), ("k1", ["k11"]), ("k3", ["k0"])])[q]
    first = plan[0]
    assert first.ids.tolist() == [0, 7, 9, 1]
    # k7, k9 were used as negatives: they are not queries again; every sample is seen
    seen = np.concatenate([b.ids for b in plan]).tolist()
    assert sorted(set(seen)) == list(range(12))
    assert seen.count(7) == 1


def test_negatives_skip_same_group_and_use_selector(tmp_path):
    keys = np.asarray([f"k{i}" for i in range(6)], dtype=object)
    table = _neg_table(tmp_path, [("k0", ["k1", "k2", "k3"])])
    meta = SampleMeta(num_samples=6, keys=keys, groups=np.array([0, 0, 1, 2, 3, 4]))
    plan = _plan(NegativeCoBatching(negatives=table, per_query=1), 6, 3, meta)
    assert plan[0].ids.tolist()[:2] == [0, 2]  # k1 shares k0's group: skipped

    class Easiest:
        def select(self, scores, ranks, *, k, epoch, rng, query):
            return np.argsort(-ranks)[:k].tolist()

    plan = _plan(NegativeCoBatching(negatives=table, per_query=1, selector=Easiest()), 6, 3,
                 meta)
    assert plan[0].ids.tolist()[:2] == [0, 3]
    assert HardestFirst(skip=1).select(np.zeros(3), np.array([3, 1, 2]), k=1, epoch=0,
                                       rng=RNG) == [2]
    with pytest.raises(ConfigError, match="select"):
        NegativeCoBatching(negatives=table, selector=object())


def test_equalize_pads_with_flagged_repeats_or_cuts():
    bs = [PlannedBatch(ids=np.array([i]), pad=np.array([False])) for i in range(3)]
    longer = equalize_batches(bs, 5)
    assert [b.ids.tolist() for b in longer] == [[0], [1], [2], [0], [1]]
    assert [bool(b.pad.all()) for b in longer] == [False] * 3 + [True] * 2
    assert len(equalize_batches(bs, 2)) == 2


def test_curriculum_hook_with_negative_curriculum(tmp_path):
    negatives = pytest.importorskip("mmshard.samplers.negatives")
    from mmshard.samplers.batching import CurriculumSelector

    keys = np.asarray([f"k{i}" for i in range(10)], dtype=object)
    table = _neg_table(tmp_path, [("k0", ["k1", "k2", "k3", "k4"])])
    cur = negatives.NegativeCurriculum(negatives.CurriculumConfig(
        total_steps=2, stages=((0.0, 1.0), (0.5, 0.0))))
    meta = SampleMeta(num_samples=10, keys=keys)
    b = NegativeCoBatching(negatives=table, per_query=1, selector=CurriculumSelector(cur))
    easy = b.plan(np.arange(10), np.zeros(10, bool), batch_size=2, drop_last=False, meta=meta,
                  rng=RNG, epoch=0)[0]
    hard = b.plan(np.arange(10), np.zeros(10, bool), batch_size=2, drop_last=False, meta=meta,
                  rng=RNG, epoch=1)[0]
    assert easy.ids.tolist()[1] in (3, 4) and hard.ids.tolist()[1] in (1, 2)
