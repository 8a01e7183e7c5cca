"""Run the benchmarks and print ONE table: each work row of issue 17, mmshard, the peer
(run in the same script, the same run), the ratio, the goal and whether it is met.

    python bench/all.py --quick          # the real sets, smaller (aim: < 10 min on 2 cores)
    python bench/all.py                  # the real sets at full size (~15-25 min)
    python bench/all.py --extra          # also every other script's --quick, ratio keys only
    python bench/all.py --from-results bench/results   # the table from saved JSONs, no runs
    python bench/all.py --only mine --only audio

Runs (each script in its own process, one after the other, so one peer's imports or
threads cannot slow another):

| run | full | ``--quick`` |
|---|---|---|
| ingest | ``ingest.py --set real``: 3,000 real photos | ``--quick --set real``: 300 |
| loader | ``loader.py --set real``: 3,000 real photos | ``--quick --set real``: 300 |
| mine | ``mine.py --set real --skip-approx``: 60,000 x 784, 6,000 queries | 20,000, 2,000 |
| audio | ``audio.py --set real``: 150 real speech clips | ``--quick --set real``: 20 |

mine is Fashion-MNIST's pixel vectors; it runs with bench/.venv-st's python when that
venv exists (sentence-transformers, the peer, lives there).  The work rows (``WORK``)
pick their numbers out of each run's JSON; a row whose numbers are missing (a script
failed, or its JSON changed shape) says ``n/a`` and why.  Full runs write the scripts'
usual result files (``bench/results/<run>_real.json``, ``loader.json``); ``--quick``
runs write to a temporary folder and never replace them.
A goal is met when the ratio reaches it (and, for mining, the sets are identical).
``--extra`` adds the other bench scripts' ``--quick`` runs (video, vq, curate, ...),
collecting every number whose key names a ratio, within ``--budget`` seconds.
``bench/gpu.py`` is not included: it needs a GPU (run it alone).
Writes bench/results/all.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Run:
    """One script invocation; ``result`` is the JSON it writes (``out``: via --out)."""

    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    result: str  # file name in bench/results (full runs) or the temp folder (quick)
    out_flag: bool = True  # the script takes --out; else it writes bench/results/<result>
    venv: str | None = None  # bench/<venv>/bin/python runs it when that venv exists

    def python(self) -> str:
        exe = HERE / self.venv / "bin" / "python" if self.venv else None
        return str(exe) if exe is not None and exe.exists() else sys.executable


RUNS = {
    "ingest": Run("ingest", ("--set", "real", "--skip-repack"),
                  ("--quick", "--set", "real", "--skip-repack"),
                  "ingest_real.json"),
    "loader": Run("loader", ("--set", "real"), ("--quick", "--set", "real"), "loader.json",
                  out_flag=False),
    "mine": Run("mine", ("--set", "real", "--skip-approx"),
                ("--quick", "--set", "real", "--skip-approx"), "mine_real.json",
                venv=".venv-st"),
    "audio": Run("audio", ("--set", "real"), ("--quick", "--set", "real"), "audio_real.json"),
}

#: the other scripts, for ``--extra`` (ratio keys only): script -> its result file
EXTRA = {"video": "video.json", "vq": "vq.json", "realmedia": "realmedia.json",
         "curate": "curate.json", "download": "download.json",
         "remote_loader": "remote_loader.json"}


# ------------------------------------------------------------ finding numbers


def real_part(obj: Any) -> Any:
    """The real set's part of a result (``sets.real`` when the file holds several sets)."""
    if isinstance(obj, dict) and isinstance(obj.get("sets"), dict) and "real" in obj["sets"]:
        return obj["sets"]["real"]
    return obj


def find(obj: Any, **match: Any) -> list[dict[str, Any]]:
    """Every dict anywhere in ``obj`` whose items include ``match``.

    >>> find({"runs": [{"name": "a", "v": 1}, {"name": "b", "v": 2}]}, name="b")
    [{'name': 'b', 'v': 2}]
    """
    out: list[dict[str, Any]] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if all(o.get(k) == v for k, v in match.items()):
                out.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return out


def first_value(rows: list[dict[str, Any]], key: str) -> float | None:
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


@dataclass(frozen=True)
class Work:
    """One row of the issue's table: how to read mmshard's and the peer's number.

    ``higher``: True for rates (ratio = mmshard / peer), False for times (peer / mmshard).
    ``pick(result) -> (mmshard, peer, identical)``; ``identical`` is None when the row
    has no output-equality condition.
    """

    work: str
    run: str
    unit: str
    higher: bool
    goal: float
    pick: Callable[[Any], tuple[float | None, float | None, bool | None]]
    peer: str


