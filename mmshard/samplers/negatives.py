"""Hard-negative selection strategies over candidate lists, and a negative curriculum.

Pure numpy: no FAISS, no pipelines, no Ray.  The mining job (``mmshard.pipelines.mine.job``)
searches an index and hands each chunk of queries here as a :class:`CandidateBatch`:

- ``ids``    (Q, C) int64 corpus rows, hardest (most similar) first; ``-1`` = empty slot
- ``scores`` (Q, C) float32 similarities, **higher = more similar**: the inner product for
  ``metric="ip"``, minus the squared L2 distance for ``metric="l2"``

A strategy turns it into a :class:`Selection`: (Q, k) negative ids, scores and ranks
(``rank`` = position in the candidate list, ``-1`` for random picks) plus, per guard, the
number of candidates that guard removed.  Guards run in order and each counts only the
candidates still alive, so the counts add up.  Every strategy always applies the base
guards ``positive`` (listed positives), ``self`` (the query's own item) and
``same_group`` (corpus items sharing the query's group), unless switched off.

>>> import numpy as np
>>> batch = CandidateBatch(ids=np.array([[3, 1, 2, 0]]),
...                        scores=np.array([[0.9, 0.8, 0.5, 0.1]], dtype=np.float32),
...                        query_index=np.array([0]), corpus_size=4,
...                        positive_ids=np.array([[3]]))
>>> sel = build_strategy(TopKConfig()).select(batch, k=2)
>>> sel.ids.tolist(), sel.removed["positive"]
([[1, 2]], 1)

Registered strategies (``NEGATIVE_STRATEGIES``): ``topk``, ``rank_window``,
``score_window``, ``margin``, ``mixed``, ``semantic``, ``chain``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from .._registry import Registry, config_to_dict
from ..errors import ConfigError

__all__ = [
    "LEVEL_NAMES",
    "NEGATIVE_STRATEGIES",
    "CandidateBatch",
    "ChainConfig",
    "CurriculumConfig",
    "MarginConfig",
    "MixedConfig",
    "NegativeCurriculum",
    "NegativeStrategy",
    "RankWindowConfig",
    "ScoreWindowConfig",
    "Selection",
    "SemanticLevelConfig",
    "TopKConfig",
    "build_strategy",
    "encode_label_paths",
    "relative_margin_threshold",
    "semantic_levels",
    "strategy_from_dict",
    "strategy_to_dict",
]

T = TypeVar("T")

#: Semantic level codes (index) and names; ``-1`` is ``unknown`` (a label is missing).
LEVEL_NAMES: tuple[str, ...] = ("unrelated", "same_domain", "fine_grained", "same_label")
_ALL_LEVELS = ("unknown",) + LEVEL_NAMES

NEGATIVE_STRATEGIES: Registry[type[NegativeStrategy]] = Registry("negative strategy")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, kw_only=True)
class CandidateBatch:
    """Candidates of Q queries (see the module docstring for the shapes and meaning).

    Optional arrays: ``self_ids`` (Q,) corpus row of the query's own item or -1;
    ``positive_ids`` (Q, P) -1 padded; ``positive_scores`` (Q,) NaN = unknown;
    ``query_groups`` (Q,) / ``corpus_groups`` (N,) int group codes, -1 = none;
    ``query_labels`` (Q, D) / ``corpus_labels`` (N, D) prefix codes from
    :func:`encode_label_paths`.  ``query_index`` (Q,) global query rows seed the random
    choices, so results do not depend on how queries are chunked.
    """

    ids: np.ndarray
    scores: np.ndarray
    query_index: np.ndarray
    corpus_size: int
    self_ids: np.ndarray | None = None
    positive_ids: np.ndarray | None = None
    positive_scores: np.ndarray | None = None
    query_groups: np.ndarray | None = None
    corpus_groups: np.ndarray | None = None
    query_labels: np.ndarray | None = None
    corpus_labels: np.ndarray | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.ids.shape != self.scores.shape:
            raise ConfigError(
                f"ids and scores must be (Q, C) arrays of one shape, got {self.ids.shape} "
                f"and {self.scores.shape}")
        if self.query_index.shape != (self.ids.shape[0],):
            raise ConfigError(f"query_index must have shape ({self.ids.shape[0]},), got "
                              f"{self.query_index.shape}")


@dataclass
class Selection:
    """Chosen negatives: (Q, k) arrays, ``ids == -1`` marks an empty slot.

    ``scores`` is NaN for random picks (the caller computes them from the vectors);
    ``ranks`` is the candidate-list position, -1 for random picks and empty slots;
    ``levels`` holds semantic level codes (see :data:`LEVEL_NAMES`) when computed;
    ``removed`` maps guard name -> candidates it removed.
    """

    ids: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    removed: dict[str, int] = field(default_factory=dict)
    levels: np.ndarray | None = None


# ------------------------------------------------------------------------- helpers


def _hash_u64(*parts: np.ndarray | int) -> np.ndarray:
    """SplitMix64-style hash of broadcast integer arrays (deterministic, vectorised)."""
    with np.errstate(over="ignore"):
        h = np.uint64(0x9E3779B97F4A7C15)
        for p in parts:
            x = np.asarray(p).astype(np.uint64) + h
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = x ^ (x >> np.uint64(31))
        return np.asarray(h, dtype=np.uint64)


def _member(ids: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """(Q, C) bool: ids[q, c] in sets[q, :] (sets -1 padded); memory bounded."""
    out = np.zeros(ids.shape, dtype=bool)
    if sets.size == 0 or sets.shape[1] == 0:
        return out
    step = max(1, (1 << 22) // max(1, ids.shape[1] * sets.shape[1]))
    for s in range(0, ids.shape[0], step):
        a, b = ids[s:s + step, :, None], sets[s:s + step, None, :]
        out[s:s + step] = ((a == b) & (b >= 0)).any(axis=2)
    return out


def _first_k(keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions of the first k True per row (stable) and their validity."""
    if keep.shape[1] < k:
        keep = np.pad(keep, ((0, 0), (0, k - keep.shape[1])))
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(keep, order, axis=1)


