"""Stream audit: what the loader really delivered, per epoch and rank.

:class:`EpochAudit` counts, for one epoch on one rank, the samples delivered (real,
not padding), padded and skipped (corrupt or unreadable, replaced by a flagged copy),
duplicates within the epoch (a real sample delivered twice on this rank) and an order
hash (sha256 of the delivered ids and padding flags in order: equal hashes, equal
streams).  :func:`check_epoch` gathers every rank's delivered ids over
``torch.distributed`` and checks that ranks are disjoint and together cover the epoch
(the silent duplicate / missing-sample failures of data-parallel training).

>>> a = EpochAudit(epoch=0, rank=0, world_size=1, start_batch=0)
>>> a.add(np.array([3, 4, 3]), np.array([False, False, True]), np.zeros(3, bool))
>>> r = a.record(); (r["delivered"], r["padded"], r["duplicates"])
(2, 1, 0)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ...errors import ConfigError

__all__ = ["EpochAudit", "check_epoch"]


class EpochAudit:
    """Running counts of one epoch on one rank (batches from ``start_batch`` on)."""

    def __init__(self, *, epoch: int, rank: int, world_size: int, start_batch: int) -> None:
        self.epoch, self.rank, self.world_size = epoch, rank, world_size
        self.start_batch = start_batch
        self.batches = self.padded = self.skipped = 0
        self._hash = hashlib.sha256()
        self._ids: list[np.ndarray] = []

    def add(self, ids: np.ndarray, pad: np.ndarray, planned_pad: np.ndarray) -> None:
        """One delivered batch: its planned ids, final padding flags, planned flags."""
        ids = np.asarray(ids, dtype=np.int64)
        pad = np.asarray(pad, dtype=bool)
        self.batches += 1
        self.padded += int(pad.sum())
        self.skipped += int((pad & ~np.asarray(planned_pad, dtype=bool)).sum())
        self._hash.update(ids.tobytes())
        self._hash.update(np.packbits(pad).tobytes())
        self._ids.append(ids[~pad])

    def delivered_ids(self) -> np.ndarray:
        return np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)

    def record(self) -> dict[str, Any]:
        ids = self.delivered_ids()
        return {"epoch": self.epoch, "rank": self.rank, "world_size": self.world_size,
                "start_batch": self.start_batch, "batches": self.batches,
                "delivered": int(ids.size), "padded": self.padded, "skipped": self.skipped,
                "duplicates": int(ids.size - np.unique(ids).size),
                "order_hash": self._hash.hexdigest()[:16]}


def check_epoch(audit: EpochAudit, *, before: np.ndarray, expected: np.ndarray | None
                ) -> dict[str, Any]:
    """Gather every rank's delivered ids and check disjointness and coverage.

    ``before``: ids this rank delivered earlier in the epoch (batches before a resume,
    taken from the plan); ``expected``: every id the epoch should deliver once, or
    None when it need not cover them all (mixing, ``drop_last``, ``pad_policy="drop"``).
    With ``world_size > 1`` torch.distributed must be initialised (a collective call:
    every rank must call it).
    """
    mine = np.concatenate([before, audit.delivered_ids()]).astype(np.int64)
    parts = [mine]
    skipped = [audit.skipped]
    if audit.world_size > 1:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(f"audit check of world_size={audit.world_size} needs "
                              "torch.distributed initialised (run it on every rank)")
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (mine, audit.skipped))
        parts = [g[0] for g in gathered]
        skipped = [int(g[1]) for g in gathered]
    allids = np.concatenate(parts)
    uniq = np.unique(allids)
    per_rank = [np.unique(p) for p in parts]
    overlap = int(sum(p.size for p in per_rank) - uniq.size)
    missing = None if expected is None else int(np.setdiff1d(expected, uniq).size)
    extra = None if expected is None else int(np.setdiff1d(uniq, expected).size)
    ok = overlap == 0 and (expected is None or (missing == sum(skipped) and extra == 0))
    return {"epoch": audit.epoch, "world_size": audit.world_size,
            "delivered": [int(p.size) for p in parts], "unique": int(uniq.size),
            "overlap": overlap, "missing": missing, "extra": extra,
            "skipped": sum(skipped), "ok": bool(ok)}