def _ingest(name: str) -> Callable[[Any], tuple[float | None, float | None, None]]:
    def pick(res: Any) -> tuple[float | None, float | None, None]:
        runs = [r for r in find(real_part(res), name=name) if "repack" not in str(r.get("task"))]
        peer = [r for r in find(real_part(res), name="img2dataset")
                if "repack" not in str(r.get("task"))]
        return first_value(runs, "images_s"), first_value(peer, "images_s"), None
    return pick


def _loader(res: Any) -> tuple[float | None, float | None, None]:
    rows = find(res, set="real", mode="decode")
    mm = first_value([r for r in rows if r.get("tool") == "mmshard"], "samples_per_s")
    peer = first_value([r for r in rows if r.get("tool") == "webdataset"], "samples_per_s")
    return mm, peer, None


def _mine(res: Any) -> tuple[float | None, float | None, bool | None]:
    part = real_part(res)
    mm = first_value(find(part, method="mmshard_exact", status="ok"), "wall_s")
    peer = first_value(find(part, method="st_mine_hard_negatives", status="ok"), "wall_s")
    overlaps = [s.get("neg_overlap_mmshard_vs_st") for s in find(part)
                if "neg_overlap_mmshard_vs_st" in s]
    same = None if not overlaps else bool(overlaps[0] == 1.0)
    return mm, peer, same


def _mel(bins: int) -> Callable[[Any], tuple[float | None, float | None, None]]:
    def pick(res: Any) -> tuple[float | None, float | None, None]:
        part = real_part(res)
        mm = first_value(find(part, impl="mmshard", n_mels=bins), "ms_per_clip")
        peer = first_value(find(part, impl="whisper", n_mels=bins), "ms_per_clip")
        return mm, peer, None
    return pick


WORK = (
    Work("ingest real photos, shortest side 256, JPEG q95, default (Ray) executor", "ingest",
         "img/s", True, 2.0, _ingest("mmshard-ray"), "img2dataset 2 proc x 8 threads"),
    Work("same, --executor local --workers 2", "ingest", "img/s", True, 2.0,
         _ingest("mmshard-local"), "img2dataset 2 proc x 8 threads"),
    Work("Loader, real photos, float 224 crop, batch 64, 2 workers", "loader", "samples/s",
         True, 1.5, _loader, "webdataset.WebLoader"),
    Work("exact hard negatives, Fashion-MNIST x 784, k 16, whole process", "mine", "s",
         False, 3.0, _mine, "sentence-transformers mine_hard_negatives"),
    Work("Whisper log-mel, real speech, one thread, 80 bins", "audio", "ms/clip", False, 2.0,
         _mel(80), "openai-whisper"),
    Work("Whisper log-mel, real speech, one thread, 128 bins", "audio", "ms/clip", False, 2.0,
         _mel(128), "openai-whisper"),
)


def work_rows(results: dict[str, Any], errors: dict[str, str] | None = None
              ) -> list[dict[str, Any]]:
    """The issue's table from each run's parsed JSON (``results[run]``, None if absent).

    >>> res = {"mine": {"rows": [{"method": "mmshard_exact", "status": "ok", "wall_s": 2.0},
    ...        {"method": "st_mine_hard_negatives", "status": "ok", "wall_s": 8.0}],
    ...        "summary": {"neg_overlap_mmshard_vs_st": 1.0}}}
    >>> r = [w for w in work_rows(res) if w["run"] == "mine"][0]
    >>> r["ratio"], r["goal"], r["met"]
    (4.0, '>= 3x, sets identical', 'yes')
    """
    errors = errors or {}
    rows = []
    for w in WORK:
        res = results.get(w.run)
        row: dict[str, Any] = {"work": w.work, "run": w.run, "unit": w.unit, "peer_tool": w.peer,
                               "mmshard": None, "peer": None, "ratio": None,
                               "goal": f">= {w.goal:g}x", "met": "n/a"}
        if w.run == "mine":
            row["goal"] += ", sets identical"
        if res is None:
            row["note"] = errors.get(w.run, "not run")
            rows.append(row)
            continue
        try:
            mm, peer, same = w.pick(res)
        except Exception as e:  # noqa: BLE001 - a changed JSON shape is a row note
            mm, peer, same = None, None, None
            row["note"] = f"cannot read the result: {type(e).__name__}: {e}"
        row["mmshard"], row["peer"] = mm, peer
        if mm and peer:
            row["ratio"] = round(mm / peer if w.higher else peer / mm, 2)
            ok = row["ratio"] >= w.goal and same is not False
            row["met"] = "yes" if ok else "no"
            if same is not None:
                row["identical"] = same
        elif "note" not in row:
            row["note"] = "mmshard or peer number missing in the result"
        rows.append(row)
    return rows