def _gather(batch: CandidateBatch, order: np.ndarray, valid: np.ndarray,
            levels: np.ndarray | None) -> Selection:
    c = batch.ids.shape[1]
    safe = np.minimum(order, max(c - 1, 0))
    if c == 0:
        ids = np.full(order.shape, -1, np.int64)
        scores = np.full(order.shape, np.nan, np.float32)
    else:
        ids = np.where(valid, np.take_along_axis(batch.ids, safe, 1), -1).astype(np.int64)
        scores = np.where(valid, np.take_along_axis(batch.scores, safe, 1), np.nan)
    ranks = np.where(valid, order, -1).astype(np.int32)
    lv = None
    if levels is not None and c:
        lv = np.where(valid, np.take_along_axis(levels, safe, 1), -1).astype(np.int8)
    return Selection(ids=ids, scores=scores.astype(np.float32), ranks=ranks, levels=lv)


def encode_label_paths(labels: Sequence[str | None], *, sep: str = "/") -> np.ndarray:
    """Encode hierarchical labels ("animal/dog/terrier") as (N, D) prefix codes.

    Code ``[i, d]`` identifies the prefix of depth ``d + 1`` (equal codes = equal
    prefixes); -1 pads shorter paths and missing labels.  Encode queries and corpus in
    one call so their codes share a vocabulary.

    >>> encode_label_paths(["a/b", "a/c", None]).tolist()
    [[0, 1], [0, 2], [-1, -1]]
    """
    parts = [[] if not lab else [p for p in str(lab).split(sep) if p] for lab in labels]
    depth = max((len(p) for p in parts), default=0)
    out = np.full((len(parts), max(depth, 1)), -1, dtype=np.int64)
    vocab: dict[tuple[str, ...], int] = {}
    for i, p in enumerate(parts):
        for d in range(len(p)):
            out[i, d] = vocab.setdefault(tuple(p[:d + 1]), len(vocab))
    return out


