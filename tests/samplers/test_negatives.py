"""Negative selection strategies and the negative curriculum (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.samplers.negatives import (
    NEGATIVE_STRATEGIES,
    CandidateBatch,
    ChainConfig,
    CurriculumConfig,
    MarginConfig,
    MixedConfig,
    NegativeCurriculum,
    RankWindowConfig,
    ScoreWindowConfig,
    SemanticLevelConfig,
    TopKConfig,
    build_strategy,
    encode_label_paths,
    relative_margin_threshold,
    semantic_levels,
    strategy_from_dict,
    strategy_to_dict,
)


def make_batch(seed: int, q: int = 6, c: int = 20, n: int = 60, p: int = 2,
               groups: int = 5, **kw) -> CandidateBatch:
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(n, size=c, replace=False) for _ in range(q)]).astype(np.int64)
    scores = -np.sort(-rng.uniform(-1, 1, size=(q, c)), axis=1).astype(np.float32)
    pos = rng.integers(-1, n, size=(q, p)).astype(np.int64)
    return CandidateBatch(
        ids=ids, scores=scores, query_index=np.arange(q, dtype=np.int64), corpus_size=n,
        self_ids=rng.integers(-1, n, size=q).astype(np.int64), positive_ids=pos,
        positive_scores=rng.uniform(-1, 1, size=q).astype(np.float32),
        query_groups=rng.integers(-1, groups, size=q).astype(np.int64),
        corpus_groups=rng.integers(-1, groups, size=n).astype(np.int64), **kw)


def forbidden(b: CandidateBatch, i: int) -> set[int]:
    bad = {int(x) for x in b.positive_ids[i] if x >= 0}
    if b.self_ids[i] >= 0:
        bad.add(int(b.self_ids[i]))
    if b.query_groups[i] >= 0:
        bad |= {int(j) for j in np.nonzero(b.corpus_groups == b.query_groups[i])[0]}
    return bad


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12),
       name=st.sampled_from(["topk", "mixed", "margin", "rank_window"]))
def test_positives_self_and_same_group_never_negatives(seed: int, k: int, name: str) -> None:
    b = make_batch(seed)
    cfg = {"topk": TopKConfig(), "mixed": MixedConfig(hard_fraction=0.5),
           "margin": MarginConfig(relative=0.95), "rank_window": RankWindowConfig(skip=1)}[name]
    sel = build_strategy(cfg).select(b, k)
    assert sel.ids.shape == (6, k)
    for i in range(6):
        chosen = [int(x) for x in sel.ids[i] if x >= 0]
        assert not set(chosen) & forbidden(b, i)
        assert len(chosen) == len(set(chosen))  # no duplicates


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 15))
def test_topk_is_the_k_hardest_allowed_in_order(seed: int, k: int) -> None:
    b = make_batch(seed)
    sel = build_strategy(TopKConfig()).select(b, k)
    for i in range(6):
        want = [int(x) for x in b.ids[i] if int(x) not in forbidden(b, i)][:k]
        got = [int(x) for x in sel.ids[i] if x >= 0]
        assert got == want
        ranks = [int(r) for r in sel.ranks[i] if r >= 0]
        assert [int(b.ids[i, r]) for r in ranks] == got
        np.testing.assert_array_equal(sel.scores[i, :len(got)], b.scores[i, ranks])
    # Guard counts add up: every removed candidate is counted once.
    total_bad = sum(sum(int(x) in forbidden(b, i) for x in b.ids[i]) for i in range(6))
    assert sum(sel.removed.values()) == total_bad


def test_guards_can_be_switched_off() -> None:
    b = make_batch(3)
    sel = build_strategy(TopKConfig(exclude_positives=False,
                                    exclude_same_group=False)).select(b, 20)
    assert set(sel.removed) == {"self"}
    for i in range(6):
        assert int(b.self_ids[i]) not in sel.ids[i].tolist() or b.self_ids[i] < 0


def test_relative_margin_threshold_is_stricter_than_the_positive() -> None:
    t = relative_margin_threshold(np.array([0.8, -0.5, 0.0]), 0.95)
    np.testing.assert_allclose(t, [0.76, -0.525, 0.0])
    p = np.array([0.8, -0.5, 2.0, -3.0])
    assert np.all(relative_margin_threshold(p, 0.9) <= p)


@pytest.mark.parametrize("pos, cands, kept", [
    (0.8, [0.79, 0.77, 0.761, 0.75, 0.1], [0.75, 0.1]),       # < 0.95 * 0.8 = 0.76
    (-0.5, [-0.49, -0.51, -0.524, -0.53, -0.9], [-0.53, -0.9]),  # < -0.525, not -0.475
])
def test_relative_margin_on_positive_and_negative_scores(pos, cands, kept) -> None:
    c = len(cands)
    b = CandidateBatch(ids=np.arange(c)[None], scores=np.array([cands], np.float32),
                       query_index=np.array([0]), corpus_size=c,
                       positive_scores=np.array([pos], np.float32))
    sel = build_strategy(MarginConfig(relative=0.95)).select(b, c)
    got = [float(s) for s, i in zip(sel.scores[0], sel.ids[0], strict=True) if i >= 0]
    np.testing.assert_allclose(got, kept, rtol=1e-6)
    assert sel.removed["margin_relative"] == c - len(kept)


def test_relative_margin_without_positive_score_keeps_all() -> None:
    b = CandidateBatch(ids=np.arange(4)[None], scores=np.array([[0.9, 0.5, 0.2, 0.1]],
                       np.float32), query_index=np.array([0]), corpus_size=4,
                       positive_scores=np.array([np.nan], np.float32))
    sel = build_strategy(MarginConfig()).select(b, 4)
    assert sel.ids[0].tolist() == [0, 1, 2, 3]


def test_absolute_margin_and_score_window() -> None:
    sc = np.array([[0.95, 0.9, 0.7, 0.5, 0.3, -0.2]], np.float32)
    b = CandidateBatch(ids=np.arange(6)[None], scores=sc, query_index=np.array([0]),
                       corpus_size=6)
    sel = build_strategy(MarginConfig(mode="absolute", max_score=0.9)).select(b, 6)
    assert [i for i in sel.ids[0] if i >= 0] == [2, 3, 4, 5]
    sel = build_strategy(ScoreWindowConfig(min_score=0.0, max_score=0.8)).select(b, 6)
    assert [i for i in sel.ids[0] if i >= 0] == [2, 3, 4]
    assert sel.removed["score_window"] == 3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), skip=st.integers(0, 8), window=st.integers(1, 10))
def test_rank_window_bounds(seed: int, skip: int, window: int) -> None:
    b = make_batch(seed)
    sel = build_strategy(RankWindowConfig(skip=skip, window=window)).select(b, 20)
    r = sel.ranks[sel.ids >= 0]
    assert np.all((r >= skip) & (r < skip + window))


def test_mixed_ratio_random_part_and_determinism() -> None:
    n, q, k = 5000, 200, 10
    rng = np.random.default_rng(0)
    ids = np.stack([rng.choice(n, 50, replace=False) for _ in range(q)])
    scores = -np.sort(-rng.uniform(size=(q, 50)), axis=1).astype(np.float32)
    b = CandidateBatch(ids=ids, scores=scores, query_index=np.arange(q), corpus_size=n,
                       positive_ids=ids[:, :1], seed=7)
    s = build_strategy(MixedConfig(hard_fraction=0.8))
    sel = s.select(b, k)
    hard = (sel.ranks >= 0).sum()
    rand = ((sel.ranks < 0) & (sel.ids >= 0)).sum()
    assert hard == q * 8 and rand == q * 2  # 80 % hard, 20 % random
    assert np.all(sel.ranks[:, :8] == np.arange(1, 9))  # top of the list, positive skipped
    assert np.isnan(sel.scores[:, 8:]).all()  # random picks: caller scores them
    # random picks come from the whole corpus, not just the candidate list
    outside = [x not in set(ids[i]) for i in range(q) for x in sel.ids[i, 8:]]
    assert np.mean(outside) > 0.9
    again = s.select(b, k)
    np.testing.assert_array_equal(sel.ids, again.ids)
    # chunk-independent: the first half on its own picks the same
    half = CandidateBatch(ids=ids[:100], scores=scores[:100], query_index=np.arange(100),
                          corpus_size=n, positive_ids=ids[:100, :1], seed=7)
    np.testing.assert_array_equal(s.select(half, k).ids, sel.ids[:100])
    other = CandidateBatch(ids=ids, scores=scores, query_index=np.arange(q), corpus_size=n,
                           positive_ids=ids[:, :1], seed=8)
    assert not np.array_equal(s.select(other, k).ids[:, 8:], sel.ids[:, 8:])


def test_mixed_fills_with_random_when_hard_runs_out() -> None:
    b = CandidateBatch(ids=np.array([[0, 1, -1, -1]]), scores=np.array([[0.9, 0.8, -np.inf,
                       -np.inf]], np.float32), query_index=np.array([0]), corpus_size=100)
    sel = build_strategy(MixedConfig(hard_fraction=1.0)).select(b, 6)
    assert sel.ids[0, :2].tolist() == [0, 1]
    assert (sel.ids[0, 2:] >= 2).all()


def test_semantic_levels_and_selection() -> None:
    labels = ["animal/dog/terrier", "animal/dog/poodle", "animal/cat/siamese", "car/suv",
              "animal/dog/terrier", None]
    codes = encode_label_paths(labels)
    lv = semantic_levels(codes[:1], codes[None, :])
    assert lv.tolist() == [[3, 2, 1, 0, 3, -1]]
    b = CandidateBatch(ids=np.array([[4, 1, 2, 3, 5]]),
                       scores=np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], np.float32),
                       query_index=np.array([0]), corpus_size=6, self_ids=np.array([0]),
                       query_labels=codes[:1], corpus_labels=codes)
    sel = build_strategy(SemanticLevelConfig()).select(b, 5)
    assert [i for i in sel.ids[0] if i >= 0] == [1, 2, 3, 5]  # same_label 4 dropped
    assert sel.levels[0, :4].tolist() == [2, 1, 0, -1]
    sel = build_strategy(SemanticLevelConfig(levels=("fine_grained",))).select(b, 5)
    assert [i for i in sel.ids[0] if i >= 0] == [1]
    with pytest.raises(ConfigError, match="allowed"):
        SemanticLevelConfig(levels=("sibling",))


def test_chain_applies_all_guards_and_last_pick() -> None:
    b = make_batch(11, c=30)
    cfg = ChainConfig(steps=(RankWindowConfig(skip=2), MixedConfig(hard_fraction=0.5)))
    sel = build_strategy(cfg).select(b, 6)
    assert {"rank_window", "positive", "self", "same_group"} <= set(sel.removed)
    hard = sel.ranks[sel.ranks >= 0]
    assert np.all(hard >= 2)
    assert ((sel.ranks < 0) & (sel.ids >= 0)).any()


@pytest.mark.parametrize("cfg", [
    TopKConfig(), RankWindowConfig(skip=3, window=9), ScoreWindowConfig(max_score=0.9),
    MarginConfig(mode="absolute", max_score=0.8), MixedConfig(hard_fraction=0.7),
    SemanticLevelConfig(levels=("unrelated",)),
    ChainConfig(steps=(MarginConfig(), MixedConfig())),
])
def test_strategy_config_round_trips(cfg) -> None:
    d = strategy_to_dict(cfg)
    assert d["name"] in NEGATIVE_STRATEGIES
    assert strategy_from_dict(d) == cfg


@pytest.mark.parametrize("bad, match", [
    (lambda: MarginConfig(mode="soft"), "absolute, relative"),
    (lambda: MarginConfig(mode="absolute"), "max_score"),
    (lambda: MarginConfig(relative=1.5), "relative"),
    (lambda: MixedConfig(hard_fraction=2), "hard_fraction"),
    (lambda: RankWindowConfig(skip=-1), "skip"),
    (lambda: ScoreWindowConfig(min_score=1, max_score=0), "swap"),
    (lambda: strategy_from_dict({"name": "nope"}), "known"),
    (lambda: strategy_from_dict({"name": "topk", "k": 3}), "allowed"),
])
def test_bad_configs_say_what_is_allowed(bad, match) -> None:
    with pytest.raises(ConfigError, match=match):
        bad()


def test_curriculum_schedule_and_choices() -> None:
    cur = NegativeCurriculum(CurriculumConfig(total_steps=300, seed=1))
    assert [cur.easy_fraction(s) for s in (0, 99, 100, 199, 200, 299, 10_000)] == \
        [0.7, 0.7, 0.5, 0.5, 0.3, 0.3, 0.3]
    hard, easy = list(range(10)), list(range(100, 110))
    for step, n_easy in ((0, 7), (150, 5), (250, 3)):
        got = cur.choose(5, hard=hard, easy=easy, n=10, step=step)
        assert sum(x >= 100 for x in got) == n_easy
        assert len(set(got)) == 10
        assert got == cur.choose(5, hard=hard, easy=easy, n=10, step=step)
    # short pools top up from the other
    assert len(cur.choose(0, hard=[1], easy=easy, n=6, step=250)) == 6


def test_curriculum_state_dict_resumes_exactly() -> None:
    cfg = CurriculumConfig(total_steps=50, seed=3)
    a = NegativeCurriculum(cfg)
    hard, easy = list(range(20)), list(range(100, 130))
    for _ in range(20):
        a.advance()
    state = a.state_dict()
    ref = [a.choose(q, hard=hard, easy=easy, n=8) for q in range(5)]
    b = NegativeCurriculum(cfg)
    b.load_state_dict(state)
    assert [b.choose(q, hard=hard, easy=easy, n=8) for q in range(5)] == ref
    with pytest.raises(ConfigError, match="saved with config"):
        NegativeCurriculum(CurriculumConfig(total_steps=51)).load_state_dict(state)
    with pytest.raises(ConfigError, match="start at progress 0"):
        CurriculumConfig(total_steps=5, stages=((0.2, 0.5),))
