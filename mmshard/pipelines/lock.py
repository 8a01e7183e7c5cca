"""Who owns an output folder: one job per output, a lease its tasks check, a reaper.

* :func:`claim_output` takes the folder's lock (``<out>/_work/lock.json``), which records
  the holder's pid, host, process start time, job and a random token.  On local disks
  it is an ``flock`` held for the life of the process, so a holder that died (even by
  SIGKILL) releases it and the next job takes over (and says so in the log); a second
  live job fails fast with a JobError naming the holder.  On object stores, where no
  lock primitive exists, the file is advisory: a holder on this host whose process is
  gone is stale and taken over; one on another host must be removed by hand.
* :func:`check_lease` is what a task calls just before it commits (the rename of its
  tar, the write of its part record): the lock must still name the token the task saw
  when it started, and its holder must be alive, or the task raises
  :class:`LeaseLost` and nothing is committed.  So a task never commits for a driver
  that is gone or for a newer job that took the folder over.
* :func:`start_reaper` watches a driver pid from its own session and SIGKILLs the
  processes the driver started (an embedded Ray cluster: GCS, raylet, workers) when the
  driver dies, so the cluster dies with its driver.

>>> import tempfile
>>> st = Storage(tempfile.mkdtemp())
>>> lock = claim_output(st, job="ingest")
>>> lease = read_lease(st)
>>> lease is not None and lease["pid"] == os.getpid()
True
>>> check_lease(st, lease["token"])
>>> lock.release()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import JobError
from ..storage import Storage

__all__ = ["LOCK_FILE", "LeaseLost", "OutputLock", "check_lease", "claim_output",
           "holder_alive", "kill_processes", "lease_token", "process_tree", "read_lease",
           "release_output", "start_reaper"]

log = logging.getLogger(__name__)
LOCK_FILE = "_work/lock.json"  # job state, not data: --overwrite keeps it (see commit.py)
_HELD: dict[str, OutputLock] = {}
_HELD_GUARD = threading.Lock()


class LeaseLost(JobError):
    """The job that started a task no longer owns the output: the task must not commit."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (jiffies since boot; tells a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def holder_alive(info: dict[str, Any]) -> bool | None:
    """True/False when the holder is on this host (pid and start time checked), None
    when it is on another host and cannot be checked from here."""
    if info.get("host") != socket.gethostname():
        return None
    pid = int(info.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = info.get("started_ticks")
    return started is None or _start_time(pid) in (None, started)


def _describe(info: dict[str, Any]) -> str:
    argv = str(info.get("argv") or "")
    cmd = f" ({argv[:80]}{'...' if len(argv) > 80 else ''})" if argv else ""
    return (f"{info.get('job', 'a job')} pid {info.get('pid')} on {info.get('host')} since "
            f"{info.get('started', '?')}{cmd}")


@dataclass(eq=False)
class OutputLock:
    """A held output lock; :meth:`release` frees it (process exit does too)."""

    storage: Storage
    info: dict[str, Any]
    fd: int | None = None
    thread: threading.Thread = field(default_factory=threading.current_thread)

    @property
    def token(self) -> str:
        return str(self.info["token"])

    def release(self) -> None:
        with _HELD_GUARD:
            if _HELD.get(self.storage.root) is self:
                del _HELD[self.storage.root]
        if self.fd is not None:
            with contextlib.suppress(OSError):  # a finished job leaves no holder behind:
                os.ftruncate(self.fd, 0)        # the next job takes over silently, and a
            with contextlib.suppress(OSError):  # straggling task's lease check fails
                os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
        elif not self.storage.local:
            try:  # best effort (also at exit, when the store may be gone): a lock left
                if (read_lease(self.storage) or {}).get("token") == self.token:  # behind
                    self.storage.remove(LOCK_FILE)  # is stale once this process is dead
            except Exception as e:  # any client error (botocore's are not OSErrors)
                log.warning("could not remove the lock %s: %s", self.storage.path(LOCK_FILE), e)


def release_output(storage: Storage) -> None:
    """Release this process's lock on ``storage`` (a job calls it when it is done, also
    after an error), so another process can run a job there while this one lives on (a
    notebook, a long-lived service).  A no-op when this process holds no lock there."""
    with _HELD_GUARD:
        lock = _HELD.get(storage.root)
    if lock is not None:
        lock.release()


def read_lease(storage: Storage) -> dict[str, Any] | None:
    """The lock file's holder record, or None when there is none (or it is unreadable)."""
    try:
        raw = storage.read_bytes(LOCK_FILE)
    except FileNotFoundError:
        return None
    except (OSError, JobError) as e:
        log.debug("cannot read the lock of %s: %s", storage.root, e)
        return None
    try:
        doc = json.loads(raw or b"null")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def lease_token(storage: Storage) -> str | None:
    """The token of the live job that owns ``storage`` now (a task calls this when it
    starts), or None when no live job holds it (a library call outside any job)."""
    info = read_lease(storage)
    if not info or not info.get("token") or holder_alive(info) is False:
        return None
    return str(info["token"])


def check_lease(storage: Storage, token: str | None) -> None:
    """Raise LeaseLost unless the job with ``token`` still owns ``storage`` and is alive.

    ``token=None`` (no live job owned the output when the task started) checks nothing."""
    if token is None:
        return
    info = read_lease(storage)
    if info is None or info.get("token") != token:
        raise LeaseLost(f"{storage.root} now belongs to "
                        f"{_describe(info) if info else 'no job'}; the job that started this "
                        "task is gone, so the task does not commit")
    if holder_alive(info) is False:
        raise LeaseLost(f"the driver of this task ({_describe(info)}) is gone; the task does "
                        f"not commit into {storage.root}")


def _new_info(job: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "job": job,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "started_ticks": _start_time(pid), "token": uuid.uuid4().hex,
            "argv": " ".join(sys.argv)[:300]}


def claim_output(storage: Storage, *, job: str = "job") -> OutputLock:
    """Take the output lock of ``storage`` for this process (see the module doc).

    Raises JobError naming the holder when another live job holds it.  Within one
    process, a thread that is still running a job on the same output is a holder too;
    a later job of a thread whose job is over takes the lock over (new token).
    """
    with _HELD_GUARD:
        held = _HELD.get(storage.root)
        if held is not None:
            if held.thread is not threading.current_thread() and held.thread.is_alive():
                raise JobError(f"{storage.root} is in use by another job in this process "
                               f"({_describe(held.info)}); run one job per output")
            held.info = {**_new_info(job), "pid": held.info["pid"]}
            held.thread = threading.current_thread()
            _write_info(held)
            return held
        lock = _claim_local(storage, job) if storage.local else _claim_remote(storage, job)
        _HELD[storage.root] = lock
        return lock


def _write_info(lock: OutputLock) -> None:
    blob = (json.dumps(lock.info, indent=1, sort_keys=True) + "\n").encode()
    if lock.fd is None:
        lock.storage.write_bytes(LOCK_FILE, blob)
        return
    os.ftruncate(lock.fd, 0)
    os.pwrite(lock.fd, blob, 0)
    os.fsync(lock.fd)


def _claim_local(storage: Storage, job: str) -> OutputLock:
    import errno
    import fcntl

    path = storage.path(LOCK_FILE)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise JobError(f"cannot create the output lock {path}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = read_lease(storage) or {}
        raise JobError(f"{storage.root} is in use by {_describe(info)} (lock {path}); wait for "
                       "it to finish or stop it, or choose another --out") from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise JobError(f"cannot lock {path}: {e}") from e
        os.close(fd)  # no flock on this filesystem: the advisory pid check below
        return _claim_remote(storage, job)
    old = read_lease(storage)
    if old and old.get("token"):
        log.warning("%s: took over the lock of %s, which is gone", storage.root, _describe(old))
    lock = OutputLock(storage, _new_info(job), fd)
    _write_info(lock)
    return lock


def _claim_remote(storage: Storage, job: str) -> OutputLock:
    import atexit

    old = read_lease(storage)
    if old:
        alive = holder_alive(old)
        if alive is None or alive:
            raise JobError(f"{storage.root} is in use by {_describe(old)} (lock "
                           f"{storage.path(LOCK_FILE)}); if that job is gone, delete the lock "
                           "file and rerun")
        log.warning("%s: took over the stale lock of %s", storage.root, _describe(old))
    lock = OutputLock(storage, _new_info(job))
    _write_info(lock)
    atexit.register(lock.release)
    return lock


# ------------------------------------------------------------------------ the reaper
_REAPER = r"""
import os, signal, sys, time

def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None

def tree(roots):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(kids.get(p, ()))
    return out

driver, me = int(sys.argv[1]), os.getpid()
born = ticks(driver)
seen = {}
while ticks(driver) == born and born is not None:
    for p in tree([driver]) - {driver, me}:
        seen.setdefault(p, ticks(p))
    time.sleep(0.5)
alive = {p for p, t in seen.items() if t is not None and ticks(p) == t}
for p in tree(alive) - {me}:
    try:
        os.kill(p, signal.SIGKILL)
    except OSError:
        pass
"""


def start_reaper(driver_pid: int | None = None) -> subprocess.Popen:
    """Start a watcher, in its own session (a ``kill -9 -PGID`` of the driver's group does
    not reach it), that SIGKILLs every process the driver started, and their children,
    once the driver is gone.  Stop it with ``.kill()`` after a clean shutdown."""
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(driver_pid or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def process_tree(roots: list[int]) -> dict[int, str | None]:
    """``roots`` and all their descendants now, each with its kernel start time (so a pid
    reused later is told apart): what :func:`kill_processes` takes."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out: dict[int, str | None] = {}
    todo = list(roots)
    while todo:
        p = todo.pop()
        if p not in out:
            out[p] = _start_time(p)
            todo.extend(kids.get(p, ()))
    return out


def kill_processes(procs: dict[int, str | None], wait: float = 0.0) -> list[int]:
    """SIGKILL each process of ``procs`` (from :func:`process_tree`) that is still the
    same process (same start time; gone ones are skipped), then wait up to ``wait``
    seconds for them to be gone (a child of another process is reaped by its parent or,
    once re-parented, by init).  Returns the pids still there after that."""
    import signal

    def alive() -> list[int]:
        return [pid for pid, ticks in procs.items()
                if ticks is not None and pid != os.getpid() and _start_time(pid) == ticks]

    for pid in alive():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    left = alive()
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = alive()
    return left