def semantic_levels(query_labels: np.ndarray, candidate_labels: np.ndarray) -> np.ndarray:
    """Level codes of candidates vs their query: (Q, D) and (Q, C, D) -> (Q, C) int8.

    0 unrelated (no shared top level), 1 same_domain (share the top level only),
    2 fine_grained (share two or more levels, paths differ), 3 same_label (identical
    paths), -1 unknown (either label missing).

    >>> codes = encode_label_paths(["animal/dog/terrier", "animal/dog/poodle",
    ...                             "animal/cat", "car", "animal/dog/terrier"])
    >>> semantic_levels(codes[:1], codes[None, 1:]).tolist()
    [[2, 1, 0, 3]]
    """
    q = query_labels[:, None, :]
    c = candidate_labels
    eq = (q == c) & (q >= 0)
    prefix = np.cumprod(eq, axis=2).sum(axis=2)
    dq = (query_labels >= 0).sum(axis=1)[:, None]
    dc = (c >= 0).sum(axis=2)
    lv = np.minimum(prefix, 2).astype(np.int8)
    lv[(prefix == dq) & (prefix == dc)] = 3
    lv[(dq == 0) | (dc == 0)] = -1
    return lv


# ---------------------------------------------------------------------- configs


@dataclass(frozen=True, kw_only=True)
class _BaseConfig:
    """Base guards every strategy applies (switchable)."""

    exclude_positives: bool = True
    exclude_same_group: bool = True
    pool_extra: int = 16

    def __post_init__(self) -> None:
        if self.pool_extra < 0:
            raise ConfigError(f"pool_extra must be >= 0, got {self.pool_extra}")


@dataclass(frozen=True, kw_only=True)
class TopKConfig(_BaseConfig):
    """``topk``: the k hardest candidates left after the base guards."""


@dataclass(frozen=True, kw_only=True)
class RankWindowConfig(_BaseConfig):
    """``rank_window``: only candidates whose rank is in ``[skip, skip + window)``.

    ``skip`` drops the r most similar (likely false negatives); ``window=None`` = no
    upper bound.  Ranks count positions in the raw candidate list (before guards).
    """

    skip: int = 0
    window: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.skip < 0:
            raise ConfigError(f"skip must be >= 0, got {self.skip}")
        if self.window is not None and self.window < 1:
            raise ConfigError(f"window must be >= 1 or None, got {self.window}")


@dataclass(frozen=True, kw_only=True)
class ScoreWindowConfig(_BaseConfig):
    """``score_window``: only candidates with ``min_score <= score <= max_score``."""

    min_score: float | None = None
    max_score: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.min_score is not None and self.max_score is not None
                and self.min_score > self.max_score):
            raise ConfigError(f"min_score {self.min_score} > max_score {self.max_score}; "
                              "swap them")


@dataclass(frozen=True, kw_only=True)
class MarginConfig(_BaseConfig):
    """``margin``: false-negative guard (NV-Retriever TopK-MarginPos / TopK-PercPos).

    ``mode="absolute"``: keep negatives with ``score < max_score``.
    ``mode="relative"`` (TopK-PercPos): keep negatives with ``score < t`` where
    ``t = p - (1 - relative) * |p|`` and ``p`` is the positive score.  For ``p >= 0``
    this is ``relative * p`` (0.95 * p); for a negative ``p`` it is ``1.05 * p`` rather
    than ``0.95 * p``, so the threshold is always at or below the positive score.
    Queries without a positive score are not filtered by the relative margin.
    """

    mode: str = "relative"
    relative: float = 0.95
    max_score: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("absolute", "relative"):
            raise ConfigError(f"margin mode must be one of absolute, relative; got {self.mode!r}")
        if self.mode == "absolute" and self.max_score is None:
            raise ConfigError("margin mode 'absolute' needs max_score (e.g. max_score=0.8)")
        if not 0.0 < self.relative <= 1.0:
            raise ConfigError(f"relative must be in (0, 1], got {self.relative} (e.g. 0.95)")


@dataclass(frozen=True, kw_only=True)
class MixedConfig(_BaseConfig):
    """``mixed``: ``hard_fraction`` of k from the top of the list, the rest uniformly at
    random from the rest of the corpus (seeded by (seed, query)).  When fewer hard
    candidates survive the guards, random picks fill the gap."""

    hard_fraction: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ConfigError(f"hard_fraction must be in [0, 1], got {self.hard_fraction}")


