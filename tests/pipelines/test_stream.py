"""mmshard.Loader: equal work per rank, coverage, determinism, exact resume, mixing."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.pipelines.stream.decode import DecodeConfig, FixedResize, ImageDecode
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.source import DatasetSource, ShardListSource
from mmshard.samplers.batching import (
    BucketBatching,
    GroupAwareBatching,
    NegativeCoBatching,
    NegativeTable,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shards import make_dataset  # noqa: E402

sizes_st = st.lists(st.integers(0, 7), min_size=1, max_size=5).filter(lambda s: sum(s) > 0)


def keys_of(batches):
    return [list(b["__key__"]) for b in batches]


def real_keys(batches):
    return [k for b in batches for k, p in zip(b["__key__"], b["__pad__"].tolist()) if not p]


@settings(max_examples=20, deadline=None)
@given(sizes=sizes_st, world=st.integers(1, 4), bs=st.integers(1, 4))
def test_eval_mode_every_sample_once_and_equal_batches(sizes, world, bs):
    with tempfile.TemporaryDirectory() as d:
        info = make_dataset(d, shard_sizes={"train": sizes, "val": (2,)})
        loaders = [Loader(d, batch_size=bs, seed=0, rank=r, world_size=world, shuffle=False)
                   for r in range(world)]
        runs = [list(ld) for ld in loaders]
    assert len({len(r) for r in runs}) == 1
    assert all(len(r) == len(ld) for r, ld in zip(runs, loaders))
    assert len({tuple(len(b["__key__"]) for b in r) for r in runs}) == 1
    got = [k for r in runs for k in real_keys(r)]
    assert sorted(got) == sorted(info.keys["train"])


@settings(max_examples=12, deadline=None)
@given(sizes=sizes_st, world=st.integers(1, 3), k=st.integers(0, 6), seed=st.integers(0, 50))
def test_resume_after_k_batches_equals_uninterrupted(sizes, world, k, seed):
    with tempfile.TemporaryDirectory() as d:
        make_dataset(d, shard_sizes={"train": sizes}, group_size=2)
        for rank in range(world):
            kw = dict(batch_size=2, seed=seed, rank=rank, world_size=world,
                      shuffle_buffer=3, batching=GroupAwareBatching())
            full = keys_of(Loader(d, **kw))
            first = Loader(d, **kw)
            it = iter(first)
            head = [next(it) for _ in range(min(k, len(full)))]
            state = first.state_dict()
            second = Loader(d, **kw)
            second.load_state_dict(state)
            if len(head) < len(full):
                assert keys_of(head) + keys_of(second) == full
            else:  # a finished epoch resumes into the next one
                nxt = keys_of(second)
                assert second.epoch == 1 and len(nxt) == len(second)


def test_training_mode_equal_counts_with_data_dependent_batching(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (9, 1, 4, 7)}, group_size=3, image=True)
    for batching in (GroupAwareBatching(), BucketBatching(ratios=(0.5, 1.0, 2.0))):
        for policy in ("wrap", "drop"):
            lens = []
            for r in range(3):
                ld = Loader(str(tmp_path), batch_size=3, seed=1, rank=r, world_size=3,
                            batching=batching, pad_policy=policy)
                got = list(ld)
                assert len(got) == len(ld)
                lens.append(len(got))
            assert len(set(lens)) == 1


def test_determinism_and_epochs(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (6, 6, 6, 6)})
    a = Loader(str(tmp_path), batch_size=4, seed=3)
    b = Loader(str(tmp_path), batch_size=4, seed=3)
    assert keys_of(a) == keys_of(b)
    a.set_epoch(1)
    e1 = keys_of(a)
    assert e1 != keys_of(Loader(str(tmp_path), batch_size=4, seed=3))
    assert a.epoch == 1
    # a finished epoch rolls over to the next one
    nxt = keys_of(a)
    assert a.epoch == 2 and nxt != e1
    assert keys_of(Loader(str(tmp_path), batch_size=4, seed=4)) != keys_of(b)


def test_workers_give_the_same_batches_and_resume_across_worker_counts(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (5, 3, 6)}, image=True)
    kw = dict(batch_size=3, seed=5, shuffle_buffer=4,
              decode=DecodeConfig(image=ImageDecode(resize=FixedResize(size=(8, 8)))))
    ref = keys_of(Loader(str(tmp_path), **kw))
    two = Loader(str(tmp_path), num_workers=2, **kw)
    it = iter(two)
    head = [next(it) for _ in range(2)]
    del it
    state = two.state_dict()
    assert keys_of(head) == ref[:2]
    one = Loader(str(tmp_path), num_workers=1, **kw)
    one.load_state_dict(state)
    rest = list(one)
    assert keys_of(head) + keys_of(rest) == ref
    assert rest[0]["image"].dtype == torch.float32
    assert one.stats["time_to_first_batch_s"] is not None


@pytest.mark.parametrize("shuffle", [False, True])
def test_elastic_resume_loses_and_repeats_nothing(tmp_path, shuffle):
    info = make_dataset(tmp_path, shard_sizes={"train": (7, 2, 9, 5)})
    kw = dict(batch_size=2, seed=9, shuffle=shuffle, shuffle_buffer=5)
    seen: list[str] = []
    states = []
    for r in range(2):
        ld = Loader(str(tmp_path), rank=r, world_size=2, **kw)
        it = iter(ld)
        seen += real_keys([next(it) for _ in range(3)])
        states.append(ld.state_dict())
    assert states[0] == states[1]
    lens = []
    for r in range(3):
        ld = Loader(str(tmp_path), rank=r, world_size=3, **kw)
        ld.load_state_dict(states[0])
        got = list(ld)
        lens.append(len(got))
        seen += real_keys(got)
    assert len(set(lens)) == 1
    assert sorted(seen) == sorted(info.keys["train"])


def test_mixing_weights_and_stratify(tmp_path):
    a = make_dataset(tmp_path / "a", shard_sizes={"train": (40, 40)}, name="a")
    b = make_dataset(tmp_path / "b", shard_sizes={"train": (30,)}, name="b")
    ld = Loader([str(tmp_path / "a"), str(tmp_path / "b")], batch_size=8, seed=0,
                weights=[3, 1], samples_per_epoch=400)
    src = torch.cat([x["__source__"] for x in ld])
    assert src.numel() == 400
    assert abs(float((src == 0).float().mean()) - 0.75) < 0.07
    strat = Loader([str(tmp_path / "a"), str(tmp_path / "b")], batch_size=8, seed=0,
                   weights=[3, 1], stratify=True)
    batches = list(strat)
    for x in batches:
        assert (x["__source__"] == 0).sum() == 6
        for k, s in zip(x["__key__"], x["__source__"].tolist()):
            assert k in (a.keys if s == 0 else b.keys)["train"]
    state = strat.state_dict()
    assert state["batches_done"] == len(batches) == len(strat)


def test_negatives_co_batched_with_masks(tmp_path):
    info = make_dataset(tmp_path, shard_sizes={"train": (6, 6)}, group_size=2)
    keys = info.keys["train"]
    path = tmp_path / "neg.parquet"
    pq.write_table(pa.table({
        "query_key": keys, "negative_keys": [[keys[(i + 5) % 12]] for i in range(12)],
        "negative_scores": [[0.5]] * 12, "negative_ranks": [[1]] * 12,
        "positive_score": [0.9] * 12}), path)
    ld = Loader(str(tmp_path), batch_size=4, seed=2, batching=NegativeCoBatching(
        negatives=NegativeTable.from_parquet(str(path)), per_query=1))
    npairs = 0
    for b in ld:
        neg, pos = b["__neg_mask__"], b["__pos_mask__"]
        assert neg.shape == pos.shape == (len(b["__key__"]),) * 2
        assert pos.diagonal().all() and not (neg & pos).any()
        for i, j in neg.nonzero().tolist():
            npairs += 1
            assert keys.index(b["__key__"][j]) == (keys.index(b["__key__"][i]) + 5) % 12
        for i, j in pos.nonzero().tolist():
            assert info.groups[b["__key__"][i]] == info.groups[b["__key__"][j]]
    assert npairs > 0


def test_plain_shard_list_with_counting_pass_and_given_counts(tmp_path):
    info = make_dataset(tmp_path, shard_sizes={"train": (3, 4)}, manifest=False)
    urls = (str(tmp_path / "shards/train-000000.tar"), str(tmp_path / "shards/train-000001.tar"))
    scanned = Loader(ShardListSource(urls=urls), batch_size=2, seed=0, shuffle=False)
    assert real_keys(scanned) == info.keys["train"]
    given_ = Loader(ShardListSource(urls=urls, nsamples=(3, 4)), batch_size=2, seed=0,
                    shuffle=False)
    assert keys_of(given_) == keys_of(scanned)
    with pytest.raises(ConfigError, match="group"):
        list(Loader(ShardListSource(urls=urls), batch_size=2, seed=0,
                    batching=GroupAwareBatching()))


def test_split_selection_and_bad_arguments(tmp_path):
    info = make_dataset(tmp_path, shard_sizes={"train": (3,), "val": (2, 1)})
    val = Loader(DatasetSource(root=str(tmp_path), split="val"), batch_size=10, seed=0)
    assert sorted(real_keys(val)) == info.keys["val"]
    with pytest.raises(ConfigError, match="splits present: train, val"):
        Loader(str(tmp_path), split="test", batch_size=2, seed=0)
    with pytest.raises(ConfigError, match="raise, skip"):
        Loader(str(tmp_path), batch_size=2, seed=0, on_error="ignore")
    state = Loader(str(tmp_path), batch_size=2, seed=0).state_dict()
    with pytest.raises(ConfigError, match="batch_size"):
        Loader(str(tmp_path), batch_size=3, seed=0).load_state_dict(state)




def test_elastic_resume_of_a_finished_epoch_starts_the_next(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (5, 4)})
    ld = Loader(str(tmp_path), batch_size=2, seed=0, rank=0, world_size=2)
    list(ld)
    bigger = Loader(str(tmp_path), batch_size=2, seed=0, rank=2, world_size=3)
    bigger.load_state_dict(ld.state_dict())
    assert bigger.epoch == 1 and len(list(bigger)) == len(bigger) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_device_without_cuda_says_so(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (2,)})
    with pytest.raises(ConfigError, match="CUDA is not available"):
        list(Loader(str(tmp_path), batch_size=2, seed=0, device="cuda"))
