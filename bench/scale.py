"""Scale figures: Loader memory against dataset size, and mining 1M x 512 within 24 GiB.

``loader``: datasets of tiny samples (``txt`` + ``cls``, ~1 KiB of tar per sample) are
written straight as WebDataset tars with ``index.json`` and ``manifest.parquet`` (the
files ingest commits; 10,000 samples per shard), once per size, under
bench/work/scale/.  Each size runs in its own process: one full Loader epoch (batch
256, 2 workers) while a thread samples, from /proc, the RSS and PSS summed over the
main process and its DataLoader workers.  Columns: the RSS after ``import``, after the
Loader is built (index, manifest metadata, plan), the epoch's peak RSS and PSS sums
(bench/_common.run_measured: every process of the run, sampled from /proc),
the RSS after planning 8 more epochs (``set_epoch`` + ``len``), and the growth per
sample against the smallest size.  A peak that grows only by a
small per-sample index (bytes per sample, constant) is "flat".

``mine``: ``bench/mine.py``'s synthetic generator at 1,000,000 x 512 (clustered
random unit vectors, float32, 2 GB) and 2,000 queries, mined exactly (``kind="flat"``,
one-shot) by default; ``--mine-kinds flat,auto`` adds what ``kind="auto"`` picks at
that size (IVF-Flat: its k-means over 4,096 lists is most of a 2-core run); wall time
and the peak RSS/PSS of the process tree against the 24 GiB goal.

    python bench/scale.py                     # loader at 10k, 100k, 400k; mine 1M x 512
    python bench/scale.py --quick             # loader at 10k, 50k, 100k; mine 200k x 512
    python bench/scale.py --only loader --sizes 10000,1000000
    python bench/scale.py --only mine --mine-n 1000000 --mine-kinds flat,auto

Results: tables on stdout and bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "scale"
PER_SHARD = 10_000


# ------------------------------------------------------------------ datasets


def _member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
    tf.addfile(ti, io.BytesIO(data))


def make_tiny_dataset(root: Path, n: int) -> Path:
    """``n`` samples of ``txt`` + ``cls`` in shards of PER_SHARD, with the index and
    manifest the Loader reads (reused when already there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmshard.dataset import DatasetIndex, ShardInfo

    if (root / "index.json").exists() and (root / "manifest.parquet").exists():
        return root
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shards, keys, urls = [], [], []
    for s, start in enumerate(range(0, n, PER_SHARD)):
        url = f"shards/train-{s:06d}.tar"
        count = min(PER_SHARD, n - start)
        with tarfile.open(root / url, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(start, start + count):
                key = f"s{i:08d}"
                _member(tf, f"{key}.cls", str(i % 1000).encode())
                _member(tf, f"{key}.txt", f"caption of sample {i}".encode())
                keys.append(key)
                urls.append(url)
        shards.append(ShardInfo(url=url, split="train", nsamples=count,
                                filesize=(root / url).stat().st_size, sha256=""))
    (root / "index.json").write_bytes(
        DatasetIndex(name=f"tiny{n}", shards=tuple(shards)).to_json())
    m = pa.table({"key": pa.array(keys), "split": pa.array(["train"] * n),
                  "shard": pa.array(urls), "fields": pa.array(["cls,txt"] * n)})
    pq.write_table(m, root / "manifest.parquet")
    return root


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def loader_worker(root: str, workers: int, batch: int) -> dict:
    rss0 = _rss()
    from mmshard.pipelines.stream.loader import Loader

    rss_import = _rss()
    t = time.perf_counter()
    loader = Loader(root, batch_size=batch, seed=0, num_workers=workers)
    n_batches = len(loader)
    build_s = time.perf_counter() - t
    rss_built = _rss()
    t = time.perf_counter()
    samples = 0
    for b in loader:
        samples += len(b["__key__"])
    epoch_s = time.perf_counter() - t
    rss_epoch = _rss()
    for e in range(1, 9):  # plan 8 more epochs: memory must not grow with epochs either
        loader.set_epoch(e)
        len(loader)
    return {"samples_delivered": samples, "batches": n_batches, "build_s": round(build_s, 2),
            "epoch_s": round(epoch_s, 2), "samples_per_s": round(samples / epoch_s, 1),
            "rss_start_mb": round(rss0 / 2**20, 1),
            "rss_after_import_mb": round(rss_import / 2**20, 1),
            "rss_after_build_mb": round(rss_built / 2**20, 1),
            "rss_after_epoch_mb": round(rss_epoch / 2**20, 1),
            "rss_after_8_more_plans_mb": round(_rss() / 2**20, 1)}


def run_loader(sizes: list[int], workers: int, batch: int) -> dict:
    rows = []
    for n in sizes:
        t = time.perf_counter()
        root = make_tiny_dataset(WORK / f"tiny-{n}", n)
        prep = time.perf_counter() - t
        r = run_measured([sys.executable, __file__, "--worker", "loader", "--data", str(root),
                          "--workers", str(workers), "--batch", str(batch)], interval=0.1)
        line = [x for x in r["output"].splitlines() if x.startswith("RESULT ")]
        row: dict = {"samples": n, "prepare_s": round(prep, 1)}
        if r["rc"] != 0 or not line:
            row.update(status="error", error=r["output"][-800:])
        else:
            row.update(status="ok", **json.loads(line[-1][7:]))
        # the peaks over the whole process tree (main process + DataLoader workers)
        row.update(peak_rss_sum_mb=r["peak_rss_mb"], peak_pss_sum_mb=r["peak_pss_mb"],
                   max_procs=r["max_procs"])
        rows.append(row)
        print(f"  loader {n}: {row['status']} {row.get('peak_pss_sum_mb')} MB PSS, "
              f"{row.get('epoch_s')} s epoch", flush=True)
    ok = [r for r in rows if r["status"] == "ok"]
    if len(ok) > 1:
        base = ok[0]
        for r in ok[1:]:
            dn = r["samples"] - base["samples"]
            for col in ("rss_after_build_mb", "peak_rss_sum_mb", "peak_pss_sum_mb"):
                r[col.replace("_mb", "") + "_bytes_per_sample"] = round(
                    (r[col] - base[col]) * 2**20 / dn, 1)
    print()
    print_table(rows, ["samples", "status", "batches", "build_s", "epoch_s", "samples_per_s",
                       "rss_after_import_mb", "rss_after_build_mb", "rss_after_epoch_mb",
                       "rss_after_8_more_plans_mb", "peak_rss_sum_mb", "peak_pss_sum_mb",
                       "peak_pss_sum_bytes_per_sample"])
    return {"workers": workers, "batch_size": batch, "rows": rows}


# ---------------------------------------------------------------------- mine


def mine_worker(d: str, k: int, kind: str) -> dict:
    from mmshard.pipelines.mine.embeddings_io import EmbeddingSource
    from mmshard.pipelines.mine.faiss_index import IndexConfig
    from mmshard.pipelines.mine.job import MineConfig, mine

    out = os.path.join(d, kind, "neg.parquet")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cfg = MineConfig(queries=EmbeddingSource(path=os.path.join(d, "queries.npy")),
                     corpus=EmbeddingSource(path=os.path.join(d, "corpus.npy")), out=out, k=k,
                     index=IndexConfig(kind=kind, gpu="never"), plot=False,
                     index_reuse="never", memory_budget=24 << 30)
    t = time.perf_counter()
    res = mine(cfg, progress=False)
    return {"inner_wall_s": round(time.perf_counter() - t, 2), "mined": res.n_mined,
            "index": res.summary["index"]}


def run_mine(n: int, nq: int, dim: int, k: int, kinds: list[str]) -> dict:
    import mine as mine_bench  # bench/mine.py: the same generator as its synthetic set

    d = tempfile.mkdtemp(prefix="bench-scale-mine-")
    try:
        t = time.perf_counter()
        mine_bench.make_data(d, n, nq, dim, seed=0)
        prep = time.perf_counter() - t
        print(f"mine data: {n} x {dim}, {nq} queries ({prep:.1f} s to prepare)", flush=True)
        rows = []
        for kind in kinds:
            r = run_measured([sys.executable, __file__, "--worker", "mine", "--data", d,
                              "--kind", kind, "-k", str(k)], interval=0.2)
            line = [x for x in r["output"].splitlines() if x.startswith("RESULT ")]
            row: dict = {"kind": kind, "n": n, "dim": dim, "queries": nq, "k": k}
            if r["rc"] != 0 or not line:
                row.update(status="error", error=r["output"][-800:])
            else:
                row.update(status="ok", **json.loads(line[-1][7:]))
            row.update(wall_s=r["wall_s"], peak_rss_mb=r["peak_rss_mb"],
                       peak_pss_mb=r.get("peak_pss_mb"))
            row["within_24_gib"] = bool(row["status"] == "ok"
                                        and (row["peak_pss_mb"] or row["peak_rss_mb"])
                                        < 24 * 1024)
            rows.append(row)
            print(f"  mine {kind}: {row['status']} {row['wall_s']:.1f} s", flush=True)
        print()
        print_table(rows, ["kind", "n", "dim", "queries", "status", "wall_s", "inner_wall_s",
                           "peak_rss_mb", "peak_pss_mb", "within_24_gib"])
        return {"rows": rows, "prepare_s": round(prep, 1)}
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="loader 10k/50k/100k, mine 200,000 x 512")
    ap.add_argument("--only", choices=("loader", "mine"))
    ap.add_argument("--sizes", help="loader dataset sizes, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--mine-n", type=int, help="mining corpus rows (default 1,000,000)")
    ap.add_argument("--mine-queries", type=int, default=2000)
    ap.add_argument("--mine-dim", type=int, default=512)
    ap.add_argument("--mine-kinds", default="flat",
                    help="index kinds to mine with, comma-separated (flat, auto, ivf_flat ...)")
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="auto", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "loader":
        print("RESULT " + json.dumps(loader_worker(a.data, a.workers, a.batch)))
        return
    if a.worker == "mine":
        print("RESULT " + json.dumps(mine_worker(a.data, a.k, a.kind)))
        return
    res: dict = {"bench": "scale", "quick": a.quick, "machine": machine_info()}
    if a.only and os.path.exists(a.out):  # keep the other part's last figures
        old = json.loads(Path(a.out).read_text())
        other = "mine" if a.only == "loader" else "loader"
        if other in old:
            res[other] = {**old[other], "machine": old.get("machine")}
    if a.only in (None, "loader"):
        sizes = ([int(x) for x in a.sizes.split(",")] if a.sizes else
                 [10_000, 50_000, 100_000] if a.quick else [10_000, 100_000, 400_000])
        res["loader"] = run_loader(sizes, a.workers, a.batch)
    if a.only in (None, "mine"):
        n = a.mine_n or (200_000 if a.quick else 1_000_000)
        kinds = a.mine_kinds.split(",")
        res["mine"] = run_mine(n, a.mine_queries, a.mine_dim, a.k, kinds)
    print(f"\nsaved {save_json(a.out, res)}")


if __name__ == "__main__":
    main()
