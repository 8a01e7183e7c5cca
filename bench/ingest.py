"""Image ingest: ``mmshard ingest`` vs img2dataset, and repack speed vs the disk's.

Builds (once, cached under bench/data/) a corpus of photo-like JPEGs of 0.3-3 MP at
quality 90, then in one run, on the same cores:

1. ``mmshard ingest`` (CLI subprocess) resizing to shortest side 256, JPEG quality 95,
   with ``--executor local --workers W`` (threads) and ``--executor ray --workers W``;
2. ``img2dataset`` on the same files, read through ``file://`` URLs (urllib opens them;
   no HTTP server), ``--resize_mode keep_ratio --resize_only_if_bigger`` (mmshard's
   no-upscale ``shortest``), ``--encode_quality 95``, ``--output_format webdataset``,
   ``--processes_count W``, ``--number_sample_per_shard`` = mmshard's ``--max-samples``;
3. a repack without re-encoding (``--image-format keep``, no resize) with both executors,
   against the disk's sequential write speed measured in the same run two ways:
   ``dd if=/dev/zero bs=1M oflag=direct conv=fdatasync`` and a Python loop writing
   random 8 MiB blocks through the page cache, then fsync (same total as the repack
   output).

Every run is a subprocess in its own session; its peak memory is sampled from /proc over
all its processes (Ray's raylet, GCS and workers; img2dataset's pool and logger):
the peak sum of PSS (real footprint) and of RSS (shared pages counted per process).
The corpus is read once before each run, so every tool reads it from the page cache.

Two corpora (``--set``): ``synthetic`` (the photo-like JPEGs above, 5,000; shards of
images // 20) and ``real`` (3,000 JPEGs of 0.3-3 MP cut from camera photos shipped in
Debian packages, bench/realphotos.py; shards of 1,000 samples, mmshard's default, so a
3,000-image job is 3 tasks on 2 workers).  ``both`` (default) runs the real set first.

img2dataset is never installed into the project's environment: it lives in the venv
bench/.venv-img2dataset, created (``python -m venv`` + ``pip install img2dataset``) on
first use or with ``--setup``.

    python bench/ingest.py --setup   # create the venv and the corpus, run nothing
    python bench/ingest.py --quick   # 300 real + 500 synthetic images
    python bench/ingest.py           # 3,000 real photos, then 5,000 synthetic
    python bench/ingest.py --set real

Writes bench/results/ingest.json (``machine.quick`` says which mode made it).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data"
WORK = BENCH / "work" / "ingest"
VENV = BENCH / ".venv-img2dataset"
GEN_VERSION = 1
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 9 / 16)


# ---------------------------------------------------------------------------- corpus

def photo_jpeg(index: int) -> bytes:
    """A deterministic photo-like JPEG (0.3-3 MP, quality 90) for corpus position ``index``.

    A few-pixel random colour field upscaled with BICUBIC, 3-7 flat shapes, and mild
    noise (drawn at half resolution and repeated: 4x cheaper than full-resolution noise).
    About 10x faster than ``mmshard.synth.photo_like`` at 3 MP (0.1 s vs 1.0 s measured).
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([GEN_VERSION, index])
    mp = rng.uniform(0.3e6, 3.0e6)
    ar = ASPECTS[int(rng.integers(len(ASPECTS)))]
    w = int(math.sqrt(mp * ar))
    h = int(mp / w)
    small = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(min(w, h) // 12, min(w, h) // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
    noise = rng.integers(-6, 7, (h // 2 + 1, w // 2 + 1, 1), dtype=np.int16)
    noise = np.repeat(np.repeat(noise, 2, 0), 2, 1)[:h, :w]
    arr = np.asarray(im).astype(np.int16) + noise
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write_one(args: tuple[str, int]) -> int:
    folder, i = args
    path = Path(folder) / f"img_{i:06d}.jpg"
    tmp = path.with_suffix(".tmp")
    data = photo_jpeg(i)
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def corpus_dir(n: int) -> Path:
    return DATA / f"ingest-photos-v{GEN_VERSION}-{n}"


def ensure_corpus(n: int, procs: int) -> tuple[Path, list[Path], int]:
    """The corpus folder for ``n`` images (made or reused), its files and total bytes."""
    root = corpus_dir(n)
    images = root / "images"
    marker = root / "complete.json"
    if marker.exists():
        files = sorted(images.glob("*.jpg"))
        info = json.loads(marker.read_text())
        if len(files) == n and info.get("count") == n:
            return images, files, int(info["bytes"])
    images.mkdir(parents=True, exist_ok=True)
    # Reuse the first n images of a bigger cached corpus by hard links (same generator).
    bigger = sorted((p for p in DATA.glob(f"ingest-photos-v{GEN_VERSION}-*")
                     if (p / "complete.json").exists() and p != root),
                    key=lambda p: int(p.name.rsplit("-", 1)[1]))
    todo = [i for i in range(n) if not (images / f"img_{i:06d}.jpg").exists()]
    for big in bigger:
        if int(big.name.rsplit("-", 1)[1]) >= n:
            for i in todo:
                dst = images / f"img_{i:06d}.jpg"
                try:
                    os.link(big / "images" / dst.name, dst)
                except OSError:
                    shutil.copyfile(big / "images" / dst.name, dst)
            todo = []
            break
    if todo:
        print(f"generating {len(todo)} photo-like JPEGs in {images} ({procs} processes)...",
              flush=True)
        t0 = time.perf_counter()
        with Pool(procs) as pool:
            for k, _ in enumerate(pool.imap_unordered(_write_one, [(str(images), i) for i in todo],
                                                      chunksize=8)):
                if (k + 1) % 500 == 0:
                    print(f"  {k + 1}/{len(todo)}", flush=True)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    files = sorted(images.glob("*.jpg"))
    total = sum(f.stat().st_size for f in files)
    marker.write_text(json.dumps({"count": len(files), "bytes": total,
                                  "generator_version": GEN_VERSION}))
    return images, files, total


def real_corpus(n: int) -> tuple[Path, list[Path], int]:
    """The first ``n`` real photos (bench/realphotos.py) in a folder of their own (hard
    links), so ``mmshard ingest FOLDER`` sees exactly them."""
    import realphotos

    _, photos, total = realphotos.ensure(n)
    folder = DATA / f"real-photos-v{realphotos.VERSION}-n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        dst = folder / p.name
        if not dst.exists():
            try:
                os.link(p, dst)
            except OSError:
                shutil.copyfile(p, dst)
    return folder, sorted(folder.glob("*.jpg")), total


def warm(files: list[Path]) -> None:
    """Read every input once so each tool finds it in the page cache."""
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


# ---------------------------------------------------------------------------- tools

def ensure_img2dataset() -> Path:
    """Path of the img2dataset executable in bench/.venv-img2dataset (created if missing)."""
    exe = VENV / "bin" / "img2dataset"
    if exe.exists():
        return exe
    print(f"creating {VENV} and installing img2dataset into it (not into this Python)...",
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def img2dataset_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('img2dataset'))"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def run_mmshard(src: Path, out: Path, executor: str, workers: int, shard_size: int,
                reencode: bool, verify: str = "decode") -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    head = [sys.executable, "-m", "mmshard.cli.main"]
    if executor == "ray-classic":  # the embedded cluster as before: a blocking ray.init()
        head = [sys.executable, "-c", RAY_CLASSIC]  # and a graceful ray.shutdown()
        executor = "ray"
    cmd = [*head, "ingest", str(src), "--out", str(out),
           "--executor", executor, "--workers", str(workers), "--no-progress",
           "--max-samples", str(shard_size)]
    if reencode:
        cmd += ["--image-resize", "shortest", "--image-size", "256", "--image-format", "jpg",
                "--image-quality", "95"]
    else:
        cmd += ["--image-format", "keep", "--image-verify", verify]
    r = run_measured(cmd)
    stats_file = out / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    tars = sorted(out.glob("shards/*.tar"))
    r.update(ok=stats.get("ok"), failed=stats.get("failed"),
             bytes_out=sum(t.stat().st_size for t in tars), shards=len(tars),
             first_image_size=_first_jpg_size(tars[0]) if tars else None,
             job_s=stats.get("seconds"))
    return r


# ``--executor ray`` as it was before the background start, the lean head and the fast stop
# (bench/results/ingest_real.json ``ray_fixed_cost``): ray.init() blocks before the job,
# the job joins that cluster, and ray.shutdown() at exit stops it gracefully.
RAY_CLASSIC = """
import sys, ray
ray.init(num_cpus=int(sys.argv[sys.argv.index("--workers") + 1]), include_dashboard=False,
         log_to_driver=False, configure_logging=False)
from mmshard.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run_img2dataset(exe: Path, files: list[Path], out: Path, workers: int, threads: int,
                    shard_size: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    urls = out.parent / "img2dataset_urls.txt"
    urls.write_text("".join(f.resolve().as_uri() + "\n" for f in files))
    cmd = [str(exe), "--url_list", str(urls), "--input_format", "txt",
           "--output_folder", str(out), "--output_format", "webdataset",
           "--image_size", "256", "--resize_mode", "keep_ratio",
           "--resize_only_if_bigger", "True", "--encode_format", "jpg",
           "--encode_quality", "95", "--processes_count", str(workers),
           "--thread_count", str(threads), "--number_sample_per_shard", str(shard_size),
           "--distributor", "multiprocessing"]
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")  # no network version check
    r = run_measured(cmd, env=env)
    ok = count = 0
    for sf in glob.glob(str(out / "*_stats.json")):
        s = json.loads(Path(sf).read_text())
        ok += int(s.get("successes", 0))
        count += int(s.get("count", 0))
    tars = sorted(out.glob("*.tar"))
    r.update(ok=ok, failed=count - ok, bytes_out=sum(t.stat().st_size for t in tars),
             shards=len(tars), first_image_size=_first_jpg_size(tars[0]) if tars else None,
             job_s=None)
    return r


def _first_jpg_size(tar: Path) -> list[int] | None:
    from PIL import Image

    with tarfile.open(tar) as tf:
        for m in tf:
            if m.name.endswith(".jpg"):
                f = tf.extractfile(m)
                assert f is not None
                return list(Image.open(io.BytesIO(f.read())).size)
    return None


def disk_dd(path: Path, mb: int) -> dict[str, Any]:
    """Sequential write with dd (zeros, 1 MiB blocks, O_DIRECT, fdatasync at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mb}",
                        "oflag=direct", "conv=fdatasync"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    path.unlink(missing_ok=True)
    if p.returncode != 0:
        return {"method": "dd", "error": p.stderr.strip()[-300:]}
    return {"method": f"dd if=/dev/zero bs=1M count={mb} oflag=direct conv=fdatasync",
            "bytes": mb << 20, "wall_s": round(wall, 3), "mb_s": round(mb / wall, 1),
            "dd_says": p.stderr.strip().splitlines()[-1]}


def disk_pywrite(path: Path, nbytes: int) -> dict[str, Any]:
    """Buffered write of ``nbytes`` random bytes in 8 MiB blocks, then fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).bytes(8 << 20)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            left -= f.write(block[:min(left, len(block))])
        f.flush()
        os.fsync(f.fileno())
    wall = time.perf_counter() - t0
    path.unlink(missing_ok=True)
    return {"method": "python buffered write of random 8 MiB blocks + fsync",
            "bytes": nbytes, "wall_s": round(wall, 3), "mb_s": round(nbytes / 2**20 / wall, 1)}


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 real + 500 synthetic images")
    ap.add_argument("--set", choices=("real", "synthetic", "both"), default="both")
    ap.add_argument("-n", "--images", type=int,
                    help="synthetic corpus size (default 5000; 500 quick)")
    ap.add_argument("--n-real", type=int, help="real photos (default 3000; 300 quick)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes/threads (2)")
    ap.add_argument("--threads", type=int, default=8,
                    help="img2dataset --thread_count per process (8)")
    ap.add_argument("--shard-size", type=int,
                    help="samples per shard for both tools (default: 1000 for the real set, "
                         "images // 20 for the synthetic one)")
    ap.add_argument("--executors", default="local,ray", help="mmshard executors to run")
    ap.add_argument("--skip-img2dataset", action="store_true")
    ap.add_argument("--skip-repack", action="store_true")
    ap.add_argument("--setup", action="store_true",
                    help="create the img2dataset venv and the corpora, then stop")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/ingest.json)")
    ap.add_argument("--item-threads-ab", action="store_true",
                    help="only an A/B of the per-task item threads (1 vs 2, local executor, "
                         "2 workers, the real set, 1,000-sample shards), interleaved")
    ap.add_argument("--ray-fixed-cost", type=int, metavar="REPS", default=0,
                    help="only time the embedded Ray cluster's start and stop (classic "
                         "ray.init/shutdown vs RayExecutor), REPS times each, interleaved")
    args = ap.parse_args(argv)
    if args.ray_fixed_cost:
        out = args.out or BENCH / "results" / "ingest_ray_fixed_cost.json"
        save_json(out, {"machine": machine_info(), **ray_fixed_cost(args.ray_fixed_cost)})
        print(f"saved {out}")
        return
    if args.item_threads_ab:
        item_threads_ab(args.n_real or 3000)
        return
    exe = None if args.skip_img2dataset else ensure_img2dataset()
    start_info = machine_info()  # the load average before the runs, not after them
    sets: dict[str, Any] = {}
    for name in (("real", "synthetic") if args.set == "both" else (args.set,)):
        if name == "real":
            n = args.n_real or (300 if args.quick else 3000)
            src, files, in_bytes = real_corpus(n)
            shard_size = args.shard_size or (100 if args.quick else 1000)
        else:
            n = args.images or (500 if args.quick else 5000)
            src, files, in_bytes = ensure_corpus(n, args.workers)
            shard_size = args.shard_size or max(10, n // 20)
        if args.setup:
            print(f"{name} corpus: {n} JPEGs, {in_bytes / 2**20:.0f} MiB in {src}")
            continue
        sets[name] = run_set(name, args, exe, src, files, in_bytes, shard_size)
    if args.setup:
        return
    info = {**start_info, "quick": args.quick, "workers": args.workers,
            "img2dataset_threads": args.threads,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
    if exe is not None:
        info["img2dataset_version"] = img2dataset_version()
    first = sets[next(iter(sets))]
    out = args.out or BENCH / "results" / "ingest.json"
    save_json(out, {"machine": info, "sets": sets,
                    # the first set's tables also at the top level (older readers)
                    "runs": first["runs"], "disk": first["disk"], "summary": first["summary"],
                    "notes": NOTES})
    print(f"saved {out}")


RAY_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from mmshard.keys import path_key
if sys.argv[1] == "classic":
    import ray
    t1 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t2 = time.perf_counter()
    ray.get([ray.remote(path_key).remote(f"d/{i}") for i in range(2)])
    t3 = time.perf_counter()
    ray.shutdown()
else:
    from mmshard.pipelines.executor import RayExecutor
    t1 = time.perf_counter()
    ex = RayExecutor(2)
    t2 = time.perf_counter()
    list(ex.imap_unordered(path_key, [f"d/{i}" for i in range(2)]))
    t3 = time.perf_counter()
    ex.close()
t4 = time.perf_counter()
print(json.dumps({"import_s": round(t1 - t0, 3), "start_call_s": round(t2 - t1, 3),
                  "start_to_first_results_s": round(t3 - t1, 3), "stop_s": round(t4 - t3, 3)}))
"""


def ray_fixed_cost(reps: int) -> dict[str, Any]:
    """The embedded cluster's own cost, without a job: start, two trivial tasks, stop,
    for a blocking ray.init() + ray.shutdown() ("classic") and for RayExecutor (background
    start without the autoscaler and log monitors, SIGKILL stop), interleaved ``reps``
    times.  Each is a subprocess measured like the ingest runs (wall incl. interpreter
    start and exit; CPU of every process of the run)."""
    rows = []
    for _ in range(reps):
        for kind in ("classic", "mmshard"):
            load = os.getloadavg()[0]
            r = run_measured([sys.executable, "-c", RAY_PROBE, kind], cwd=BENCH.parent,
                             interval=0.1)
            lines = [ln for ln in r["output"].splitlines() if ln.startswith("{")]
            row = {"kind": kind, "load1": round(load, 2), "wall_s": r["wall_s"],
                   "cpu_s": r["cpu_s"], "max_procs": r["max_procs"],
                   **(json.loads(lines[-1]) if lines else {"error": r["output"][-500:]})}
            rows.append(row)
            print(row, flush=True)
    med = {}
    for kind in ("classic", "mmshard"):
        mine = [r for r in rows if r["kind"] == kind and "stop_s" in r]
        med[kind] = {k: round(float(np.median([r[k] for r in mine])), 2)
                     for k in ("wall_s", "cpu_s", "start_to_first_results_s", "stop_s")
                     } if mine else {}
    print_table([{"kind": k, **v} for k, v in med.items()],
                ["kind", "wall_s", "cpu_s", "start_to_first_results_s", "stop_s"])
    return {"rows": rows, "median": med}


def item_threads_ab(n: int, reps: int = 2) -> None:
    """In-process A/B: a shard task building its inputs on 1 thread vs 2 (the default
    on 2 CPUs), 3 tasks on 2 workers; prints wall, images/s and CPU per run."""
    from mmshard.media.image import ImageOptions
    from mmshard.pipelines.executor import LocalExecutor
    from mmshard.pipelines.ingest.job import IngestConfig, ingest

    src, files, _ = real_corpus(n)
    warm(files)
    cfg = IngestConfig(max_samples=1000, image=ImageOptions(
        resize="shortest", size=256, format="jpg", quality=95))
    cpu_count = os.cpu_count
    rows = []
    try:
        for _ in range(reps):
            for threads in (1, 2):
                os.cpu_count = lambda t=threads: t  # the task's default item threads
                out = WORK / "threads-ab"
                shutil.rmtree(out, ignore_errors=True)
                c0, t0 = os.times(), time.perf_counter()
                ingest([str(src)], str(out), cfg, executor=LocalExecutor(workers=2))
                wall, c1 = time.perf_counter() - t0, os.times()
                rows.append({"item_threads": threads, "wall_s": round(wall, 2),
                             "images_s": round(n / wall, 1),
                             "cpu_s": round(c1.user + c1.system - c0.user - c0.system, 1)})
                print(rows[-1], flush=True)
    finally:
        os.cpu_count = cpu_count
    save_json(BENCH / "results" / "ingest_threads_ab.json",
              {"machine": machine_info(), "images": n, "rows": rows})


NOTES = {
    "wall_s": "end to end, process start to exit (Ray start-up included)",
    "job_images_s": "images / stats.json seconds: mmshard's own job time, without "
                    "interpreter and Ray start-up",
    "peak_pss_mb": "peak over 0.25 s samples of the sum of PSS of every process of the run "
                   "(driver + workers + Ray daemons)",
    "peak_rss_mb": "same with RSS (shared pages counted per process)",
    "cpu_ms_per_image": "user+system CPU of all processes of the run, sampled from /proc, "
                        "per input image",
    "inputs": "read from the page cache (each run is preceded by a read of every input file)",
}


def run_set(set_name: str, args: argparse.Namespace, exe: Path | None, src: Path,
            files: list[Path], in_bytes: int, shard_size: int) -> dict[str, Any]:
    """Every run on one corpus: resize (mmshard executors, img2dataset), repacks, disk."""
    from PIL import Image

    n = len(files)
    executors = [e for e in args.executors.split(",") if e]
    mps = []
    for f in files[:: max(1, n // 200)]:
        with Image.open(f) as im:
            mps.append(im.size[0] * im.size[1] / 1e6)
    info = {"images": n, "shard_size": shard_size,
            "corpus": str(src.relative_to(BENCH.parent)), "input_mb": round(in_bytes / 2**20, 1),
            "mean_mp_sampled": round(float(np.mean(mps)), 2),
            "mp_range_sampled": [round(min(mps), 2), round(max(mps), 2)]}
    print(f"{set_name} corpus: {n} JPEGs, {in_bytes / 2**20:.0f} MiB, mean "
          f"{info['mean_mp_sampled']} MP, shards of {shard_size}", flush=True)
    work = WORK / set_name
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []

    def record(name: str, tool: str, task: str, r: dict[str, Any]) -> None:
        r = {"name": name, "tool": tool, "task": task, **r}
        r["images_s"] = round(n / r["wall_s"], 1)
        r["cpu_ms_per_image"] = round(1000 * r["cpu_s"] / n, 1)
        r["job_images_s"] = round(n / r["job_s"], 1) if r.get("job_s") else None
        r["in_mb_s"] = round(in_bytes / 2**20 / r["wall_s"], 1)
        r["out_mb_s"] = round(r["bytes_out"] / 2**20 / r["wall_s"], 1)
        if r["rc"] != 0 or r["ok"] != n:
            print(f"!! {name}: rc={r['rc']} ok={r['ok']}/{n}\n{r['output'][-1500:]}", flush=True)
        if r["rc"] == 0:
            r.pop("output")
        runs.append(r)
        print(f"{set_name} {name}: {r['wall_s']:.1f} s, {r['images_s']} img/s, ok "
              f"{r['ok']}/{n}, peak PSS {r['peak_pss_mb']} MiB", flush=True)

    # Resize runs: mmshard executors and img2dataset interleaved so drifting load from
    # other users of the machine hits both tools alike.
    order: list[str] = []
    for i, e in enumerate(executors):
        order.append(e)
        if i == 0 and exe is not None:
            order.append("img2dataset")
    for what in order:
        warm(files)
        load = {"load1_before": round(os.getloadavg()[0], 2)}
        if what == "img2dataset":
            assert exe is not None
            record("img2dataset", "img2dataset", "resize256_q95",
                   {**run_img2dataset(exe, files, work / "i2d", args.workers, args.threads,
                                      shard_size), **load})
            shutil.rmtree(work / "i2d", ignore_errors=True)
        else:
            record(f"mmshard-{what}", "mmshard", "resize256_q95",
                   {**run_mmshard(src, work / f"mm-{what}", what, args.workers, shard_size,
                                  True), **load})
            shutil.rmtree(work / f"mm-{what}", ignore_errors=True)

    disk: dict[str, Any] = {}
    if not args.skip_repack:
        for e in executors:
            warm(files)
            record(f"mmshard-{e}-repack", "mmshard", "repack_keep",
                   run_mmshard(src, work / f"repack-{e}", e, args.workers, shard_size, False))
            shutil.rmtree(work / f"repack-{e}", ignore_errors=True)
            warm(files)  # the same repack, checking kept JPEGs by structure, not decode
            record(f"mmshard-{e}-repack-structure", "mmshard", "repack_keep",
                   run_mmshard(src, work / f"repack-s-{e}", e, args.workers, shard_size,
                               False, verify="structure"))
            shutil.rmtree(work / f"repack-s-{e}", ignore_errors=True)
        out_bytes = max(r["bytes_out"] for r in runs if r["task"] == "repack_keep")
        disk["dd"] = disk_dd(work / "ddtest", max(256, min(2048, out_bytes >> 20)))
        disk["pywrite"] = disk_pywrite(work / "pywrite", out_bytes)
    summary = _summary(runs, disk)
    print()
    print_table(runs, ["name", "task", "ok", "wall_s", "images_s", "job_images_s", "in_mb_s",
                       "out_mb_s", "cpu_ms_per_image", "peak_pss_mb", "peak_rss_mb",
                       "max_procs", "load1_before"])
    if disk:
        print()
        print_table(list(disk.values()), ["method", "bytes", "wall_s", "mb_s"])
    print()
    for k, v in summary.items():
        print(f"{set_name} {k}: {v}")
    return {"corpus": info, "runs": runs, "disk": disk, "summary": summary}


def _summary(runs: list[dict[str, Any]], disk: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    resize = [r for r in runs if r["task"] == "resize256_q95" and r["tool"] == "mmshard"
              and r["rc"] == 0]
    i2d = [r for r in runs if r["tool"] == "img2dataset" and r["rc"] == 0]
    if resize:
        best = max(resize, key=lambda r: r["images_s"])
        summary["mmshard_best"] = best["name"]
        summary["mmshard_images_s"] = best["images_s"]
        if i2d:
            summary["img2dataset_images_s"] = i2d[0]["images_s"]
            summary["ratio_mmshard_over_img2dataset"] = round(
                best["images_s"] / i2d[0]["images_s"], 2)
            for r in resize:  # per executor: the default (ray) is the one the goal names
                summary[f"ratio_{r['name']}_over_img2dataset"] = round(
                    r["images_s"] / i2d[0]["images_s"], 2)
            summary["cpu_ratio_img2dataset_over_mmshard"] = round(
                i2d[0]["cpu_ms_per_image"] / best["cpu_ms_per_image"], 2)
            summary["goal_ratio"] = 2.0
    repack = [r for r in runs if r["task"] == "repack_keep" and r["rc"] == 0]
    if repack and disk.get("dd", {}).get("mb_s"):
        best = max(repack, key=lambda r: r["in_mb_s"])
        disk_mb_s = max(disk["dd"]["mb_s"], disk["pywrite"]["mb_s"])
        summary.update(
            repack_best=best["name"], repack_in_mb_s=best["in_mb_s"],
            repack_out_mb_s=best["out_mb_s"], disk_mb_s_dd=disk["dd"]["mb_s"],
            disk_mb_s_pywrite=disk["pywrite"]["mb_s"], disk_mb_s_used=disk_mb_s,
            repack_in_fraction_of_disk=round(best["in_mb_s"] / disk_mb_s, 3),
            repack_out_fraction_of_disk=round(best["out_mb_s"] / disk_mb_s, 3),
            goal_fraction=0.6)
    return summary


if __name__ == "__main__":
    main()
