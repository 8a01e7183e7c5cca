"""Weighted, deterministic mixing of several datasets' streams (resumable: pure).

Each dataset has its own per-rank stream (see :mod:`mmshard.samplers.order`).  A
*source sequence* says which dataset fills each position of the mixed stream:

- ``stratify=False``: each position draws its dataset independently with the given
  weights (seeded per ``(seed, epoch, rank)``), so batch composition varies;
- ``stratify=True``: every batch of ``batch_size`` holds the same per-dataset quota
  (largest-remainder rounding of ``batch_size * weight``).

A dataset that runs out within the mixed epoch starts its next *cycle* (a fresh,
differently seeded pass over it), so small datasets can be up-weighted.  The default
epoch length is the number of positions after which the first dataset would run out at
its weight: ``min(n_d / w_d)``.

>>> m = Mixing(weights=(3.0, 1.0), stratify=True)
>>> m.quotas(8).tolist()
[6, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .order import make_rng

__all__ = ["Mixing", "mix_streams"]


@dataclass(frozen=True, kw_only=True)
class Mixing:
    """How several datasets are mixed.  ``weights`` are relative (normalised here);
    ``samples_per_epoch`` (per rank) overrides the default epoch length."""

    weights: tuple[float, ...]
    stratify: bool = False
    samples_per_epoch: int | None = None

    def __post_init__(self) -> None:
        w = tuple(float(x) for x in self.weights)
        if not w or any(not np.isfinite(x) or x <= 0 for x in w):
            raise ConfigError(f"mixing weights must be positive numbers, got {self.weights}")
        object.__setattr__(self, "weights", w)
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ConfigError(f"samples_per_epoch must be >= 1, got {self.samples_per_epoch}")

    @property
    def probs(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def quotas(self, batch_size: int) -> np.ndarray:
        """Samples per dataset in each stratified batch (sums to ``batch_size``)."""
        x = self.probs * batch_size
        q = np.floor(x).astype(np.int64)
        rest = batch_size - int(q.sum())
        order = np.argsort(-(x - q), kind="stable")
        q[order[:rest]] += 1
        return q

    def epoch_length(self, per_rank_counts: Sequence[int], batch_size: int) -> int:
        """Positions per rank in one mixed epoch."""
        if len(per_rank_counts) != len(self.weights):
            raise ConfigError(f"{len(self.weights)} mixing weights for "
                              f"{len(per_rank_counts)} datasets: give one weight per dataset")
        if self.samples_per_epoch is not None:
            n = self.samples_per_epoch
        else:
            n = int(min(c / p for c, p in zip(per_rank_counts, self.probs, strict=True)))
        if self.stratify:
            n = max(batch_size, n - n % batch_size)
        return max(n, 1)

    def source_sequence(self, length: int, *, seed: int, epoch: int, rank: int,
                        batch_size: int) -> np.ndarray:
        """Dataset index for each position of the mixed stream."""
        if self.stratify:
            q = self.quotas(batch_size)
            one = np.repeat(np.arange(len(q), dtype=np.int64), q)
            return np.resize(one, length)
        rng = make_rng(seed, 0x313F, epoch, rank)
        return rng.choice(len(self.weights), size=length, p=self.probs).astype(np.int64)


def mix_streams(mixing: Mixing, stream: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
                per_rank_counts: Sequence[int], *, seed: int, epoch: int, rank: int,
                batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mixed per-rank stream ``(ids, pad, source)``.

    ``stream(d, cycle)`` returns dataset ``d``'s ``(ids, pad)`` for its ``cycle``-th
    pass this epoch (ids already global).  Equal ``per_rank_counts`` on every rank give
    equal lengths on every rank.

    >>> m = Mixing(weights=(1.0, 1.0), stratify=True)
    >>> s = lambda d, c: (np.arange(4) + 10 * d, np.zeros(4, bool))
    >>> mix_streams(m, s, [4, 4], seed=0, epoch=0, rank=0, batch_size=2)[0].tolist()
    [0, 10, 1, 11, 2, 12, 3, 13]
    """
    length = mixing.epoch_length(per_rank_counts, batch_size)
    src = mixing.source_sequence(length, seed=seed, epoch=epoch, rank=rank,
                                 batch_size=batch_size)
    ids = np.empty(length, dtype=np.int64)
    pad = np.empty(length, dtype=bool)
    for d in range(len(mixing.weights)):
        where = np.flatnonzero(src == d)
        if where.size == 0:
            continue
        got_i: list[np.ndarray] = []
        got_p: list[np.ndarray] = []
        have, cycle = 0, 0
        while have < where.size:
            i, p = stream(d, cycle)
            if i.size == 0:
                raise ConfigError(f"dataset {d} of the mixture has no samples for this rank")
            got_i.append(i)
            got_p.append(p)
            have += i.size
            cycle += 1
        ids[where] = np.concatenate(got_i)[:where.size]
        pad[where] = np.concatenate(got_p)[:where.size]
    return ids, pad, src