def print_work_table(rows: list[dict[str, Any]]) -> None:
    def num(v: float | None, unit: str) -> str:
        return "n/a" if v is None else f"{v:,.3g} {unit}"

    table = [{"work": r["work"], "mmshard": num(r["mmshard"], r["unit"]),
              "peer": num(r["peer"], r["unit"]) + f" ({r['peer_tool']})",
              "ratio": "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x",
              "goal": r["goal"], "met?": r["met"]} for r in rows]
    print_table(table, ["work", "mmshard", "peer", "ratio", "goal", "met?"])
    for r in rows:
        if r.get("note"):
            print(f"  {r['run']}: {r['note']}")


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
            if any(w in leaf for w in ("ratio", "speedup", "_over_", "fraction")):
                out[path] = round(float(o), 3)

    walk(obj, prefix)
    return out


# ---------------------------------------------------------------------- runs


def run_script(script: str, args: tuple[str, ...], result: Path, timeout: float,
               restore: bool, python: str = sys.executable) -> tuple[dict[str, Any], Any]:
    """Run ``bench/<script>.py args``; returns (row, parsed result or None).  With
    ``restore`` a result file at a fixed path is put back as it was afterwards."""
    path = HERE / f"{script}.py"
    if not path.exists():
        return {"script": script, "status": "missing"}, None
    saved = result.read_bytes() if restore and result.exists() else None
    before = result.stat().st_mtime_ns if result.exists() else None
    r = run_measured([python, str(path), *args], cwd=HERE.parent, timeout=timeout)
    row: dict[str, Any] = {"script": script, "args": list(args), "rc": r["rc"],
                           "wall_s": r["wall_s"], "peak_pss_mb": r["peak_pss_mb"]}
    fresh = result.exists() and result.stat().st_mtime_ns != before
    parsed = json.loads(result.read_text()) if fresh else None
    if restore and saved is not None:
        result.write_bytes(saved)
    if r["rc"] != 0 or parsed is None:
        row["status"] = "failed" if r["rc"] != 0 else "no new result"
        row["tail"] = r["output"][-1500:]
        return row, None
    row["status"] = "ok"
    return row, parsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the real sets, smaller")
    ap.add_argument("--only", action="append", choices=sorted(RUNS))
    ap.add_argument("--extra", action="store_true",
                    help="also the other scripts' --quick runs (ratio keys only)")
    ap.add_argument("--from-results", type=Path, metavar="DIR",
                    help="build the table from the JSONs in DIR; run nothing")
    ap.add_argument("--budget", type=float, default=540.0,
                    help="--extra: start no further script after this many seconds")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per script")
    ap.add_argument("--out", type=Path, default=RESULTS / "all.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    names = [n for n in RUNS if not args.only or n in args.only]
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    runs: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-all-"))
    try:
        for n in names:
            spec = RUNS[n]
            if args.from_results:
                f = args.from_results / spec.result
                results[n] = json.loads(f.read_text()) if f.exists() else None
                if results[n] is None:
                    errors[n] = f"{f} not found"
                continue
            out = (tmp if args.quick else RESULTS) / spec.result
            extra = ("--out", str(out)) if spec.out_flag else ()
            if not spec.out_flag:
                out = RESULTS / spec.result
            print(f"== {n}: {spec.script}.py {' '.join(spec.quick if args.quick else spec.full)}",
                  flush=True)
            row, parsed = run_script(spec.script, (spec.quick if args.quick else spec.full)
                                     + extra, out, args.timeout,
                                     restore=args.quick and not spec.out_flag,
                                     python=spec.python())
            runs.append(row)
            results[n] = parsed
            if parsed is None:
                errors[n] = f"{spec.script}.py {row['status']}"
        if args.extra and not args.from_results:
            for name, res in EXTRA.items():
                left = args.budget - (time.perf_counter() - t0)
                if left <= 30:
                    runs.append({"script": name, "status": "skipped: time budget"})
                    continue
                row, parsed = run_script(name, ("--quick",), RESULTS / res, left,
                                         restore=True)
                row["ratios"] = headline_ratios(parsed) if parsed else {}
                runs.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = work_rows(results, errors)
    print()
    print_work_table([r for r in table if r["run"] in names])
    extra_rows = [r for r in runs if "ratios" in r or r.get("status", "").startswith("skip")]
    if extra_rows:
        print()
        print_table([{"script": r["script"], "status": r["status"], "ratio": k, "value": v}
                     for r in extra_rows for k, v in (r.get("ratios") or {"": None}).items()],
                    ["script", "status", "ratio", "value"])
    for r in runs:
        if r["status"] not in ("ok", "missing") and not r["status"].startswith("skip"):
            print(f"\n--- {r['script']} ({r['status']}):\n{r.get('tail', '')}")
    total = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {total} s")
    save_json(args.out, {"machine": machine_info(), "quick": args.quick,
                         "from_results": str(args.from_results) if args.from_results else None,
                         "total_s": total,
                         "work": [r for r in table if r["run"] in names], "runs": runs})
    return 0 if all(r["status"] in ("ok", "missing") or r["status"].startswith("skip")
                    for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