@dataclass(frozen=True, kw_only=True)
class SemanticLevelConfig(_BaseConfig):
    """``semantic``: keep candidates whose label level vs the query is in ``levels``.

    Levels: unknown, unrelated, same_domain, fine_grained, same_label (see
    :func:`semantic_levels`).  The default drops ``same_label`` (likely false
    negatives).  Needs ``query_labels``/``corpus_labels`` in the batch.
    """

    levels: tuple[str, ...] = ("unknown", "unrelated", "same_domain", "fine_grained")

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [x for x in self.levels if x not in _ALL_LEVELS]
        if bad or not self.levels:
            raise ConfigError(f"unknown semantic level(s) {bad or '(none given)'}; allowed: "
                              f"{', '.join(_ALL_LEVELS)}")


@dataclass(frozen=True, kw_only=True)
class ChainConfig:
    """``chain``: guards of every step in order, then the pick of the last step
    (random/hard mixing if the last step is ``mixed``, top-k otherwise).

    >>> cfg = ChainConfig(steps=(RankWindowConfig(skip=2), MarginConfig(relative=0.95)))
    """

    steps: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("chain needs at least one step, e.g. steps=(TopKConfig(),)")
        for s in self.steps:
            if isinstance(s, ChainConfig) or type(s) not in _CONFIG_TO_STRATEGY:
                raise ConfigError(f"chain steps must be strategy configs (not chains), got "
                                  f"{type(s).__name__}")


# -------------------------------------------------------------------- strategies

Guard = Callable[[CandidateBatch], np.ndarray]


class NegativeStrategy:
    """Base class: base guards, strategy guards, then a pick.

    Subclasses set ``name``/``config_class`` and override :meth:`guards` and
    optionally :meth:`pick`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = _BaseConfig

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                              f"got {type(config).__name__}")
        self.config = config

    def pool_size(self, k: int) -> int:
        """How many candidates per query the search should return for ``k`` negatives."""
        return k + self.config.pool_extra

    def guards(self) -> list[tuple[str, Guard]]:
        return []

    def _base_guards(self) -> list[tuple[str, Guard]]:
        out: list[tuple[str, Guard]] = []
        if self.config.exclude_positives:
            out.append(("positive", _guard_positive))
        out.append(("self", _guard_self))
        if self.config.exclude_same_group:
            out.append(("same_group", _guard_group))
        return out

    def all_guards(self) -> list[tuple[str, Guard]]:
        return self._base_guards() + self.guards()

    def pick(self, batch: CandidateBatch, keep: np.ndarray, k: int) -> Selection:
        order, valid = _first_k(keep, k)
        return _gather(batch, order, valid, None)

    def select(self, batch: CandidateBatch, k: int) -> Selection:
        """Apply the guards and pick up to ``k`` negatives per query."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        keep = batch.ids >= 0
        removed: dict[str, int] = {}
        for gname, fn in self.all_guards():
            bad = fn(batch) & keep
            removed[gname] = removed.get(gname, 0) + int(bad.sum())
            keep &= ~bad
        sel = self.pick(batch, keep, k)
        sel.removed = removed
        if sel.levels is None and batch.query_labels is not None \
                and batch.corpus_labels is not None:
            sel.levels = _levels_of(batch, sel.ids)
        return sel


def _guard_positive(b: CandidateBatch) -> np.ndarray:
    if b.positive_ids is None:
        return np.zeros(b.ids.shape, bool)
    return _member(b.ids, b.positive_ids)


def _guard_self(b: CandidateBatch) -> np.ndarray:
    if b.self_ids is None:
        return np.zeros(b.ids.shape, bool)
    return (b.ids == b.self_ids[:, None]) & (b.self_ids[:, None] >= 0)


def _guard_group(b: CandidateBatch) -> np.ndarray:
    if b.query_groups is None or b.corpus_groups is None:
        return np.zeros(b.ids.shape, bool)
    g = b.corpus_groups[np.maximum(b.ids, 0)]
    return (g == b.query_groups[:, None]) & (g >= 0) & (b.ids >= 0)


def _levels_of(b: CandidateBatch, ids: np.ndarray) -> np.ndarray:
    assert b.query_labels is not None and b.corpus_labels is not None
    lv = semantic_levels(b.query_labels, b.corpus_labels[np.maximum(ids, 0)])
    return np.where(ids >= 0, lv, -1).astype(np.int8)


def _register(cls: type[NegativeStrategy]) -> type[NegativeStrategy]:
    NEGATIVE_STRATEGIES.register(cls.name)(cls)
    _CONFIG_TO_STRATEGY[cls.config_class] = cls
    return cls


