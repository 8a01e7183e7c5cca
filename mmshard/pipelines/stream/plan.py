"""The loader's epoch plan: which samples form batch ``i`` of rank ``r`` (pure, cheap).

The main process owns the plan; workers only decode the batches they are handed.  A
plan is a pure function of ``(seed, epoch, rank, world_size)`` and the elastic
*segments* (``(world_size, batches_done)`` pairs of earlier parts of the epoch run at
other world sizes), so resuming needs only a position.

Steps: per-dataset rank order (:class:`~mmshard.samplers.order.EpochOrder`) ->
weighted mixing when there are several datasets -> batch builder -> equal batch
counts across ranks (builders whose counts depend on the data are planned for every
rank, then padded by repeating batches, ``pad_policy="wrap"``, or cut, ``"drop"``).

>>> from mmshard.samplers.order import EpochOrder
>>> from mmshard.samplers.batching import FixedBatching, SampleMeta
>>> p = EpochPlanner(counts=[(3, 2)], meta=SampleMeta(num_samples=5),
...     order=EpochOrder(seed=0, shuffle=False), batching=FixedBatching(), batch_size=2,
...     drop_last=False)
>>> [b.ids.tolist() for b in p.rank_plan(epoch=0, rank=0, world_size=2)]
[[0, 1], [2]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ...samplers.batching import Batching, PlannedBatch, SampleMeta, equalize_batches
from ...samplers.mixing import Mixing, mix_streams
from ...samplers.order import EpochOrder, make_rng

__all__ = ["EpochPlanner"]


@dataclass(eq=False)
class EpochPlanner:
    """Plans batches for any (epoch, rank, world_size, segments).

    ``counts``: per dataset, the sample count of each shard; global ids number the
    datasets one after another.
    """

    counts: Sequence[Sequence[int]]
    meta: SampleMeta
    order: EpochOrder
    batching: Batching
    batch_size: int
    drop_last: bool
    mixing: Mixing | None = None
    keep: Sequence[np.ndarray | None] | None = None

    def __post_init__(self) -> None:
        self.bases = np.cumsum([0] + [sum(c) for c in self.counts])[:-1].astype(np.int64)
        if len(self.counts) > 1 and self.mixing is None:
            raise ConfigError("several datasets need a Mixing (weights)")
        if self.keep is None:
            self.keep = [None] * len(self.counts)
        # plans of ONE epoch (every rank/world size/segment asked for): an epoch's plan is
        # 9 bytes per sample, so keeping older epochs would grow with dataset x epochs
        self._cache: dict[tuple, list] = {}
        self._cache_epoch: int | None = None

    def kept(self, d: int) -> int:
        """Samples of dataset ``d`` left after the filter."""
        k = self.keep[d]  # type: ignore[index]
        return sum(self.counts[d]) if k is None else int(np.count_nonzero(k))

    def _groups(self, d: int) -> np.ndarray | None:
        if not getattr(self.batching, "spread_groups", False) or self.meta.groups is None:
            return None
        n = sum(self.counts[d])
        return self.meta.groups[self.bases[d]:self.bases[d] + n]

    def _stream(self, *, epoch: int, rank: int, world_size: int, exclude: np.ndarray | None,
                salt: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if self.mixing is None:
            return self.order.rank_order(self.counts[0], epoch=epoch, rank=rank,
                                         world_size=world_size, exclude=exclude, salt=salt,
                                         keep=self.keep[0], groups=self._groups(0))
        if exclude is not None and exclude.size:
            raise ConfigError("changing world_size mid-epoch is not supported with mixing: "
                              "resume at an epoch boundary")

        def stream(d: int, cycle: int) -> tuple[np.ndarray, np.ndarray]:
            ids, pad = self.order.rank_order(self.counts[d], epoch=epoch, rank=rank,
                                             world_size=world_size, salt=(d + 1, cycle, *salt),
                                             keep=self.keep[d], groups=self._groups(d))
            return ids + self.bases[d], pad

        per_rank = [self.order.per_rank(self.kept(d), world_size)
                    for d in range(len(self.counts))]
        ids, pad, _ = mix_streams(self.mixing, stream, per_rank, seed=self.order.seed,
                                  epoch=epoch, rank=rank, batch_size=self.batch_size)
        return ids, pad

    def _raw_plan(self, *, epoch: int, rank: int, world_size: int,
                  exclude: np.ndarray | None, seg: int) -> list[PlannedBatch]:
        salt = (0x5E6, seg) if seg else ()
        ids, pad = self._stream(epoch=epoch, rank=rank, world_size=world_size,
                                exclude=exclude, salt=salt)
        rng = make_rng(self.order.seed, 0xBA7C, epoch, rank, *salt)
        return self.batching.plan(ids, pad, batch_size=self.batch_size,
                                  drop_last=self.drop_last, meta=self.meta, rng=rng,
                                  epoch=epoch)

    def _segment_plans(self, *, epoch: int, world_size: int, exclude: np.ndarray | None,
                       seg: int, ranks: Sequence[int]) -> dict[int, list[PlannedBatch]]:
        ex_key = None if exclude is None else hash(exclude.tobytes())
        if epoch != self._cache_epoch or len(self._cache) > 64:
            self._cache.clear()
            self._cache_epoch = epoch
        out: dict[int, list[PlannedBatch]] = {}
        if self.batching.equal_counts:
            for r in ranks:
                key = (epoch, world_size, seg, ex_key, r)
                if key not in self._cache:
                    self._cache[key] = self._raw_plan(epoch=epoch, rank=r,
                                                      world_size=world_size,
                                                      exclude=exclude, seg=seg)
                out[r] = self._cache[key]
            return out
        key = (epoch, world_size, seg, ex_key, "all")
        if key not in self._cache:  # data-dependent counts: plan every rank, even them out
            allp = [self._raw_plan(epoch=epoch, rank=r, world_size=world_size,
                                   exclude=exclude, seg=seg) for r in range(world_size)]
            lens = [len(p) for p in allp]
            target = max(lens) if self.order.pad_policy == "wrap" else min(lens)
            self._cache[key] = [equalize_batches(p, target) for p in allp]
        return {r: self._cache[key][r] for r in ranks}

    def consumed(self, *, epoch: int, segments: Sequence[tuple[int, int]]) -> np.ndarray:
        """Ids read (not as padding) in the given earlier segments of the epoch."""
        done = np.zeros(0, dtype=np.int64)
        for seg, (ws, k) in enumerate(segments):
            plans = self._segment_plans(epoch=epoch, world_size=ws, exclude=done, seg=seg,
                                        ranks=range(ws))
            got = [b.ids[~b.pad] for p in plans.values() for b in p[:k]]
            done = np.unique(np.concatenate([done, *got]))
        return done

    def rank_plan(self, *, epoch: int, rank: int, world_size: int,
                  segments: Sequence[tuple[int, int]] = ()) -> list[PlannedBatch]:
        """This rank's batches for the (rest of the) epoch after ``segments``."""
        exclude = self.consumed(epoch=epoch, segments=segments) if segments else None
        return self._segment_plans(epoch=epoch, world_size=world_size, exclude=exclude,
                                   seg=len(segments), ranks=(rank,))[rank]
