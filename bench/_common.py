"""Small helpers shared by the benchmark scripts in bench/.

- ``run_measured(cmd)``: run a command in its own session and sample, from /proc, the
  memory and CPU of every process it starts (Ray's raylet and workers, multiprocessing
  pools, ...), not just the direct child.
- ``print_table(rows, columns)``: a plain fixed-width table.
- ``save_json(path, obj)`` and ``machine_info()``.

>>> r = run_measured([sys.executable, "-c", "print('hi')"])   # doctest: +SKIP
>>> r["rc"], r["peak_rss_mb"] > 0                              # doctest: +SKIP
(0, True)

Memory is reported two ways: ``peak_rss_mb`` is the peak over samples of the *sum* of RSS
of all processes in the run (counts shared pages, e.g. Ray's object store or copy-on-write
pages of forked workers, once per process) and ``peak_pss_mb`` the peak of the sum of PSS
(proportional set size, from /proc/PID/smaps_rollup: shared pages split between their
users, so the sum is the real footprint).  ``cpu_s`` sums user+system time of every
process seen, as last sampled (a process's final < interval seconds may be missed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "print_table", "run_measured", "save_json"]

_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, int, int, float] | None:
    """(ppid, sid, rss_bytes, cpu_seconds) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()  # fields after "(comm)"; rest[0] is field 3
    ppid, sid = int(rest[1]), int(rest[3])
    cpu = (int(rest[11]) + int(rest[12])) / _CLK
    rss = int(rest[21]) * _PAGE
    return ppid, sid, rss, cpu


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _TreeSampler(threading.Thread):
    """Samples every process in session ``root`` or descended from it."""

    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.stop = threading.Event()
        self.peak_rss = self.peak_pss = self.max_procs = 0
        self.cpu: dict[tuple[int, int], float] = {}  # (pid, start marker) -> cpu seconds
        self.samples = 0

    def sample(self) -> None:
        stats: dict[int, tuple[int, int, int, float]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                s = _stat(int(name))
                if s is not None:
                    stats[int(name)] = s
        members = {p for p, s in stats.items() if s[1] == self.root or p == self.root}
        grew = True
        while grew:  # descendants that left the session (setsid) still count
            new = {p for p, s in stats.items() if s[0] in members and p not in members}
            members |= new
            grew = bool(new)
        if not members:
            return
        self.samples += 1
        self.max_procs = max(self.max_procs, len(members))
        self.peak_rss = max(self.peak_rss, sum(stats[p][2] for p in members))
        self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in members))
        for p in members:
            self.cpu[(p, stats[p][0])] = stats[p][3]

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def run_measured(cmd: Sequence[str], *, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, interval: float = 0.25,
                 timeout: float | None = None) -> dict[str, Any]:
    """Run ``cmd`` (new session) and return wall time, exit code, peak memory and CPU.

    Returns a dict: rc, wall_s, cpu_s, peak_rss_mb, peak_pss_mb, max_procs, samples,
    output (the last 4,000 characters of stdout+stderr).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    sampler = _TreeSampler(proc.pid, interval)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    # Stragglers (e.g. Ray processes shutting down after the driver exited) are left to
    # exit on their own; they were sampled while the job ran.
    return {
        "rc": proc.returncode, "wall_s": round(wall, 3),
        "cpu_s": round(sum(sampler.cpu.values()), 2),
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "peak_pss_mb": round(sampler.peak_pss / 2**20, 1),
        "max_procs": sampler.max_procs, "samples": sampler.samples,
        "output": out.decode(errors="replace")[-4000:],
    }


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as a fixed-width table of ``columns`` (missing cells blank)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def save_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (parents created) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return p


def machine_info() -> dict[str, Any]:
    """CPU count, load average, Python and platform, for the JSON record."""
    return {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0], "platform": platform.platform()}
