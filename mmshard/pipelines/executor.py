"""Executors: where a job's tasks run.  The only module in mmshard that imports Ray.

A task is a picklable callable plus one picklable argument; its result is a small
picklable summary.  Both executors run the same task code::

    >>> ex = LocalExecutor(workers=1)
    >>> sorted(r for _, r in ex.imap_unordered(abs, [-2, 1, -3]))
    [1, 2, 3]

``imap_unordered`` yields ``(index, result)`` pairs as tasks finish, keeping at most
``max_in_flight`` tasks submitted at once (backpressure), so the driver's memory does
not grow with the number of tasks.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from ..errors import ConfigError, DependencyMissingError, JobError

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "TaskLost", "make_executor"]

A = TypeVar("A")
R = TypeVar("R")
log = logging.getLogger(__name__)


class TaskLost:
    """Result of a task whose worker died on every allowed attempt (Ray only).

    Exceptions raised *by* a task are re-raised in the driver (its cause unwrapped);
    a task that could not finish because its process died is reported, not raised, so
    the job can account for its inputs and go on.
    """

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause

    def __repr__(self) -> str:
        return f"TaskLost({type(self.cause).__name__}: {self.cause})"


class Executor(Protocol):
    """Runs ``fn(arg)`` for each arg; yields ``(index, result)`` as tasks complete."""

    workers: int

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A],
                       max_in_flight: int | None = None) -> Iterator[tuple[int, R]]: ...

    def close(self) -> None: ...


def _bounded(args: Iterable[A], limit: int, *, submit: Callable[[A], Any],
             wait: Callable[[dict[Any, int]], Iterable[Any]],
             result: Callable[[Any], R]) -> Iterator[tuple[int, R]]:
    """Keep at most ``limit`` submitted; yield ``(index, result)`` as handles finish."""
    pending: dict[Any, int] = {}
    it = enumerate(args)
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < limit:
            try:
                i, a = next(it)
            except StopIteration:
                exhausted = True
                break
            pending[submit(a)] = i
        if not pending:
            break
        for handle in wait(pending):
            i = pending.pop(handle)
            yield i, result(handle)


class LocalExecutor:
    """In-process executor: sequential for ``workers=1``, a thread pool otherwise.

    Decoding, resizing and compression release the GIL, so threads give real
    parallelism for media work without pickling anything.
    """

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A],
                       max_in_flight: int | None = None) -> Iterator[tuple[int, R]]:
        if self.workers == 1:
            for i, a in enumerate(args):
                yield i, fn(a)
            return
        with cf.ThreadPoolExecutor(self.workers, thread_name_prefix="mmshard") as pool:
            yield from _bounded(
                args, max_in_flight or 2 * self.workers,
                submit=lambda a: pool.submit(fn, a),
                wait=lambda pending: cf.wait(pending, return_when=cf.FIRST_COMPLETED)[0],
                result=lambda fut: fut.result())

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs tasks as Ray tasks, retried when a worker dies (``max_retries``).

    ``address=None`` joins the cluster already initialised in this process, else starts an
    embedded local one with ``workers`` CPUs; ``address="auto"`` or ``"ray://..."``/
    ``"host:port"`` joins an existing cluster.
    """

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 max_retries: int = 3, num_cpus_per_task: float = 1.0) -> None:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - ray is a core dependency
            raise DependencyMissingError(
                "the ray executor needs ray: pip install 'ray[data]' (or use --executor local)"
            ) from e
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except Exception as e:
                raise JobError(f"cannot start or join a Ray cluster (address={address!r}): {e}"
                               ) from e
            self._owns = True
            if not address:  # an embedded cluster dies with its driver, even by SIGKILL
                from .lock import start_reaper

                self._reaper = start_reaper()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, int(cpus // num_cpus_per_task))
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A],
                       max_in_flight: int | None = None) -> Iterator[tuple[int, R]]:
        ray = self._ray
        remote = ray.remote(fn).options(
            num_cpus=self.num_cpus_per_task, max_retries=self.max_retries,
            retry_exceptions=False,
        )
        yield from _bounded(
            args, max_in_flight or 2 * self.workers, submit=remote.remote,
            wait=lambda pending: ray.wait(list(pending), num_returns=1)[0], result=self._get)

    def _get(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from e  # the task's own error, e.g. JobError("disk full ...")
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError) as e:
            log.warning("task lost after %d retries: %s", self.max_retries, e)
            return TaskLost(e)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        reaper = getattr(self, "_reaper", None)
        if reaper is not None:
            reaper.kill()  # a clean shutdown: nothing left to reap
            reaper.wait()
            self._reaper = None


def make_executor(kind: str = "ray", *, workers: int | None = None,
                  address: str | None = None, max_retries: int = 3) -> Executor:
    """Turn ``--executor local|ray`` into an executor object (done once, at the edge).

    >>> make_executor("local", workers=1).workers
    1
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"workers must be an int >= 1 (or None for all CPUs), got {workers!r}")
    if kind == "local":
        return LocalExecutor(workers or 1)
    if kind == "ray":
        return RayExecutor(workers, address=address, max_retries=max_retries)
    raise ConfigError(f"unknown executor {kind!r}; allowed: local, ray")
