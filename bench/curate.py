"""Benchmark: mmshard dedup and audit at scale, against brute force in the same run.

Semantic dedup (SemDeDup: FAISS k-means, then cosine >= 1 - eps inside each cluster) on
``--vectors`` clustered random vectors of dimension ``--dim`` streamed chunk by chunk
(generated from a seed, so nothing holds the corpus), 1% of them planted near copies
(cosine ~0.9999).  Baseline: brute-force pairwise cosine over a ``--subset`` (blocked
matmul, the whole subset in memory), extrapolated to the full size as O(n^2), and the
recall of SemDeDup against it on that subset.

Perceptual hashing on ``--images`` small JPEGs (64x48 textured, 2% planted resized /
re-encoded / cropped copies, split train/val) written as mmshard shards: ``dedup
--method phash`` and ``audit`` with the local executor (2 threads), and the candidate
search alone: multi-index hashing (``near_pairs``) vs all-pairs Hamming on the same
hashes, plus MIH on ``--hashes`` random 64-bit hashes.

Every part runs in its own subprocess (wall time, peak RSS of its process tree).

    python bench/curate.py                 # 200,000 x 512 vectors, 20,000 images
    python bench/curate.py --vectors 1000000 --only semdedup   # the 1M run, when time allows
    python bench/curate.py --quick         # 50,000 x 512, 5,000 images

Results: a table on stdout and bench/results/curate.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

HERE = Path(__file__).resolve().parent
CHUNK = 10_000


# ------------------------------------------------------------------- vector data
def vector_chunks(n: int, dim: int, seed: int):
    """Re-iterable clustered vectors; the last 1% of each chunk copies earlier rows."""
    centers = np.random.default_rng(seed).standard_normal((max(8, n // 1000), dim),
                                                          dtype=np.float32)

    def chunks():
        for c, start in enumerate(range(0, n, CHUNK)):
            m = min(CHUNK, n - start)
            rng = np.random.default_rng([seed, c])
            x = centers[rng.integers(0, len(centers), m)]
            x += 0.6 * rng.standard_normal((m, dim), dtype=np.float32)
            k = m // 100
            src = _copy_sources(seed, c, m)
            x[m - k:] = x[src] + 0.01 * rng.standard_normal((k, dim), dtype=np.float32)
            yield [f"v{start + i:08d}" for i in range(m)], x

    return chunks


def _copy_sources(seed: int, chunk: int, m: int) -> np.ndarray:
    k = m // 100
    return np.random.default_rng([seed, chunk, 1]).integers(0, m - k, k)


def planted_pairs(n: int, seed: int) -> set[tuple[int, int]]:
    out = set()
    for c, start in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - start)
        src = _copy_sources(seed, c, m)
        out |= {(start + m - len(src) + i, start + int(s)) for i, s in enumerate(src)}
    return out


def write_vectors(path: str, n: int, dim: int, seed: int) -> None:
    with open(path, "wb") as f:
        for _, x in vector_chunks(n, dim, seed)():
            f.write(np.ascontiguousarray(x, np.float32).tobytes())


def file_source(path: str, n: int, dim: int):
    """Stream the raw float32 file chunk by chunk (plain reads: no memory map, so the
    process's RSS shows only what the job holds)."""
    from mmshard.pipelines.curate.semantic import VectorSource

    def chunks():
        with open(path, "rb") as f:
            for start in range(0, n, CHUNK):
                m = min(CHUNK, n - start)
                x = np.fromfile(f, dtype=np.float32, count=m * dim).reshape(m, dim)
                yield [f"v{start + i:08d}" for i in range(m)], x

    return VectorSource(total=n, chunks=chunks, where=path)


def _semdedup(n: int, dim: int, seed: int, eps: float, path: str):
    from mmshard.pipelines.curate.semantic import semantic_duplicates

    src = file_source(path, n, dim)
    return semantic_duplicates(src, eps=eps, clusters=max(1, n // 1000), seed=0,
                               max_train=min(n, 100_000),
                               keep_order=lambda ks: np.argsort(ks, kind="stable"))


def worker_semdedup(a) -> dict:
    t = time.perf_counter()
    g = _semdedup(a.vectors, a.dim, a.seed, a.eps, os.path.join(a.data, '..', 'vectors.f32'))
    wall = time.perf_counter() - t
    found = {(int(d), int(k)) for d, k in zip(g.dup, g.kept)}
    planted = planted_pairs(a.vectors, a.seed)
    return {"vectors": a.vectors, "dim": a.dim, "job_s": round(wall, 2),
            "duplicates": len(found), "planted": len(planted),
            "planted_found": len(found & planted) / max(1, len(planted)),
            "clusters": g.clusters, "largest_cluster": g.largest_cluster}


def worker_brute_cosine(a) -> dict:
    n = a.subset
    path = os.path.join(a.data, "..", "vectors.f32")
    x = np.fromfile(path, dtype=np.float32, count=n * a.dim).reshape(n, a.dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = time.perf_counter()
    pairs = set()
    for s in range(0, n, 4096):
        m = x[s:s + 4096] @ x.T
        i, j = np.nonzero(m >= 1 - a.eps)
        pairs |= {(int(p + s), int(q)) for p, q in zip(i, j) if q < p + s}
    wall = time.perf_counter() - t
    g = _semdedup(n, a.dim, a.seed, a.eps, path)  # SemDeDup on the subset, for recall
    sem = {(int(d), int(k)) for d, k in zip(g.dup, g.kept)}
    return {"vectors": n, "dim": a.dim, "job_s": round(wall, 2), "duplicates": len(pairs),
            "extrapolated_s_full": round(wall * (a.vectors / n) ** 2, 1),
            "in_memory_mb_full": round(a.vectors * a.dim * 4 / 2**20, 1),
            "semdedup_recall_on_subset": round(len(sem & pairs) / max(1, len(pairs)), 4)}


# ------------------------------------------------------------------- image data
def textured(seed: int, w: int = 64, h: int = 48):
    """A small photo-like PIL image with enough low-frequency structure that distinct
    seeds give distinct pHashes (an 8x6 colour field plus a few discs)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(3, 14))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r],
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def make_image_dataset(root: str, n: int, seed: int) -> dict[str, str]:
    """Shards of n images (train/val halves); 2% are copies of train images in val."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmshard.dataset import DatasetIndex, ShardInfo
    from mmshard.tario import TarWriter

    rng = np.random.default_rng(seed)
    n_copies = n // 50
    base = n - n_copies
    os.makedirs(os.path.join(root, "shards"))
    planted: dict[str, str] = {}
    rows = {c: [] for c in ("key", "split", "shard", "group", "width", "height", "size")}
    shards = []

    def encode(im, fmt="JPEG", q=90) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **({"quality": q} if fmt == "JPEG" else {}))
        return buf.getvalue()

    def items():
        for i in range(base):
            yield f"img{i:07d}", ("train" if i < base // 2 else "val"), encode(
                textured(seed * 10_000_000 + i)), 64, 48
        for c in range(n_copies):
            o = int(rng.integers(0, base // 2))
            im = textured(seed * 10_000_000 + o)
            kind = c % 3
            im = [im.resize((48, 36)), im, im.crop((2, 2, 62, 46))][kind]
            key = f"cp{c:07d}"
            planted[key] = f"img{o:07d}"
            yield key, "val", encode(im, q=[90, 35, 90][kind]), im.size[0], im.size[1]

    cur, w, count, part, url = None, None, 0, {}, ""

    for key, split, data, wd, ht in items():
        if cur != split or count >= 1000:
            if w is not None:
                w.close()
                shards.append(ShardInfo(url=url, split=cur, nsamples=count, filesize=0,
                                        sha256=""))
            part[split] = part.get(split, -1) + 1
            url = f"shards/{split}-{part[split]:06d}.tar"
            w, cur, count = TarWriter(os.path.join(root, url)), split, 0
        w.write({"__key__": key, "jpg": data, "json": json.dumps({"width": wd, "height": ht})})
        count += 1
        for c, v in zip(rows, (key, split, url.split("/")[1][:-4], key, wd, ht, len(data))):
            rows[c].append(v)
    w.close()
    shards.append(ShardInfo(url=url, split=cur, nsamples=count, filesize=0, sha256=""))
    Path(root, "index.json").write_bytes(DatasetIndex(name="bench", shards=tuple(shards))
                                         .to_json())
    pq.write_table(pa.table(rows), os.path.join(root, "manifest.parquet"))
    Path(root, "planted.json").write_text(json.dumps(planted))
    return planted


def worker_phash_dedup(a) -> dict:
    from mmshard.pipelines.curate import DedupConfig, dedup
    from mmshard.pipelines.executor import LocalExecutor

    t = time.perf_counter()
    r = dedup(a.data, DedupConfig(method="phash"), executor=LocalExecutor(2))
    wall = time.perf_counter() - t
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(a.data, "dedup", "dedup.parquet")).to_pylist()
    planted = json.loads(Path(a.data, "planted.json").read_text())
    cluster = {x["key"]: x["cluster"] for x in rows}
    hit = sum(c in cluster and cluster[c] == cluster.get(o) for c, o in planted.items())
    return {"images": r.stats["samples"], "job_s": round(wall, 2),
            "duplicates": r.stats["duplicates"], "planted": len(planted),
            "planted_found": round(hit / max(1, len(planted)), 4)}


def worker_phash_audit(a) -> dict:
    from mmshard.pipelines.curate.audit import AuditConfig, audit
    from mmshard.pipelines.executor import LocalExecutor

    t = time.perf_counter()
    r = audit(a.data, AuditConfig(methods=("exact", "phash")), executor=LocalExecutor(2))
    wall = time.perf_counter() - t
    planted = json.loads(Path(a.data, "planted.json").read_text())
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(r.out, "audit.parquet")).to_pylist()
    pairs = {(x["key_a"], x["key_b"]) for x in rows}
    hit = sum((o, c) in pairs for c, o in planted.items())
    return {"images": r.stats["samples"], "job_s": round(wall, 2), "leaks": r.leaks,
            "planted": len(planted), "planted_found": round(hit / max(1, len(planted)), 4)}


def worker_hash_search(a) -> dict:
    from mmshard.dataset import Dataset
    from mmshard.pipelines.curate.dedup import hash_dataset
    from mmshard.pipelines.executor import LocalExecutor
    from mmshard.tokenizers.phash import hamming, near_pairs

    parts = hash_dataset(Dataset(a.data), "phash", LocalExecutor(2), keyframes=None)
    h = np.concatenate([p.hashes for p in parts])
    t = time.perf_counter()
    i, _, _ = near_pairs(h, 10)
    mih = time.perf_counter() - t
    t = time.perf_counter()
    brute, cols = 0, np.arange(len(h))
    for s in range(0, len(h), 2048):
        d = hamming(h[s:s + 2048, None], h[None, :])
        upper = cols[None, :] > np.arange(s, s + len(d))[:, None]
        brute += int(((d <= 10) & upper).sum())
    bf = time.perf_counter() - t
    rh = np.random.default_rng(0).integers(0, 2**63, a.hashes, dtype=np.uint64)
    t = time.perf_counter()
    near_pairs(rh, 8)  # uniform random hashes: the worst case for bucketing
    big = time.perf_counter() - t
    return {"hashes": len(h), "mih_s": round(mih, 3), "brute_s": round(bf, 3),
            "pairs_mih": len(i), "pairs_brute": brute, "random_hashes": a.hashes,
            "mih_random_s": round(big, 2),
            "random_threshold": 8,
            "brute_random_extrapolated_s": round(bf * (a.hashes / len(h)) ** 2, 0)}


WORKERS = {"semdedup": worker_semdedup, "brute_cosine": worker_brute_cosine,
           "phash_dedup": worker_phash_dedup, "phash_audit": worker_phash_audit,
           "hash_search": worker_hash_search}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vectors", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--subset", type=int, default=20_000)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--hashes", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=",".join(WORKERS))
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--data")
    a = p.parse_args()
    if a.quick:
        a.vectors, a.images, a.hashes, a.subset = 50_000, 5_000, 50_000, 10_000
    if a.worker:
        print("RESULT " + json.dumps(WORKERS[a.worker](a)))
        return
    only = a.only.split(",")
    d = tempfile.mkdtemp(prefix="mmshard-bench-curate-")
    results = []
    try:
        t = time.perf_counter()
        if any(w in only for w in ("phash_dedup", "phash_audit", "hash_search")):
            make_image_dataset(os.path.join(d, "ds"), a.images, a.seed)
        else:
            os.makedirs(os.path.join(d, "ds"))
        if any(w in only for w in ("semdedup", "brute_cosine")):
            write_vectors(os.path.join(d, "vectors.f32"), a.vectors, a.dim, a.seed)
        print(f"data written in {time.perf_counter() - t:.1f} s", flush=True)
        common = ["--vectors", str(a.vectors), "--dim", str(a.dim), "--subset", str(a.subset),
                  "--eps", str(a.eps), "--images", str(a.images), "--hashes", str(a.hashes),
                  "--seed", str(a.seed), "--data", os.path.join(d, "ds")]
        for w in [w for w in WORKERS if w in only]:
            r = run_measured([sys.executable, __file__, "--worker", w, *common], interval=0.1)
            line = [x for x in r["output"].splitlines() if x.startswith("RESULT ")]
            if r["rc"] != 0 or not line:
                print(f"{w} failed:\n{r['output'][-2000:]}")
                continue
            res = {"part": w, **json.loads(line[-1][7:]), "wall_s": r["wall_s"],
                   "peak_rss_mb": r["peak_rss_mb"], "peak_pss_mb": r["peak_pss_mb"]}
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print()
    print_table(results, ["part", "vectors", "images", "hashes", "job_s", "wall_s",
                          "peak_rss_mb", "duplicates", "planted_found"])
    out = HERE / "results" / "curate.json"  # runs with --only merge into one record
    old = json.loads(out.read_text()) if out.exists() else {"runs": []}
    def ident(r: dict) -> tuple:
        return r["part"], r.get("vectors"), r.get("images")

    runs = [r for r in old.get("runs", []) if ident(r) not in {ident(x) for x in results}]
    save_json(out, {"runs": runs + [{**r, "machine": machine_info(), "args": vars(a)}
                                    for r in results]})


if __name__ == "__main__":
    main()
