"""The IterableDataset that runs in DataLoader workers (imports torch; loaded lazily).

Worker ``w`` of ``n`` decodes planned batches ``start + w, start + w + n, ...``: its work
is a pure function of (worker id, number of workers), and it yields ``(index, batch)``
so the main process can restore plan order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch.utils.data as tud

from .cache import prefetch_batches

__all__ = ["PlannedBatches", "warm_up"]


class PlannedBatches(tud.IterableDataset):
    """Yields ``(i, work.load(plan[i]))`` for this worker's share of ``plan[start:]``."""

    def __init__(self, work: Any, plan: list[Any], start: int) -> None:
        self.work = work
        self.plan = plan
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        info = tud.get_worker_info()
        w, nw = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(self.start + w, len(self.plan), nw):
            prefetch_batches(self.work, self.plan, i, nw)  # remote shards: fetch ahead
            yield i, self.work.load(self.plan[i])


def warm_up(work: Any, pb: Any) -> None:
    """Read and decode the first sample of batch ``pb`` here, before the workers fork:
    they inherit the decoders this imports (PIL, simplejpeg ...) and the tar indexes of
    the batch's shards instead of each loading them on its first batch.  The shard files are
    closed again (a forked worker must not share an open file's offset); a failure is
    left for the worker to report in context.  Not for video (one clip can take a
    second to decode: the workers do that in parallel)."""
    if getattr(work.decode, "video", None) is not None:
        return
    with contextlib.suppress(Exception):
        work._one(int(pb.ids[0]), pb.size)
        shards = np.searchsorted(work.starts, pb.ids, side="right") - 1
        for sh in dict.fromkeys(shards.tolist()):  # the batch's tar indexes (header scans)
            r, j = work.readers[work.owner[sh]], work.local[sh]
            for url in (r.source.urls[j], *(v[j] for v in r.source.sidecars.values())):
                r.index(url)
    for r in work.readers:
        r.close()
