"""Seeded epoch order: shard shuffle, equal per-rank partition, buffered sample shuffle.

Everything here is a pure function of ``(seed, epoch, rank, world_size)`` (plus an
optional ``salt`` used by mixing and elastic resume), so a resumed or restarted job
recomputes exactly the same order; the only state to checkpoint is a position.

Samples are numbered by *global id*: shard ``s`` holds ids
``starts[s] .. starts[s] + counts[s] - 1`` in tar order.  One epoch is planned as:

1. shard order: a seeded permutation of the shards (identity when ``shuffle=False``);
2. the global list: every sample id, shard after shard, in that order;
3. equal work: the list is padded by wrapping around (``pad_policy="wrap"``, the extra
   entries flagged as padding) or cut (``"drop"``) to a multiple of ``world_size``;
4. partition: rank ``r`` gets the ``r``-th contiguous slice (few shards per rank, so
   reads stay local);
5. sample shuffle, seeded per ``(seed, epoch, rank)``: a WebDataset-style shuffle buffer
   over the rank's slice (default), or, with ``shuffle_window=k``, a *block shuffle*: the
   rank's slice is cut into windows of ``k`` consecutive shards and samples are fully
   shuffled within each window.  Every shard is then in use only while its window is
   read (at most ``k`` shards in flight, never one again after its window), which is what
   a bounded shard cache needs: a shuffle buffer keeps samples of long-read shards waiting
   and makes the cache fetch them again (:mod:`mmshard.pipelines.stream.cache`).

>>> order = EpochOrder(seed=0, shuffle=False)
>>> ids, pad = order.rank_order([3, 2], epoch=0, rank=1, world_size=2)
>>> ids.tolist(), pad.tolist()
([3, 4, 0], [False, False, True])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["PAD_POLICIES", "EpochOrder", "block_shuffle", "buffered_shuffle",
           "group_partition", "make_rng", "shard_permutation"]

PAD_POLICIES = ("wrap", "drop")
_MASK64 = (1 << 64) - 1


def make_rng(seed: int, *parts: int) -> np.random.Generator:
    """A numpy Generator seeded by ``seed`` and any non-negative ints (epoch, rank, ...).

    >>> int(make_rng(1, 2, 3).integers(100)) == int(make_rng(1, 2, 3).integers(100))
    True
    """
    return np.random.default_rng([int(seed) & _MASK64, *(int(p) & _MASK64 for p in parts)])


def shard_permutation(num_shards: int, *, seed: int, epoch: int, shuffle: bool = True,
                      salt: Sequence[int] = ()) -> np.ndarray:
    """The order shards are read in this epoch (the same on every rank).

    >>> sorted(shard_permutation(4, seed=0, epoch=0).tolist())
    [0, 1, 2, 3]
    """
    if not shuffle:
        return np.arange(num_shards, dtype=np.int64)
    return make_rng(seed, 0x5A4D, epoch, *salt).permutation(num_shards).astype(np.int64)


def buffered_shuffle(n: int, *, buffer_size: int | None, rng: np.random.Generator
                     ) -> np.ndarray:
    """A permutation of ``range(n)`` as a shuffle buffer of ``buffer_size`` would emit it.

    ``buffer_size=None`` is a full shuffle; ``<= 1`` keeps the order.  An item can move
    at most ``buffer_size - 1`` places earlier, so reads stay close to the shard order.

    >>> sorted(buffered_shuffle(5, buffer_size=2, rng=make_rng(0)).tolist())
    [0, 1, 2, 3, 4]
    """
    if buffer_size is None:
        return rng.permutation(n).astype(np.int64)
    if buffer_size <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    picks = rng.integers(0, 1 << 62, size=n).tolist()
    buf = list(range(min(buffer_size, n)))
    nxt = len(buf)
    for i in range(n):
        j = picks[i] % len(buf)
        out[i] = buf[j]
        if nxt < n:
            buf[j] = nxt
            nxt += 1
        else:
            buf[j] = buf[-1]
            buf.pop()
    return out


def block_shuffle(shards: np.ndarray, *, window: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(shards))`` that shuffles within windows of ``window``
    consecutive shard runs (``shards[i]``: the shard of position ``i``; a run is a maximal
    stretch of equal values).  Windows keep their order, so a shard's positions all fall
    in one window (or two, when a run is cut by a rank boundary's padding) and at most
    ``window`` shards are in use at once.

    >>> p = block_shuffle(np.array([0, 0, 1, 1, 2, 2]), window=2, rng=make_rng(0))
    >>> sorted(p[:4].tolist()), sorted(p[4:].tolist())
    ([0, 1, 2, 3], [4, 5])
    """
    sh = np.asarray(shards, dtype=np.int64)
    n = sh.size
    if window < 1:
        raise ConfigError(f"shuffle_window must be >= 1 shards, got {window}")
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    run = np.concatenate([[0], np.cumsum(sh[1:] != sh[:-1])])  # run number per position
    block = run // window
    key = rng.random(n)
    return np.lexsort((key, block)).astype(np.int64)


