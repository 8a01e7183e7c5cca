"""Run every benchmark in bench/ and print one table of their headline ratios.

    python bench/all.py --quick          # each script's --quick mode (aim: < 10 minutes)
    python bench/all.py                  # full runs (an hour or more on 2 cores)
    python bench/all.py --only audio --only mine

Each script runs as its own process (so one peer tool's imports or threads cannot slow
another), one after the other, and writes its own ``bench/results/<name>.json``; this
script then reads those files and collects every number whose key names a ratio
(``ratio``, ``speedup``, ``_over_``, ``fraction``), so a new benchmark shows up here
without code changes. ``bench/gpu.py`` is not included: it needs a GPU (run it alone).
Writes bench/results/all.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: script name -> its result file (the script's own default output).
SCRIPTS = {
    "ingest": "ingest.json", "audio": "audio.json", "loader": "loader.json",
    "mine": "mine.json", "video": "video.json", "vq": "vq.json",
    "realmedia": "realmedia.json", "curate": "curate.json", "download": "download.json",
    "remote_loader": "remote_loader.json",
}
_RATIO_WORDS = ("ratio", "speedup", "_over_", "fraction")


def headline_ratios(obj: Any, prefix: str = "", limit: int = 12) -> dict[str, float]:
    """Flatten ``obj`` and keep numeric leaves whose key names a ratio.

    >>> headline_ratios({"summary": {"ratio_a_over_b": 2.5, "n": 3}, "runs": [{"speedup": 1.5}]})
    {'summary.ratio_a_over_b': 2.5, 'runs.0.speedup': 1.5}
    """
    out: dict[str, float] = {}

    def walk(o: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{path}.{i}")
        elif isinstance(o, (int, float)) and not isinstance(o, bool):
            leaf = path.rsplit(".", 1)[-1]
            if any(w in leaf for w in _RATIO_WORDS):
                out[path] = round(float(o), 3)

    walk(obj, prefix)
    return out


def run_one(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    script = HERE / f"{name}.py"
    if not script.exists():
        return {"script": name, "status": "missing"}
    result_file = RESULTS / SCRIPTS[name]
    before = result_file.stat().st_mtime if result_file.exists() else None
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    r = run_measured(cmd, cwd=HERE.parent, timeout=timeout)
    row: dict[str, Any] = {"script": name, "rc": r["rc"], "wall_s": r["wall_s"],
                           "peak_pss_mb": r["peak_pss_mb"]}
    fresh = result_file.exists() and result_file.stat().st_mtime != before
    if r["rc"] != 0 or not fresh:
        row["status"] = "failed" if r["rc"] != 0 else "no new result"
        row["tail"] = r["output"][-1500:]
        return row
    row["status"] = "ok"
    row["ratios"] = headline_ratios(json.loads(result_file.read_text()))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=sorted(SCRIPTS))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per script")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = [run_one(n, args.quick, args.timeout) for n in SCRIPTS
            if not args.only or n in args.only]
    table = []
    for r in rows:
        ratios = r.get("ratios") or {"": None}
        for i, (k, v) in enumerate(ratios.items()):
            table.append({"script": r["script"] if i == 0 else "",
                          "status": r["status"] if i == 0 else "",
                          "wall_s": r.get("wall_s") if i == 0 else None,
                          "ratio": k, "value": v})
    print_table(table, ["script", "status", "wall_s", "ratio", "value"])
    for r in rows:
        if r["status"] not in ("ok", "missing"):
            print(f"\n--- {r['script']} ({r['status']}):\n{r.get('tail', '')}")
    save_json(RESULTS / "all.json", {"machine": machine_info(), "quick": args.quick,
                                     "total_s": round(time.perf_counter() - t0, 1),
                                     "rows": rows})
    return 0 if all(r["status"] in ("ok", "missing") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
