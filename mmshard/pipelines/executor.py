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
import contextlib
import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
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

    The cluster is started (or joined) in the background: the constructor returns at
    once, so a job lists and plans its inputs while Ray starts, and the first
    :meth:`imap_unordered` waits for it (a failed start raises :class:`JobError` there).
    An embedded cluster runs without the autoscaler monitor, the log monitor and the
    dashboard API server (see :func:`_lean_head`), and :meth:`close` stops it with
    SIGKILL rather than a SIGTERM and a wait of up to a second per daemon: it holds
    nothing that outlives the job.

    >>> RayExecutor(2).workers  # known at once; the cluster is still starting  # doctest: +SKIP
    2
    """

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 max_retries: int = 3, num_cpus_per_task: float = 1.0) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # pragma: no cover - a core dependency
            raise DependencyMissingError(
                "the ray executor needs ray: pip install 'ray[data]' (or use --executor local)")
        self._ray: Any = sys.modules.get("ray")  # imported in the background if not yet
        self._address = address
        self._owns = False
        self._reaper: subprocess.Popen | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._workers = workers
        self._cpus: int | None = None
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task
        if self._ray is not None and self._ray.is_initialized():  # this process's cluster
            # (a notebook, the test session): joined as it is
            self._ready.set()
            return
        self._owns = True
        if not address:
            self._cpus = workers or os.cpu_count() or 1
        _keep_sigterm_exit()
        threading.Thread(target=self._start, daemon=True, name="mmshard-ray-start").start()

    def _start(self) -> None:
        """Start or join the cluster, then keep this thread alive until :meth:`close`:
        the daemons Ray starts die with the *thread* that started them
        (``PR_SET_PDEATHSIG``), so it must not return while the cluster is in use."""
        try:
            import ray  # 0.4-2 s: not on the caller's thread either

            self._ray = ray
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if self._address:
                ray.init(address=self._address, **kwargs)
            else:  # an embedded cluster dies with its driver, even by SIGKILL
                from .lock import start_reaper

                self._reaper = start_reaper()
                with _lean_head(ray):
                    ray.init(num_cpus=self._cpus, **kwargs)
        except BaseException as e:  # raised by the first use, as a JobError
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._stop.wait()

    def _wait_ready(self) -> None:
        self._ready.wait()
        if self._error is not None:
            raise JobError(f"cannot start or join a Ray cluster (address={self._address!r}): "
                           f"{self._error}") from self._error

    @property
    def workers(self) -> int:
        """Tasks run at once: ``workers``, else the cluster's CPUs / CPUs per task."""
        if self._workers is None and self._cpus is None:
            self._wait_ready()
            self._cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return self._workers or max(1, int((self._cpus or 1) // self.num_cpus_per_task))

    @workers.setter
    def workers(self, value: int) -> None:
        self._workers = value

    def imap_unordered(self, fn: Callable[[A], R], args: Iterable[A],
                       max_in_flight: int | None = None) -> Iterator[tuple[int, R]]:
        self._wait_ready()
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
        if self._owns:
            self._ready.wait()  # a start in progress finishes first, then stops
            if self._ray is not None and self._ray.is_initialized():
                if self._address:
                    self._ray.shutdown()  # leave the cluster; it is not ours to stop
                else:
                    _stop_embedded(self._ray)
            self._owns = False
        self._stop.set()
        if self._reaper is not None:
            self._reaper.kill()  # a clean shutdown: nothing left to reap
            self._reaper.wait()
            self._reaper = None


@contextlib.contextmanager
def _lean_head(ray: Any) -> Iterator[None]:
    """Within this block ``ray.init()`` starts a head node without three Python daemons
    that a one-node cluster whose logs are not sent to the driver never uses: the
    autoscaler monitor, the log monitor, and the dashboard API server (with
    ``include_dashboard=False`` it only hosts usage reporting, which ``ray.init`` turns
    off, yet ``ray.init`` waits for it before it starts the raylet).  Each costs
    0.8-1.2 CPU-s to start on the critical path of ``ray.init``.  Whatever of this
    Ray's internals no longer offer is left as it is."""
    private = getattr(ray, "_private", None)
    params = getattr(private, "parameter", None)
    node_cls = getattr(getattr(private, "node", None), "Node", None)
    base = getattr(params, "RayParams", None)
    try:
        fields = inspect.signature(base).parameters if base is not None else {}
    except (TypeError, ValueError):
        fields = {}
    api_server = getattr(node_cls, "start_api_server", None)
    lean_params = "no_monitor" in fields and "include_log_monitor" in fields
    if lean_params:
        class LeanParams(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("no_monitor", True)
                kwargs.setdefault("include_log_monitor", False)
                super().__init__(*args, **kwargs)

        params.RayParams = LeanParams
    if api_server is not None:
        node_cls.start_api_server = lambda self, **kwargs: None
    try:
        yield
    finally:
        if lean_params:
            params.RayParams = base
        if api_server is not None:
            node_cls.start_api_server = api_server


def _stop_embedded(ray: Any) -> None:
    """Stop the embedded cluster this process started, without the waits nobody needs.

    ``ray.shutdown()`` SIGTERMs the daemons one after the other and gives each up to a
    second to exit (1.1-1.6 s measured on 2 cores, mostly waiting on the dashboard
    process).  Here the driver disconnects, the raylet gets SIGTERM (it kills and reaps
    its workers and agents in a few milliseconds, so none is left a zombie), and the
    other daemons get SIGKILL at once: an embedded cluster holds nothing that outlives
    the job.  Anything of the cluster still alive after that is SIGKILLed too.  Falls
    back to ``ray.shutdown()`` when Ray's node record is not where it is expected."""
    from .lock import kill_processes, process_tree

    worker = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(worker, "_global_node", None)
    procs = {kind: [i.process for i in infos if getattr(i, "process", None) is not None]
             for kind, infos in dict(getattr(node, "all_processes", None) or {}).items()}
    if not any(procs.values()):
        ray.shutdown()
        return
    children = {p.pid: p for ps in procs.values() for p in ps}
    doomed = process_tree(list(children))
    try:
        node.destroy_external_storage()  # spilled objects, if any (as ray.shutdown does)
    except Exception as e:
        log.debug("could not remove Ray's spilled objects: %s", e)
    worker._global_node = None  # so ray.shutdown() only disconnects this driver
    try:
        ray.shutdown()
    finally:
        for p in procs.get("raylet", ()):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        kill_processes(doomed)  # GCS and the rest, and any worker or agent still alive
        for p in children.values():  # our children: reaped here
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        left = kill_processes(doomed, wait=5.0)  # re-parented ones: reaped by init
        if left:
            log.warning("Ray processes %s still there 5 s after SIGKILL", left)


_SIGTERM_NOTE = "SIGTERM handler is not set because current thread is not the main thread"


def _keep_sigterm_exit() -> None:
    """Keep what ``ray.init()`` does for a driver started from the main thread, now that
    it runs in a background thread: SIGTERM exits through ``sys.exit`` (so ``finally``
    blocks and the clean shutdown run), and Ray's warning about the thread is dropped."""
    ray_log = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _DropMessage) for f in ray_log.filters):
        ray_log.addFilter(_DropMessage(_SIGTERM_NOTE))
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


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