_CONFIG_TO_STRATEGY: dict[type, type[NegativeStrategy]] = {}


@_register
class TopK(NegativeStrategy):
    name = "topk"
    config_class = TopKConfig


@_register
class RankWindow(NegativeStrategy):
    name = "rank_window"
    config_class = RankWindowConfig

    def pool_size(self, k: int) -> int:
        c = self.config
        return c.skip + max(k + c.pool_extra, c.window or 0)

    def guards(self) -> list[tuple[str, Guard]]:
        c = self.config

        def fn(b: CandidateBatch) -> np.ndarray:
            r = np.arange(b.ids.shape[1])[None, :]
            out = r < c.skip
            if c.window is not None:
                out = out | (r >= c.skip + c.window)
            return np.broadcast_to(out, b.ids.shape)

        return [("rank_window", fn)]


@_register
class ScoreWindow(NegativeStrategy):
    name = "score_window"
    config_class = ScoreWindowConfig

    def pool_size(self, k: int) -> int:
        return 4 * k + self.config.pool_extra

    def guards(self) -> list[tuple[str, Guard]]:
        c = self.config

        def fn(b: CandidateBatch) -> np.ndarray:
            out = np.zeros(b.ids.shape, bool)
            if c.min_score is not None:
                out |= b.scores < c.min_score
            if c.max_score is not None:
                out |= b.scores > c.max_score
            return out

        return [("score_window", fn)]


def relative_margin_threshold(positive_scores: np.ndarray, relative: float) -> np.ndarray:
    """``p - (1 - relative) * |p|``: always at or below ``p`` (see :class:`MarginConfig`).

    >>> relative_margin_threshold(np.array([0.8, -0.5]), 0.95).round(3).tolist()
    [0.76, -0.525]
    """
    p = np.asarray(positive_scores, dtype=np.float64)
    return p - (1.0 - relative) * np.abs(p)


@_register
class Margin(NegativeStrategy):
    name = "margin"
    config_class = MarginConfig

    def pool_size(self, k: int) -> int:
        return 2 * k + self.config.pool_extra

    def guards(self) -> list[tuple[str, Guard]]:
        c = self.config

        def absolute(b: CandidateBatch) -> np.ndarray:
            return b.scores >= c.max_score

        def relative(b: CandidateBatch) -> np.ndarray:
            if b.positive_scores is None:
                return np.zeros(b.ids.shape, bool)
            t = relative_margin_threshold(b.positive_scores, c.relative)[:, None]
            with np.errstate(invalid="ignore"):
                return np.isfinite(t) & (b.scores >= t)

        if c.mode == "absolute":
            return [("margin_absolute", absolute)]
        return [("margin_relative", relative)]


def _random_fill(batch: CandidateBatch, taken: np.ndarray, need: np.ndarray,
                 cfg: _BaseConfig, salt: int) -> np.ndarray:
    """(Q, max(need)) random corpus rows per query, avoiding ``taken``, positives, self and
    same-group rows; -1 where the corpus runs out.  Seeded by (seed, query_index)."""
    q = batch.ids.shape[0]
    width = int(need.max(initial=0))
    out = np.full((q, width), -1, np.int64)
    n = batch.corpus_size
    if width == 0 or n == 0:
        return out
    tries = 4 * width + 16
    j = np.arange(tries, dtype=np.uint64)[None, :]
    draws = (_hash_u64(batch.seed, salt, batch.query_index[:, None], j)
             % np.uint64(n)).astype(np.int64)
    bad = _member(draws, taken)
    if cfg.exclude_positives and batch.positive_ids is not None:
        bad |= _member(draws, batch.positive_ids)
    if batch.self_ids is not None:
        bad |= draws == batch.self_ids[:, None]
    if cfg.exclude_same_group and batch.query_groups is not None \
            and batch.corpus_groups is not None:
        g = batch.corpus_groups[draws]
        bad |= (g == batch.query_groups[:, None]) & (g >= 0)
    for i in range(q):
        if need[i] <= 0:
            continue
        row = draws[i][~bad[i]]
        _, first = np.unique(row, return_index=True)
        row = row[np.sort(first)][: need[i]]
        out[i, : len(row)] = row
    return out


