"""Ingest planning memory against manifest size (issue 15: a 10M-row URL table planned in
bounded memory; issue 17: ingest memory flat from 10k to 1M inputs).

Two measurements, each in a fresh child process that reports its own peak RSS
(``VmHWM`` from /proc/self/status: the high-water mark of its memory, threads included;
``ru_maxrss`` is kept beside it, but it can carry the parent's RSS across the fork/exec
that started the child) and time:

1. **planning** a LAION-like URL Parquet (``url``, ``caption``; generated with pyarrow in
   chunks, never whole in memory) of 100k / 1M / 10M rows: ``old`` = the in-memory path
   (``collect_inputs`` + ``assign_label_ids`` + ``plan_shards``: the table loaded whole,
   one Python object per row), run only up to ``--old-max`` rows; ``new`` = the streamed
   planner (``plan.plan_inputs``) including writing every shard's input file, as ingest
   does;
2. **end-to-end ingest** (``--executor local --workers 2``) of a manifest of 10k / 100k
   (/ 1M) rows naming 64 tiny JPEGs with a unique key column (every row a distinct
   sample): the driver's peak RSS must stay flat.

    python bench/plan_scale.py                       # the full run (about 15-25 min)
    python bench/plan_scale.py --plan-sizes 100000 --ingest-sizes 10000   # quick
    git archive e861e41 mmshard | tar -x -C /tmp/before   # the code before, for
    python bench/plan_scale.py --before /tmp/before         # ... e2e ingest before/after

Writes bench/results/plan_scale.json and prints a table; /proc/loadavg is recorded beside
every number (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench._common import machine_info, print_table, save_json  # noqa: E402

WORDS = ("a photo of the red small cat dog on in with blue large old new city beach mountain "
         "sunset portrait people car tree house street vintage art design logo").split()


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def gen_urls(path: str, n: int, chunk: int = 200_000) -> None:
    """A LAION-like URL table of ``n`` rows, written a chunk at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    schema = pa.schema([("url", pa.string()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            ids = np.arange(start, start + m)
            hosts = rng.integers(0, 5000, m)
            urls = [f"https://img{h}.example.com/images/{i // 1000}/{i:09d}.jpg"
                    for h, i in zip(hosts.tolist(), ids.tolist(), strict=True)]
            picks = words[rng.integers(0, len(words), (m, 8))]
            caps = [" ".join(r) for r in picks.tolist()]
            w.write_table(pa.table({"url": urls, "caption": caps}, schema=schema),
                          row_group_size=100_000)


def gen_image_manifest(folder: str, n: int) -> str:
    """A manifest of ``n`` rows (unique ``id``) naming 64 tiny JPEGs in ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    for j in range(64):
        p = os.path.join(folder, f"img{j:02d}.jpg")
        if not os.path.exists(p):
            Image.new("RGB", (16, 16), (j * 4, 255 - j * 4, (j * 37) % 256)).save(p, "JPEG")
    path = os.path.join(folder, f"m{n}.parquet")
    schema = pa.schema([("id", pa.string()), ("path", pa.string()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, n, 100_000):
            ids = range(start, min(n, start + 100_000))
            w.write_table(pa.table({"id": [f"s{i:08d}" for i in ids],
                                    "path": [f"img{i % 64:02d}.jpg" for i in ids],
                                    "caption": [f"sample {i}" for i in ids]}, schema=schema))
    return path


# ------------------------------------------------------------------ children
def child_plan(mode: str, manifest: str) -> dict:
    from mmshard.pipelines.ingest.job import IngestConfig, plan_shards
    from mmshard.pipelines.ingest.labels import assign_label_ids
    from mmshard.pipelines.ingest.plan import plan_inputs
    from mmshard.pipelines.ingest.sources import collect_inputs
    from mmshard.pipelines.ingest.task import write_items
    from mmshard.storage import Storage

    config = IngestConfig()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as work:
        if mode == "old":
            items, _ = collect_inputs([manifest], config.sources)
            _, items = assign_label_ids(items)
            shards = plan_shards(items, config)
            n_shards, n_items = len(shards), len(items)
        else:
            plan = plan_inputs([manifest], config, work)
            t1 = time.perf_counter()
            storage = Storage(os.path.join(work, "out"))
            n_shards = n_items = 0
            for s in plan.shards():
                write_items(storage, f"_work/plan/{s.name}.jsonl.gz", s.items)
                n_shards += 1
                n_items += len(s.items)
    out = {"seconds": round(time.perf_counter() - t0, 2), "shards": n_shards,
           "inputs": n_items}
    if mode == "new":
        out["phase1_s"] = round(t1 - t0, 2)
    return out


def child_ingest(manifest: str, out: str) -> dict:
    from mmshard import IngestConfig, SourceOptions, ingest, make_executor

    t0 = time.perf_counter()
    r = ingest([manifest], out, IngestConfig(sources=SourceOptions(key_column="id")),
               executor=make_executor("local", workers=2))
    return {"seconds": round(time.perf_counter() - t0, 2), "ok": r.stats["ok"],
            "shards": r.stats["shards"]}


def run_child(*args: str) -> dict:
    t0 = time.perf_counter()
    load0 = _load()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr[-2000:], "wall_s": round(time.perf_counter() - t0, 2)}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["load_before"], res["load_after"] = load0, _load()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--plan-sizes", default="100000,1000000,10000000")
    ap.add_argument("--old-max", type=int, default=1_000_000)
    ap.add_argument("--modes", default="old,new", help="planners to measure: old,new")
    ap.add_argument("--ingest-sizes", default="10000,100000")
    ap.add_argument("--before", default=None,
                    help="a checkout (folder holding mmshard/) of the code before the "
                         "streamed planner: its end-to-end ingest is measured too")
    ap.add_argument("--work", default=None, help="where the generated manifests go")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "plan_scale.json"))
    ap.add_argument("--append", action="store_true",
                    help="add to the results already in --out (a run split in parts)")
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "ingest" and len(rest) == 3:  # the ingest of another checkout (before)
            sys.path.insert(0, rest.pop())
        res = child_plan(*rest) if kind == "plan" else child_ingest(*rest)
        # VmHWM: this process's own high-water mark (ru_maxrss can carry the parent's
        # RSS across the fork/exec that started it)
        res["peak_rss_mb"] = _hwm_mb()
        res["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(res))
        return
    work = a.work or tempfile.mkdtemp(prefix="plan-scale-")
    os.makedirs(work, exist_ok=True)
    rows, results = [], {"machine": machine_info(), "plan": [], "ingest": []}
    if a.append and os.path.exists(a.out):
        with open(a.out) as f:
            old_results = json.load(f)
        results["plan"], results["ingest"] = old_results["plan"], old_results["ingest"]
    for n in [int(x) for x in a.plan_sizes.split(",") if x]:
        path = os.path.join(work, f"urls{n}.parquet")
        if not os.path.exists(path):
            gen_urls(path, n)
        for mode in a.modes.split(","):
            if mode == "old" and n > a.old_max:
                continue
            r = {"rows": n, "mode": mode, **run_child("plan", mode, path)}
            results["plan"].append(r)
            rows.append({"what": f"plan {mode}", "rows": n, "peak_rss_mb": r.get("peak_rss_mb"),
                         "seconds": r.get("seconds"), "load": r.get("load_before")})
            print(json.dumps(r), flush=True)
            save_json(a.out, results)
    for n in [int(x) for x in a.ingest_sizes.split(",") if x]:
        folder = os.path.join(work, "imgs")
        os.makedirs(folder, exist_ok=True)
        manifest = gen_image_manifest(folder, n)
        for mode in (("before", "after") if a.before else ("after",)):
            out = os.path.join(work, f"ds{n}")
            shutil.rmtree(out, ignore_errors=True)
            extra = (os.path.abspath(a.before),) if mode == "before" else ()
            r = {"rows": n, "mode": mode, **run_child("ingest", manifest, out, *extra)}
            shutil.rmtree(out, ignore_errors=True)
            results["ingest"].append(r)
            rows.append({"what": f"ingest e2e {mode}", "rows": n,
                         "peak_rss_mb": r.get("peak_rss_mb"), "seconds": r.get("seconds"),
                         "load": r.get("load_before")})
            print(json.dumps(r), flush=True)
            save_json(a.out, results)
    old = {r["rows"]: r for r in results["plan"] if r["mode"] == "old" and "peak_rss_mb" in r}
    for r in results["plan"]:
        if r["mode"] == "new" and r["rows"] in old and "peak_rss_mb" in r:
            r["rss_ratio_old_over_new"] = round(old[r["rows"]]["peak_rss_mb"] /
                                                r["peak_rss_mb"], 2)
    save_json(a.out, results)
    print_table(rows, ["what", "rows", "peak_rss_mb", "seconds", "load"])
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