def group_partition(groups: np.ndarray, world_size: int) -> list[np.ndarray]:
    """Positions ``0 .. len(groups) - 1`` split into ``world_size`` equal parts so that
    every group is spread evenly: each rank holds at most ``ceil(G / world_size)`` of a
    group of ``G``.  Groups are dealt in order of first appearance, members in order;
    samples without a group (-1) count as their own group.  Each part keeps the
    original order.  ``len(groups)`` must be a multiple of ``world_size``.

    >>> [p.tolist() for p in group_partition(np.array([0, 0, 0, 0, 1, -1]), 2)]
    [[0, 2, 4], [1, 3, 5]]
    """
    g = np.asarray(groups, dtype=np.int64)
    n = g.size
    if n % world_size:
        raise ConfigError(f"{n} positions do not split into {world_size} equal parts")
    pos = np.arange(n, dtype=np.int64)
    # the group's first position is its rank in dealing order; -1 is its own group
    code = np.where(g >= 0, g - g.min(initial=0), -1)
    first = np.full(max(int(code.max(initial=-1)) + 1, 1), n, dtype=np.int64)
    grouped = code >= 0
    np.minimum.at(first, code[grouped], pos[grouped])
    lead = np.where(grouped, first[np.where(grouped, code, 0)], pos)
    dealt = np.lexsort((pos, lead))
    owner = np.empty(n, dtype=np.int64)
    owner[dealt] = np.arange(n) % world_size
    return [np.flatnonzero(owner == r) for r in range(world_size)]


