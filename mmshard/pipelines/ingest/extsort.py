"""Bounded-memory external sort for the ingest planner (plan.py).

Records are picklable tuples, each added with a sort key (a tuple the planner makes
unique, so the order is total and stable across runs).  At most ``run_rows`` records are
held in memory: a full buffer is sorted and spilled to ``<folder>/run-N.pkl`` as pickled
blocks; iterating merges the runs (``heapq.merge``), reading one block per run at a time.
The files are the planner's own, in a private temporary folder, and are read back only by
the process that wrote them.

>>> import tempfile
>>> s = ExternalSorter(tempfile.mkdtemp(), run_rows=2)
>>> for k in (3, 1, 2, 0):
...     s.add((k,), f"r{k}")
>>> list(s), s.runs
(['r0', 'r1', 'r2', 'r3'], 2)
"""

from __future__ import annotations

import heapq
import os
import pickle
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any

__all__ = ["ExternalSorter", "SpillFile"]

_BLOCK = 256  # records per pickled block: a merge of R runs holds R blocks
_first = itemgetter(0)


class SpillFile:
    """An append-only file of records (pickled blocks), read back in the order written.

    >>> import tempfile, os
    >>> f = SpillFile(os.path.join(tempfile.mkdtemp(), "x.pkl"))
    >>> f.extend(range(5)); list(f)
    [0, 1, 2, 3, 4]
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._buf: list[Any] = []
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()/iteration
        self.count = 0

    def append(self, record: Any) -> None:
        self._buf.append(record)
        self.count += 1
        if len(self._buf) >= _BLOCK:
            self._flush()

    def extend(self, records: Iterable[Any]) -> None:
        for r in records:
            self.append(r)

    def _flush(self) -> None:
        if self._buf:
            pickle.dump(self._buf, self._f, protocol=pickle.HIGHEST_PROTOCOL)
            self._buf = []

    def close(self) -> None:
        if not self._f.closed:
            self._flush()
            self._f.close()

    def __iter__(self) -> Iterator[Any]:
        self.close()
        with open(self.path, "rb") as f:
            while True:
                try:
                    block = pickle.load(f)
                except EOFError:
                    return
                yield from block

    def remove(self) -> None:
        self.close()
        if os.path.exists(self.path):
            os.remove(self.path)


class ExternalSorter:
    """Sort records by key holding at most ``run_rows`` of them in memory (see module
    doc).  Iterable more than once; ``runs`` is how many were spilled."""

    def __init__(self, folder: str, run_rows: int = 100_000, name: str = "run") -> None:
        if run_rows < 1:
            raise ValueError(f"run_rows must be >= 1, got {run_rows}")
        os.makedirs(folder, exist_ok=True)
        self.folder, self.run_rows, self.name = folder, run_rows, name
        self._buf: list[tuple[Any, Any]] = []
        self._runs: list[SpillFile] = []
        self._sorted = True
        self.count = 0

    @property
    def runs(self) -> int:
        return len(self._runs)

    def add(self, key: Any, record: Any) -> None:
        self._buf.append((key, record))
        self._sorted = False
        self.count += 1
        if len(self._buf) >= self.run_rows:
            self._spill()

    def _spill(self) -> None:
        self._buf.sort(key=_first)
        run = SpillFile(os.path.join(self.folder, f"{self.name}-{len(self._runs)}.pkl"))
        run.extend(self._buf)
        run.close()
        self._runs.append(run)
        self._buf = []

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, record)`` pairs in key order."""
        if not self._sorted:
            self._buf.sort(key=_first)
            self._sorted = True
        if not self._runs:
            yield from self._buf
            return
        yield from heapq.merge(*self._runs, self._buf, key=_first)

    def __iter__(self) -> Iterator[Any]:
        for _, record in self.items():
            yield record

    def remove(self) -> None:
        for r in self._runs:
            r.remove()
        self._runs, self._buf = [], []