@_register
class Mixed(NegativeStrategy):
    name = "mixed"
    config_class = MixedConfig

    def pick(self, batch: CandidateBatch, keep: np.ndarray, k: int) -> Selection:
        n_hard = int(round(k * self.config.hard_fraction))
        sel = super().pick(batch, keep, k)
        hard_valid = np.zeros(sel.ids.shape, bool)
        hard_valid[:, :n_hard] = sel.ids[:, :n_hard] >= 0
        ids = np.where(hard_valid, sel.ids, -1)
        scores = np.where(hard_valid, sel.scores, np.nan).astype(np.float32)
        ranks = np.where(hard_valid, sel.ranks, -1).astype(np.int32)
        n_have = hard_valid.sum(axis=1)
        need = k - n_have
        # Random picks avoid the whole candidate pool prefix the hard picks came from.
        rand = _random_fill(batch, np.where(hard_valid, ids, -1), need, self.config, salt=1)
        for i in np.nonzero(need > 0)[0]:
            r = rand[i][rand[i] >= 0]
            ids[i, n_have[i]: n_have[i] + len(r)] = r
        return Selection(ids=ids, scores=scores, ranks=ranks)


@_register
class SemanticLevel(NegativeStrategy):
    name = "semantic"
    config_class = SemanticLevelConfig

    def pool_size(self, k: int) -> int:
        return 4 * k + self.config.pool_extra

    def guards(self) -> list[tuple[str, Guard]]:
        allowed = np.array([_ALL_LEVELS.index(x) - 1 for x in self.config.levels], np.int8)

        def fn(b: CandidateBatch) -> np.ndarray:
            if b.query_labels is None or b.corpus_labels is None:
                raise ConfigError("the semantic strategy needs labels: pass a (key, label) "
                                  "table, e.g. --labels labels.parquet")
            return ~np.isin(_levels_of(b, b.ids), allowed)

        return [("semantic_level", fn)]


class Chain(NegativeStrategy):
    name = "chain"
    config_class = ChainConfig

    def __init__(self, config: ChainConfig) -> None:
        super().__init__(config)
        self.steps = [build_strategy(s) for s in config.steps]
        self._last = self.steps[-1]

    def pool_size(self, k: int) -> int:
        return max(s.pool_size(k) for s in self.steps)

    def all_guards(self) -> list[tuple[str, Guard]]:
        out: list[tuple[str, Guard]] = []
        seen: set[str] = set()
        for s in self.steps:
            for gname, fn in s.all_guards():
                if gname in ("positive", "self", "same_group") and gname in seen:
                    continue
                seen.add(gname)
                out.append((gname, fn))
        return out

    def pick(self, batch: CandidateBatch, keep: np.ndarray, k: int) -> Selection:
        return self._last.pick(batch, keep, k)


NEGATIVE_STRATEGIES.register("chain")(Chain)
_CONFIG_TO_STRATEGY[ChainConfig] = Chain


def build_strategy(config: Any) -> NegativeStrategy:
    """The strategy object for a strategy config.

    >>> build_strategy(MixedConfig(hard_fraction=0.8)).name
    'mixed'
    """
    cls = _CONFIG_TO_STRATEGY.get(type(config))
    if cls is None:
        raise ConfigError(f"not a negative strategy config: {type(config).__name__}; "
                          f"known strategies: {', '.join(NEGATIVE_STRATEGIES.names())}")
    return cls(config)


def strategy_to_dict(config: Any) -> dict[str, Any]:
    """``{"name": ..., **fields}`` (chains nest their steps); inverse of
    :func:`strategy_from_dict`."""
    name = build_strategy(config).name if not isinstance(config, ChainConfig) else "chain"
    if isinstance(config, ChainConfig):
        return {"name": "chain", "steps": [strategy_to_dict(s) for s in config.steps]}
    return {"name": name, **config_to_dict(config)}


