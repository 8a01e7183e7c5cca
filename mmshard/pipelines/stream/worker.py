"""The IterableDataset that runs in DataLoader workers (imports torch; loaded lazily).

Worker ``w`` of ``n`` decodes planned batches ``start + w, start + w + n, ...``: its work
is a pure function of (worker id, number of workers), and it yields ``(index, batch)``
so the main process can restore plan order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.utils.data as tud

from .cache import prefetch_batches

__all__ = ["PlannedBatches"]


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
