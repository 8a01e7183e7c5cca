"""Pure batch builders: a rank's ordered sample ids -> planned batches.

A builder consumes ``(ids, pad)`` (global sample ids in stream order and their padding
flags) plus per-sample metadata (:class:`SampleMeta`: keys, group codes, width/height
from the manifest, no decoding) and emits :class:`PlannedBatch` objects.  Builders are
deterministic given the rng they are handed, so a batch plan is a pure function of
``(seed, epoch, rank, world_size)``.

- :class:`FixedBatching` -- consecutive chunks of ``batch_size``.
- :class:`BucketBatching` -- aspect-ratio buckets; each batch carries its target size.
- :class:`GroupAwareBatching` -- never two samples of one group in a batch.
- :class:`NegativeCoBatching` -- each query's mined negatives placed in its batch, with
  the pairs recorded for the in-batch masks; difficulty picked by a curriculum hook.

>>> meta = SampleMeta(num_samples=5)
>>> plan = FixedBatching().plan(np.arange(5), np.zeros(5, bool), batch_size=2,
...     drop_last=False, meta=meta, rng=np.random.default_rng(0), epoch=0)
>>> [b.ids.tolist() for b in plan]
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._registry import Registry
from ..errors import ConfigError, ShardError

__all__ = [
    "BATCHINGS",
    "Batching",
    "BucketBatching",
    "CurriculumSelector",
    "FixedBatching",
    "GroupAwareBatching",
    "HardestFirst",
    "NegativeCoBatching",
    "NegativeSelector",
    "NegativeTable",
    "PlannedBatch",
    "SampleMeta",
    "equalize_batches",
    "group_batches",
]

BATCHINGS: Registry[type] = Registry("batching")


@dataclass(frozen=True, kw_only=True, eq=False)
class SampleMeta:
    """What the planner knows about every global sample id without decoding.

    ``keys`` (str), ``groups`` (int codes, -1 = no group), ``width``/``height`` (0 =
    unknown), ``source`` (dataset index when mixing).  Arrays may be None when unknown.
    """

    num_samples: int
    keys: np.ndarray | None = None
    groups: np.ndarray | None = None
    width: np.ndarray | None = None
    height: np.ndarray | None = None
    source: np.ndarray | None = None

    def key_to_id(self) -> dict[str, int]:
        if self.keys is None:
            raise ConfigError("sample keys are unknown for this source; negatives need keys: "
                              "use a dataset folder or a ShardListSource without nsamples")
        return {str(k): i for i, k in enumerate(self.keys.tolist())}


@dataclass(frozen=True, kw_only=True, eq=False)
class PlannedBatch:
    """One batch to load: global ids, padding flags and builder extras.

    ``size``: (height, width) the images of this batch are resized to (buckets).
    ``neg_pairs``: int array (m, 2); row ``(i, j)`` = position j holds a mined negative
    of the query at position i.
    """

    ids: np.ndarray
    pad: np.ndarray
    size: tuple[int, int] | None = None
    neg_pairs: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.size)


class Batching(Protocol):
    """A batch builder.  ``equal_counts`` says whether equal-length streams always give
    equal batch counts (then the loader need not plan the other ranks to even out)."""

    equal_counts: bool

    def plan(self, ids: np.ndarray, pad: np.ndarray, *, batch_size: int, drop_last: bool,
             meta: SampleMeta, rng: np.random.Generator, epoch: int) -> list[PlannedBatch]: ...


def _chunks(ids: np.ndarray, pad: np.ndarray, batch_size: int, drop_last: bool
            ) -> list[PlannedBatch]:
    out = []
    for i in range(0, ids.size, batch_size):
        if drop_last and i + batch_size > ids.size:
            break
        out.append(PlannedBatch(ids=ids[i:i + batch_size], pad=pad[i:i + batch_size]))
    return out


@BATCHINGS.register("fixed")
@dataclass(frozen=True, kw_only=True)
class FixedBatching:
    """Consecutive chunks of ``batch_size`` samples (the last one shorter unless
    ``drop_last``)."""

    equal_counts: bool = field(default=True, init=False, repr=False)

    def plan(self, ids: np.ndarray, pad: np.ndarray, *, batch_size: int, drop_last: bool,
             meta: SampleMeta, rng: np.random.Generator, epoch: int) -> list[PlannedBatch]:
        return _chunks(ids, pad, batch_size, drop_last)


@BATCHINGS.register("bucket")
@dataclass(frozen=True, kw_only=True)
class BucketBatching:
    """Aspect-ratio buckets from manifest width/height (nothing is decoded to plan).

    Each sample goes to the bucket whose ratio (width / height) is nearest in log space;
    a batch is emitted when its bucket fills, with ``size`` = that bucket's (height,
    width): about ``area`` pixels, both sides multiples of ``multiple``.  Samples of
    unknown size go to the bucket nearest 1:1.  Leftovers at the end of the epoch form
    short batches (dropped with ``drop_last``).

    The resolution-bucketed mode of the Loader: the decode step resizes (cover and
    centre-crop) every image of a batch to its bucket.  ``schedule`` (a
    :class:`~mmshard.samplers.resolution_schedule.MultiScaleSchedule`) sets the area per
    epoch: ``resolution_at(epoch) ** 2`` instead of ``area`` (a multi-scale curriculum;
    pure in the epoch, so resume is unchanged).

    >>> BucketBatching(ratios=(1.0, 2.0), area=64 * 64, multiple=16).bucket_sizes()
    [(64, 64), (48, 96)]
    """

    ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.333, 2.0)
    area: int = 256 * 256
    multiple: int = 32
    schedule: Any = None
    equal_counts: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.ratios or any(r <= 0 for r in self.ratios):
            raise ConfigError(f"bucket ratios must be positive numbers, got {self.ratios}")
        if self.area < self.multiple ** 2 or self.multiple < 1:
            raise ConfigError(f"bucket area {self.area} must be >= multiple**2 "
                              f"({self.multiple}**2) and multiple >= 1")
        if self.schedule is not None and not callable(getattr(self.schedule, "resolution_at",
                                                               None)):
            raise ConfigError("bucket schedule must be a MultiScaleSchedule (resolution_at("
                              f"epoch) -> int), got {self.schedule!r}")

    def bucket_sizes(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """(height, width) per ratio; with a schedule, at ``epoch``'s resolution."""
        area = self.area
        if self.schedule is not None and epoch is not None:
            area = max(self.multiple ** 2, int(self.schedule.resolution_at(epoch)) ** 2)
        out = []
        for r in self.ratios:
            w = max(self.multiple, round(math.sqrt(area * r) / self.multiple)
                    * self.multiple)
            h = max(self.multiple, round(math.sqrt(area / r) / self.multiple)
                    * self.multiple)
            out.append((h, w))
        return out

    def assign(self, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """Bucket index per sample (vectorised)."""
        w = width.astype(np.float64)
        h = height.astype(np.float64)
        known = (w > 0) & (h > 0)
        ratio = np.where(known, w / np.where(h > 0, h, 1.0), 1.0)
        logs = np.log(np.asarray(self.ratios, dtype=np.float64))
        return np.abs(np.log(ratio)[:, None] - logs[None, :]).argmin(axis=1)

    def plan(self, ids: np.ndarray, pad: np.ndarray, *, batch_size: int, drop_last: bool,
             meta: SampleMeta, rng: np.random.Generator, epoch: int) -> list[PlannedBatch]:
        if meta.width is None or meta.height is None:
            raise ConfigError("BucketBatching needs image width/height from manifest.parquet; "
                              "this source has none (use FixedBatching or a dataset folder)")
        bucket = self.assign(meta.width[ids], meta.height[ids])
        sizes = self.bucket_sizes(epoch)
        pending: list[list[int]] = [[] for _ in sizes]
        out: list[PlannedBatch] = []

        def emit(b: int) -> None:
            pos = np.asarray(pending[b], dtype=np.int64)
            out.append(PlannedBatch(ids=ids[pos], pad=pad[pos], size=sizes[b]))
            pending[b] = []

        for i, b in enumerate(bucket.tolist()):
            pending[b].append(i)
            if len(pending[b]) == batch_size:
                emit(b)
        if not drop_last:
            for b in range(len(sizes)):
                if pending[b]:
                    emit(b)
        return out


@BATCHINGS.register("group")
@dataclass(frozen=True, kw_only=True)
class GroupAwareBatching:
    """Batches in which no two samples share a group (video id, speaker, source ...),
    in the fewest batches possible: ``max(ceil(n / batch_size), largest group)``.

    Batches are filled in stream order; a sample whose group is already in the open
    batch waits and goes into the next batch with room for it.  So that a large group
    does not end the epoch as a run of one-sample batches, a group with as many
    samples left as batches left puts its next sample into every batch (pulled forward
    from later in the stream).  Samples with no group (-1) never collide.  With
    ``drop_last``, short batches are dropped.  ``spread_groups``: the loader deals
    each group's samples round-robin over the ranks (at most ``ceil(G / world_size)``
    per rank), so batches stay full on every rank.

    >>> g = np.array([0, 0, 0, 1, 2, 3])
    >>> plan = GroupAwareBatching().plan(np.arange(6), np.zeros(6, bool), batch_size=2,
    ...     drop_last=False, meta=SampleMeta(num_samples=6, groups=g),
    ...     rng=np.random.default_rng(0), epoch=0)
    >>> [b.ids.tolist() for b in plan]
    [[0, 3], [1, 4], [2, 5]]
    """

    equal_counts: bool = field(default=False, init=False, repr=False)
    spread_groups: bool = field(default=True, init=False, repr=False)

    def plan(self, ids: np.ndarray, pad: np.ndarray, *, batch_size: int, drop_last: bool,
             meta: SampleMeta, rng: np.random.Generator, epoch: int) -> list[PlannedBatch]:
        if meta.groups is None:
            raise ConfigError("GroupAwareBatching needs group ids from manifest.parquet; "
                              "this source has none")
        out = [PlannedBatch(ids=ids[pos], pad=pad[pos])
               for pos in group_batches(meta.groups[ids], batch_size)]
        if drop_last:
            out = [b for b in out if len(b) == batch_size]
        return out


def group_batches(groups: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions of ``groups`` cut into ``max(ceil(n / batch_size), largest group)``
    batches, no group twice in a batch, each batch in stream order.

    Invariant kept batch after batch (so the count is reached): every group has at
    most as many samples left as there are batches left (groups at the limit are
    served first), and the samples left fit in the batches left.
    """
    arr = np.asarray(groups, dtype=np.int64)
    n = arr.size
    if arr.size and arr.max() >= 0:  # a group with one sample here cannot collide
        _, inv, cnt = np.unique(arr, return_inverse=True, return_counts=True)
        arr = np.where(cnt[inv] > 1, arr, -1)
    if not (arr >= 0).any():  # nothing can collide: plain chunks
        return [np.arange(i, min(i + batch_size, n), dtype=np.int64)
                for i in range(0, n, batch_size)]
    g = arr.tolist()
    members: dict[int, deque[int]] = {}
    for i, x in enumerate(g):
        if x >= 0:
            members.setdefault(x, deque()).append(i)
    by_count: dict[int, set[int]] = {}  # samples left -> groups with that many
    for x, m in members.items():
        by_count.setdefault(len(m), set()).add(x)
    top = max(by_count, default=0)
    left = max(-(-n // batch_size), top)
    taken = [False] * n
    waiting: deque[int] = deque()
    nxt = 0
    out: list[np.ndarray] = []

    def take(i: int, batch: list[int], used: set[int]) -> None:
        taken[i] = True
        batch.append(i)
        x = g[i]
        if x >= 0:  # (ungrouped samples need no bookkeeping)
            used.add(x)
            m = members[x]
            by_count[len(m)].discard(x)
            if m[0] == i:  # usually the group's next sample in stream order
                m.popleft()
            else:  # a rotated waiting queue can serve a later member first
                m.remove(i)
            if m:
                by_count.setdefault(len(m), set()).add(x)

    def fits(i: int, batch: list[int], used: set[int]) -> bool:
        if taken[i]:
            return True  # pulled forward earlier: drop it from the stream
        if g[i] >= 0 and g[i] in used:
            return False
        take(i, batch, used)
        return True

    while left > 0 and (nxt < n or waiting or top > 0):
        batch: list[int] = []
        used: set[int] = set()
        while top > 0 and not by_count.get(top):
            top -= 1
        urgent = sorted(x for c in range(top, left - 1, -1) for x in by_count.get(c, ()))
        for x in urgent:
            take(members[x][0], batch, used)
        for _ in range(len(waiting)):
            if len(batch) >= batch_size:
                break
            i = waiting.popleft()
            if not fits(i, batch, used):
                waiting.append(i)
        while len(batch) < batch_size and nxt < n:
            nxt += 1
            if not fits(nxt - 1, batch, used):
                waiting.append(nxt - 1)
        if batch:
            out.append(np.asarray(sorted(batch), dtype=np.int64))
        left -= 1
    if not all(taken):  # pragma: no cover - the invariant above rules this out
        raise ConfigError("group batching left samples unplanned (internal error)")
    return out


@runtime_checkable
class NegativeSelector(Protocol):
    """Curriculum hook: which of a query's mined negatives to use this epoch.

    Gets the candidates' scores and ranks (best-first order of the Parquet), returns
    indices into them, at most ``k``.  ``mmshard.samplers.negatives.NegativeCurriculum``
    or any object with this ``select`` fits.
    """

    def select(self, scores: np.ndarray, ranks: np.ndarray, *, k: int, epoch: int,
               rng: np.random.Generator, query: int) -> Sequence[int]: ...


@dataclass(frozen=True, kw_only=True)
class HardestFirst:
    """Default selector: the ``k`` lowest-ranked (hardest) negatives, skipping the
    first ``skip`` (a margin against false negatives).

    >>> HardestFirst().select(np.zeros(3), np.array([2, 1, 3]), k=2, epoch=0,
    ...                       rng=np.random.default_rng(0))
    [1, 0]
    """

    skip: int = 0

    def select(self, scores: np.ndarray, ranks: np.ndarray, *, k: int, epoch: int,
               rng: np.random.Generator, query: int = 0) -> Sequence[int]:
        return np.argsort(ranks, kind="stable")[self.skip:self.skip + k].tolist()


class CurriculumSelector:
    """Adapts ``mmshard.samplers.negatives.NegativeCurriculum`` (its
    ``choose(query_index, hard=, easy=, n=, step=)``) to :class:`NegativeSelector`.

    The hardest half of a query's mined negatives (by rank) is the hard pool, the rest
    (easiest first) the easy pool; the curriculum's step is the loader epoch, so build
    it with ``CurriculumConfig(total_steps=<epochs>)``.
    """

    def __init__(self, curriculum: Any) -> None:
        if not callable(getattr(curriculum, "choose", None)):
            raise ConfigError("CurriculumSelector needs an object with choose(query_index, "
                              f"hard=, easy=, n=, step=), got {type(curriculum).__name__}")
        self.curriculum = curriculum

    def select(self, scores: np.ndarray, ranks: np.ndarray, *, k: int, epoch: int,
               rng: np.random.Generator, query: int = 0) -> Sequence[int]:
        order = np.argsort(ranks, kind="stable").tolist()
        half = -(-len(order) // 2)
        hard, easy = order[:half], order[half:][::-1]
        return list(self.curriculum.choose(query, hard=hard, easy=easy, n=min(k, len(order)),
                                           step=epoch))


class NegativeTable:
    """Mined negatives by query key (from ``mmshard mine``'s ``negatives.parquet``:
    query_key, negative_keys, negative_scores, negative_ranks, positive_score).

    >>> t = NegativeTable({"a": (["b", "c"], [0.9, 0.8], [1, 2])})
    >>> t.get("a")[0]
    ['b', 'c']
    """

    def __init__(self, rows: dict[str, tuple[Sequence[str], Sequence[float], Sequence[int]]]
                 ) -> None:
        self._rows = {k: (list(n), np.asarray(s, dtype=np.float64),
                          np.asarray(r, dtype=np.int64)) for k, (n, s, r) in rows.items()}

    @classmethod
    def from_parquet(cls, path: str) -> NegativeTable:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["query_key", "negative_keys",
                                                 "negative_scores", "negative_ranks"])
        except (OSError, KeyError, ValueError) as e:
            raise ShardError(f"cannot read negatives Parquet {path!r} (needs query_key, "
                             f"negative_keys, negative_scores, negative_ranks, as written by "
                             f"`mmshard mine`): {e}") from e
        cols = table.to_pydict()
        rows = {}
        for q, n, s, r in zip(cols["query_key"], cols["negative_keys"],
                              cols["negative_scores"], cols["negative_ranks"], strict=True):
            rows[str(q)] = (n or [], s or [], r if r else list(range(1, len(n or []) + 1)))
        return cls(rows)

    def get(self, key: str) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        return self._rows.get(key)

    def __len__(self) -> int:
        return len(self._rows)


@BATCHINGS.register("negatives")
@dataclass(frozen=True, kw_only=True, eq=False)
class NegativeCoBatching:
    """Put each query's mined hard negatives in the same batch as the query.

    The stream supplies queries; after each query up to ``per_query`` of its negatives
    (chosen by ``selector``, default :class:`HardestFirst`) that exist in this dataset
    selection and are not yet in the batch are added.  ``neg_pairs`` records (query
    position, negative position); the loader turns it into ``__neg_mask__`` and, with
    groups, ``__pos_mask__``.  A sample already used as a negative this epoch is not
    used again as a query.  Negatives in the same group as any batch member are skipped
    when ``skip_same_group`` (they would be false negatives).
    """

    negatives: NegativeTable
    per_query: int = 1
    selector: Any = None
    skip_same_group: bool = True
    equal_counts: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.per_query < 1:
            raise ConfigError(f"per_query must be >= 1, got {self.per_query}")
        if self.selector is not None and not callable(getattr(self.selector, "select", None)):
            raise ConfigError("selector must have a select(scores, ranks, *, k, epoch, rng) "
                              f"method, got {type(self.selector).__name__}")

    def plan(self, ids: np.ndarray, pad: np.ndarray, *, batch_size: int, drop_last: bool,
             meta: SampleMeta, rng: np.random.Generator, epoch: int) -> list[PlannedBatch]:
        if batch_size < 2:
            raise ConfigError("NegativeCoBatching needs batch_size >= 2")
        key_to_id = meta.key_to_id()
        keys = meta.keys
        assert keys is not None
        groups = meta.groups
        selector = self.selector or HardestFirst()
        used_as_neg: set[int] = set()
        out: list[PlannedBatch] = []
        b_ids: list[int] = []
        b_pad: list[bool] = []
        pairs: list[tuple[int, int]] = []
        b_groups: set[int] = set()

        def emit() -> None:
            out.append(PlannedBatch(
                ids=np.asarray(b_ids, dtype=np.int64), pad=np.asarray(b_pad, dtype=bool),
                neg_pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2)))
            b_ids.clear()
            b_pad.clear()
            pairs.clear()
            b_groups.clear()

        for q, qpad in zip(ids.tolist(), pad.tolist(), strict=True):
            if q in used_as_neg or q in b_ids:
                continue
            qpos = len(b_ids)
            b_ids.append(q)
            b_pad.append(qpad)
            if groups is not None and groups[q] >= 0:
                b_groups.add(int(groups[q]))
            row = self.negatives.get(str(keys[q]))
            if row is not None and len(b_ids) < batch_size:
                nkeys, scores, ranks = row
                room = min(self.per_query, batch_size - len(b_ids))
                order = list(selector.select(scores, ranks, k=self.per_query, epoch=epoch,
                                             rng=rng, query=q))
                # candidates not in this selection stand in (hardest first) for picks
                # that are absent or already in the batch
                order += [j for j in np.argsort(ranks, kind="stable").tolist()
                          if j not in order]
                for j in order:
                    if room == 0:
                        break
                    n = key_to_id.get(str(nkeys[int(j)]))
                    if n is None or n in b_ids:
                        continue
                    if self.skip_same_group and groups is not None and groups[n] >= 0 \
                            and int(groups[n]) in b_groups:
                        continue
                    pairs.append((qpos, len(b_ids)))
                    b_ids.append(n)
                    b_pad.append(False)
                    used_as_neg.add(n)
                    if groups is not None and groups[n] >= 0:
                        b_groups.add(int(groups[n]))
                    room -= 1
            if len(b_ids) >= batch_size:
                emit()
        if b_ids and not drop_last:
            emit()
        return out


def equalize_batches(batches: list[PlannedBatch], target: int) -> list[PlannedBatch]:
    """Cut to ``target`` batches, or extend by repeating this rank's own batches from
    the start with every sample flagged as padding (so all ranks step together).

    >>> b = [PlannedBatch(ids=np.arange(2), pad=np.zeros(2, bool))]
    >>> [x.pad.tolist() for x in equalize_batches(b, 2)]
    [[False, False], [True, True]]
    """
    if target <= len(batches):
        return batches[:target]
    if not batches:
        raise ConfigError("a rank has no batch to repeat: lower batch_size or world_size")
    out = list(batches)
    i = 0
    while len(out) < target:
        src = batches[i % len(batches)]
        out.append(PlannedBatch(ids=src.ids, pad=np.ones_like(src.pad), size=src.size,
                                neg_pairs=src.neg_pairs))
        i += 1
    return out