def strategy_from_dict(data: dict[str, Any]) -> Any:
    """Build a strategy config from ``{"name": "margin", "relative": 0.95, ...}``.

    >>> strategy_from_dict({"name": "rank_window", "skip": 3}).skip
    3
    """
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"strategy config must be a mapping with a 'name', got {data!r}; "
                          f"names: {', '.join(NEGATIVE_STRATEGIES.names())}")
    rest = {k: v for k, v in data.items() if k != "name"}
    cls = NEGATIVE_STRATEGIES.get(str(data["name"]))
    if cls is Chain:
        return ChainConfig(steps=tuple(strategy_from_dict(s) for s in rest.get("steps", ())))
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(rest) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for strategy {data['name']!r}; "
                          f"allowed: {', '.join(sorted(fields))}")
    rest = {k: tuple(v) if isinstance(v, list) else v for k, v in rest.items()}
    return cls.config_class(**rest)


# --------------------------------------------------------------------- curriculum


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    """Easy/hard mix by training progress.

    ``stages`` are ``(progress_start, easy_fraction)`` pairs, progress = step /
    total_steps in [0, 1); the default is the 70/30 -> 50/50 -> 30/70 easy/hard schedule
    over three equal thirds of training.
    """

    total_steps: int
    stages: tuple[tuple[float, float], ...] = ((0.0, 0.7), (1 / 3, 0.5), (2 / 3, 0.3))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {self.total_steps}")
        st = tuple((float(a), float(b)) for a, b in self.stages)
        object.__setattr__(self, "stages", st)
        if not st or st[0][0] != 0.0:
            raise ConfigError(f"stages must start at progress 0.0, got {self.stages}")
        if any(b[0] <= a[0] for a, b in zip(st, st[1:], strict=False)):
            raise ConfigError(f"stage starts must increase strictly, got {self.stages}")
        if any(not 0.0 <= e <= 1.0 for _, e in st):
            raise ConfigError(f"easy fractions must be in [0, 1], got {self.stages}")


class NegativeCurriculum:
    """Which negatives a query gets at a training step: a seeded, deterministic mix of
    easy and hard ones whose easy share follows :class:`CurriculumConfig`.

    >>> cur = NegativeCurriculum(CurriculumConfig(total_steps=300))
    >>> cur.easy_fraction(0), cur.easy_fraction(150), cur.easy_fraction(299)
    (0.7, 0.5, 0.3)
    >>> len(cur.choose(7, hard=[1, 2, 3, 4], easy=[9, 8, 7, 6], n=4))
    4

    Choices depend only on (seed, step, query_index), so a resumed run (after
    :meth:`load_state_dict`) picks exactly what an uninterrupted one would.
    """

    def __init__(self, config: CurriculumConfig) -> None:
        self.config = config
        self.step = 0

    def _progress(self, step: int) -> float:
        return min(max(step, 0) / self.config.total_steps, 1.0)

    def stage(self, step: int | None = None) -> int:
        p = self._progress(self.step if step is None else step)
        return max(i for i, (start, _) in enumerate(self.config.stages) if start <= p)

    def easy_fraction(self, step: int | None = None) -> float:
        return self.config.stages[self.stage(step)][1]

    def advance(self, n: int = 1) -> None:
        self.step += n

    def choose(self, query_index: int, *, hard: Sequence[T], easy: Sequence[T], n: int,
               step: int | None = None) -> list[T]:
        """``n`` negatives: ``round(n * easy_fraction)`` from ``easy``, the rest from
        ``hard``; a short pool is topped up from the other one.  Hard picks keep their
        (hardest-first) order and come first."""
        step = self.step if step is None else step
        n_easy = int(round(n * self.easy_fraction(step)))
        n_hard = n - n_easy
        if n_hard > len(hard):
            n_easy += n_hard - len(hard)
            n_hard = len(hard)
        if n_easy > len(easy):
            n_hard = min(len(hard), n_hard + n_easy - len(easy))
            n_easy = len(easy)
        rng = np.random.default_rng([self.config.seed, step, query_index])
        h = np.sort(rng.permutation(len(hard))[:n_hard])
        e = rng.permutation(len(easy))[:n_easy]
        return [hard[i] for i in h] + [easy[i] for i in e]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "config": config_to_dict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        cfg = state.get("config")
        if cfg is not None:
            mine = config_to_dict(self.config)
            norm = {**cfg, "stages": [list(map(float, s)) for s in cfg.get("stages", [])]}
            if norm != {**mine, "stages": [list(s) for s in mine["stages"]]}:
                raise ConfigError(f"curriculum state was saved with config {cfg}, this "
                                  f"curriculum has {mine}; build it with the saved config")
        self.step = int(state["step"])