@dataclass(frozen=True, kw_only=True)
class EpochOrder:
    """How one rank's samples are chosen and ordered each epoch.

    ``shuffle=False`` is evaluation order: shards in index order, no sample shuffle;
    with ``pad_policy="wrap"`` every sample is read exactly once across ranks (plus
    flagged padding).  ``shuffle_buffer=None`` shuffles a rank's whole slice.
    ``shuffle_window=k`` replaces the shuffle buffer by a block shuffle over windows of
    ``k`` shards (:func:`block_shuffle`; the Loader sizes it from ``cache_limit`` when it
    reads through a shard cache).

    >>> EpochOrder(seed=1, pad_policy="drop").rank_order([5, 1], epoch=0, rank=0,
    ...     world_size=2)[0].size
    3
    """

    seed: int
    shuffle: bool = True
    shuffle_buffer: int | None = 2000
    pad_policy: str = "wrap"
    shuffle_window: int | None = None

    def __post_init__(self) -> None:
        if self.pad_policy not in PAD_POLICIES:
            raise ConfigError(
                f"pad_policy must be one of {', '.join(PAD_POLICIES)}, got {self.pad_policy!r}"
            )
        if self.shuffle_buffer is not None and self.shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0 or None, got {self.shuffle_buffer}")
        if self.shuffle_window is not None and self.shuffle_window < 1:
            raise ConfigError(f"shuffle_window must be >= 1 shards or None (shuffle buffer), "
                              f"got {self.shuffle_window}")

    def global_order(self, counts: Sequence[int], *, epoch: int,
                     salt: Sequence[int] = ()) -> np.ndarray:
        """All global ids, shard after shard in this epoch's shard order."""
        counts_a = np.asarray(counts, dtype=np.int64)
        if counts_a.ndim != 1 or (counts_a < 0).any():
            raise ConfigError(f"shard sample counts must be >= 0, got {list(counts)}")
        starts = np.concatenate([[0], np.cumsum(counts_a)[:-1]]).astype(np.int64)
        perm = shard_permutation(len(counts_a), seed=self.seed, epoch=epoch,
                                 shuffle=self.shuffle, salt=salt)
        parts = [np.arange(starts[s], starts[s] + counts_a[s], dtype=np.int64) for s in perm]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def per_rank(self, total: int, world_size: int) -> int:
        """Samples each rank gets from ``total`` under this pad policy."""
        if total <= 0:
            raise ConfigError("the dataset selection has no samples: check the split and paths")
        if self.pad_policy == "wrap":
            return -(-total // world_size)
        if total < world_size:
            raise ConfigError(
                f"pad_policy='drop' with {total} samples and world_size={world_size} leaves "
                "no sample per rank: use pad_policy='wrap' or fewer ranks"
            )
        return total // world_size

    def rank_order(self, counts: Sequence[int], *, epoch: int, rank: int, world_size: int,
                   exclude: Iterable[int] | np.ndarray | None = None,
                   salt: Sequence[int] = (), keep: np.ndarray | None = None,
                   groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, pad)`` for one rank: the same length on every rank.

        ``exclude`` removes ids already consumed (elastic resume); ``keep`` (bool per
        id) removes filtered-out samples before anything else, so the epoch is planned
        as if they did not exist; ``pad[i]`` is True where ``ids[i]`` repeats a sample
        only to even out the ranks.  With ``groups`` (int code per id, -1 = none) the
        partition deals each group's samples round-robin over the ranks (see
        :func:`group_partition`) instead of cutting contiguous slices.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, "
                              f"world_size={world_size}")
        order = self.global_order(counts, epoch=epoch, salt=salt)
        if keep is not None:
            order = order[np.asarray(keep, dtype=bool)[order]]
        if exclude is not None:
            ex = np.fromiter(exclude, dtype=np.int64) if not isinstance(exclude, np.ndarray) \
                else exclude.astype(np.int64)
            if ex.size:
                order = order[~np.isin(order, ex)]
        n = self.per_rank(order.size, world_size)
        padded = np.resize(order, n * world_size)  # np.resize repeats cyclically
        pad = np.zeros(n * world_size, dtype=bool)
        pad[order.size:] = True
        if groups is not None:
            pos = group_partition(np.asarray(groups)[padded], world_size)[rank]
        else:
            pos = np.arange(rank * n, (rank + 1) * n)
        ids = padded[pos]
        pad = pad[pos]
        if self.shuffle and self.shuffle_window is not None:
            starts = np.cumsum(np.asarray(counts, dtype=np.int64))
            perm = block_shuffle(np.searchsorted(starts, ids, side="right"),
                                 window=self.shuffle_window,
                                 rng=make_rng(self.seed, 0xB10C, epoch, rank, *salt))
            ids, pad = ids[perm], pad[perm]
        elif self.shuffle:
            perm = buffered_shuffle(n, buffer_size=self.shuffle_buffer,
                                    rng=make_rng(self.seed, 0x0BDE, epoch, rank, *salt))
            ids, pad = ids[perm], pad[perm]
        return ids, pad
