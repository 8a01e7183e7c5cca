"""Benchmark: hard-negative mining, mmshard vs brute force (and sentence-transformers).

One run, the same clustered random embeddings for every method (queries are noisy
copies of corpus items; a query's positive is the corpus item with its key):

- ``mmshard_exact``: ``mmshard.pipelines.mine.job.mine`` with an exact (flat) index, top-k;
- ``torch_bruteforce``: plain torch matmul + topk in blocks, positive dropped;
- ``st_mine_hard_negatives``: sentence-transformers' ``mine_hard_negatives`` fed the same
  vectors through a lookup "model" (printed "not installed" when it is missing:
  ``pip install sentence-transformers datasets`` then rerun this script);
- ``mmshard_ivf_flat`` / ``mmshard_ivf_pq`` / ``mmshard_hnsw``: index build + search at the
  default settings: recall@k of the top-k neighbours vs exact, and queries/s.

Every method runs in its own subprocess (wall time, peak RSS of that process tree).
Negative-set overlap is |A & B| / k per query, averaged, against ``torch_bruteforce``.

    python bench/mine.py            # both sets below, k=16
    python bench/mine.py --quick    # 20,000 x 384 synthetic, 2,000 queries; real 20,000 x 784
    python bench/mine.py --set real

Sets (``--set``): ``synthetic`` (100,000 x 384 clustered random vectors, 10,000 queries)
and ``real``: the 60,000 x 784 pixel vectors of Fashion-MNIST's training images (Debian
package ``dataset-fashion-mnist``, downloaded once with ``apt-get download`` into
bench/data/fmnist; pixels / 255, L2-normalised), 6,000 queries = seeded corpus items
(their positive is themselves).  Real vectors have near-duplicates and ties, so the
overlap columns say how identical the sets are.

Results: a table on stdout and bench/results/mine.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

HERE = Path(__file__).resolve().parent


def make_data(d: str, n: int, nq: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((max(8, n // 100), dim)).astype(np.float32)
    x = cent[rng.integers(0, len(cent), n)]
    x += 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = np.sort(rng.choice(n, nq, replace=False))
    q = x[src] + 0.05 * rng.standard_normal((nq, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(os.path.join(d, "corpus.npy"), x)
    np.save(os.path.join(d, "queries.npy"), q)
    np.save(os.path.join(d, "positive.npy"), src)
    keys = [f"c{i:07d}" for i in range(n)]
    Path(d, "corpus.keys.txt").write_text("\n".join(keys) + "\n")
    Path(d, "queries.keys.txt").write_text("\n".join(keys[i] for i in src) + "\n")


FMNIST = HERE / "data" / "fmnist"


def fashion_mnist() -> np.ndarray:
    """(60000, 784) uint8: Fashion-MNIST's training images (Debian's package, fetched once)."""
    import gzip
    import subprocess

    idx = FMNIST / "x/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    if not idx.exists():
        FMNIST.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=FMNIST,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deb = next(FMNIST.glob("dataset-fashion-mnist_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(FMNIST / "x")], check=True)
    raw = gzip.decompress(idx.read_bytes())
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows * cols)


def make_real_data(d: str, n: int, nq: int, seed: int) -> int:
    x = fashion_mnist()[:n].astype(np.float32) / 255.0
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    src = np.sort(rng.choice(len(x), nq, replace=False))
    np.save(os.path.join(d, "corpus.npy"), x)
    np.save(os.path.join(d, "queries.npy"), x[src])
    np.save(os.path.join(d, "positive.npy"), src)
    keys = [f"c{i:07d}" for i in range(len(x))]
    Path(d, "corpus.keys.txt").write_text("\n".join(keys) + "\n")
    Path(d, "queries.keys.txt").write_text("\n".join(keys[i] for i in src) + "\n")
    return x.shape[1]


# ------------------------------------------------------------------- workers


def w_mmshard_exact(d: str, k: int) -> dict:
    import pyarrow.parquet as pq

    from mmshard.pipelines.mine.embeddings_io import EmbeddingSource
    from mmshard.pipelines.mine.faiss_index import IndexConfig
    from mmshard.pipelines.mine.job import MineConfig, mine

    out = os.path.join(d, "mm", "neg.parquet")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # a one-shot run, like the peer's: no index file written (index_reuse="never")
    cfg = MineConfig(queries=EmbeddingSource(path=os.path.join(d, "queries.npy")),
                     corpus=EmbeddingSource(path=os.path.join(d, "corpus.npy")), out=out, k=k,
                     index=IndexConfig(kind="flat", gpu="never"), plot=False,
                     index_reuse="never")
    t = time.perf_counter()
    mine(cfg, progress=False)
    wall = time.perf_counter() - t
    # ParquetFile.read, not read_table: the latter imports pandas (bench bookkeeping)
    col = pq.ParquetFile(out).read(columns=["negative_keys"]).column("negative_keys")
    keys = col.combine_chunks().to_pylist()
    ids = np.array([[int(x[1:]) for x in row] + [-1] * (k - len(row)) for row in keys])
    np.save(os.path.join(d, "mmshard_exact.npy"), ids)
    return {"inner_wall_s": round(wall, 3)}


def w_torch_bruteforce(d: str, k: int) -> dict:
    import torch

    x = torch.from_numpy(np.load(os.path.join(d, "corpus.npy")))
    q = torch.from_numpy(np.load(os.path.join(d, "queries.npy")))
    pos = torch.from_numpy(np.load(os.path.join(d, "positive.npy")))
    t = time.perf_counter()
    negs, raw = [], []
    for s in range(0, len(q), 1024):
        sc = q[s:s + 1024] @ x.T
        top = sc.topk(k + 1, dim=1).indices
        raw.append(top[:, :k])
        keep = top != pos[s:s + 1024, None]
        negs.append(torch.stack([r[m][:k] for r, m in zip(top, keep, strict=True)]))
    wall = time.perf_counter() - t
    np.save(os.path.join(d, "torch_bruteforce.npy"), torch.cat(negs).numpy())
    np.save(os.path.join(d, "exact_raw.npy"), torch.cat(raw).numpy())
    return {"inner_wall_s": round(wall, 3)}


def w_st(d: str, k: int) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    x = np.load(os.path.join(d, "corpus.npy"))
    q = np.load(os.path.join(d, "queries.npy"))
    pos = np.load(os.path.join(d, "positive.npy"))
    table = {f"q{i}": v for i, v in enumerate(q)} | {f"c{i}": v for i, v in enumerate(x)}

    class Lookup(torch.nn.Module):  # duck-typed "model": text -> the stored vector
        similarity_fn_name = "cosine"
        device = torch.device("cpu")

        def encode(self, texts, **kw):
            v = np.stack([table[t] for t in texts])
            return torch.from_numpy(v) if kw.get("convert_to_tensor") else v

        def similarity(self, a, b):
            return torch.as_tensor(a) @ torch.as_tensor(b).T

        encode_query = encode_document = encode  # sentence-transformers >= 5 calls these

        def get_embedding_dimension(self):
            return x.shape[1]

        get_sentence_embedding_dimension = get_embedding_dimension

        def similarity_pairwise(self, a, b):
            return (torch.as_tensor(a) * torch.as_tensor(b)).sum(-1)

    ds = Dataset.from_dict({"anchor": [f"q{i}" for i in range(len(q))],
                            "positive": [f"c{i}" for i in pos]})
    t = time.perf_counter()
    out = mine_hard_negatives(ds, Lookup(), corpus=[f"c{i}" for i in range(len(x))],
                              num_negatives=k, sampling_strategy="top", use_faiss=True,
                              output_format="n-tuple", batch_size=1024, verbose=False)
    wall = time.perf_counter() - t
    ids = np.array([[int(row[f"negative_{j + 1}"][1:]) for j in range(k)] for row in out])
    np.save(os.path.join(d, "st_mine_hard_negatives.npy"), ids)
    return {"inner_wall_s": round(wall, 3)}


def w_approx(d: str, k: int, kind: str) -> dict:
    from mmshard.pipelines.mine.faiss_index import IndexConfig, build_index, search

    x = np.load(os.path.join(d, "corpus.npy"), mmap_mode="r")
    q = np.load(os.path.join(d, "queries.npy"))
    t = time.perf_counter()
    built = build_index(x, metric="ip", config=IndexConfig(kind=kind, gpu="never"))
    tb = time.perf_counter() - t
    t = time.perf_counter()
    _, ids = search(built, q, k, metric="ip", refine_vectors=x)
    ts = time.perf_counter() - t
    np.save(os.path.join(d, f"mmshard_{kind}.npy"), ids)
    return {"build_s": round(tb, 3), "search_s": round(ts, 3),
            "qps": round(len(q) / ts, 1), "params": built.params}


def worker(method: str, d: str, k: int) -> None:
    if method == "mmshard_exact":
        r = w_mmshard_exact(d, k)
    elif method == "torch_bruteforce":
        r = w_torch_bruteforce(d, k)
    elif method == "st_mine_hard_negatives":
        r = w_st(d, k)
    else:
        r = w_approx(d, k, method.removeprefix("mmshard_"))
    print("RESULT " + json.dumps(r))


# ---------------------------------------------------------------------- main


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(x[x >= 0]) & set(y[y >= 0])) / k
                          for x, y in zip(a, b, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="20,000-vector corpora, 2,000 queries")
    ap.add_argument("--set", choices=("real", "synthetic", "both"), default="both")
    ap.add_argument("--n", type=int, help="synthetic corpus size (default 100,000)")
    ap.add_argument("--queries", type=int, help="synthetic queries (default 10,000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-approx", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "mine.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.data, a.k)
        return
    sets = {}
    for name in (("real", "synthetic") if a.set == "both" else (a.set,)):
        sets[name] = run_set(name, a)
    first = sets[next(iter(sets))]
    res = {"bench": "mine", "k": a.k, "quick": a.quick, "machine": machine_info(),
           "sets": sets, **first}  # the first set also at the top level (older readers)
    print(f"\nsaved {save_json(a.out, res)}")


def run_set(name: str, a: argparse.Namespace) -> dict:
    d = tempfile.mkdtemp(prefix="bench-mine-")
    try:
        t = time.perf_counter()
        if name == "real":
            n, nq = (20_000, 2_000) if a.quick else (60_000, 6_000)
            dim = make_real_data(d, n, nq, a.seed)
        else:
            n = a.n or (20_000 if a.quick else 100_000)
            nq = a.queries or (2_000 if a.quick else 10_000)
            dim = a.dim
            make_data(d, n, nq, dim, a.seed)
        print(f"{name} data: corpus {n} x {dim}, {nq} queries, k={a.k} "
              f"({time.perf_counter() - t:.1f} s to prepare)", flush=True)
        methods = ["torch_bruteforce", "mmshard_exact", "st_mine_hard_negatives"]
        if not a.skip_approx:
            methods += ["mmshard_ivf_flat", "mmshard_ivf_pq", "mmshard_hnsw"]
        has_st = (importlib.util.find_spec("sentence_transformers") is not None
                  and importlib.util.find_spec("datasets") is not None)
        rows = []
        for m in methods:
            row: dict = {"method": m}
            if m == "st_mine_hard_negatives" and not has_st:
                row["status"] = "not installed"
                rows.append(row)
                continue
            r = run_measured([sys.executable, __file__, "--worker", m, "--data", d,
                              "-k", str(a.k)], interval=0.1)
            line = [x for x in r["output"].splitlines() if x.startswith("RESULT ")]
            if r["rc"] != 0 or not line:
                row["status"] = "error"
                row["error"] = r["output"][-600:]
            else:
                row.update(json.loads(line[-1][7:]))
                row["status"] = "ok"
            row["wall_s"], row["peak_rss_mb"] = r["wall_s"], r["peak_rss_mb"]
            rows.append(row)
            print(f"  {name} {m}: {row['status']} {row['wall_s']:.1f} s", flush=True)
        base = os.path.join(d, "torch_bruteforce.npy")
        raw = os.path.join(d, "exact_raw.npy")
        for row in rows:
            p = os.path.join(d, row["method"] + ".npy")
            if row.get("status") != "ok" or not os.path.exists(p) or not os.path.exists(base):
                continue
            ids = np.load(p)
            if row["method"].startswith("mmshard_") and row["method"] != "mmshard_exact":
                row["recall_at_k"] = round(overlap(ids, np.load(raw), a.k), 4)
            else:
                row["neg_overlap_vs_bruteforce"] = round(overlap(ids, np.load(base), a.k), 4)
        by = {r["method"]: r for r in rows if r.get("status") == "ok"}
        summary = {}
        if "mmshard_exact" in by and "st_mine_hard_negatives" in by:
            summary["ratio_st_wall_over_mmshard_exact"] = round(
                by["st_mine_hard_negatives"]["wall_s"] / by["mmshard_exact"]["wall_s"], 2)
            summary["goal_ratio"] = 3.0
            st_ids = np.load(os.path.join(d, "st_mine_hard_negatives.npy"))
            mm_ids = np.load(os.path.join(d, "mmshard_exact.npy"))
            summary["neg_overlap_mmshard_vs_st"] = round(overlap(mm_ids, st_ids, a.k), 4)
        print()
        print_table(rows, ["method", "status", "wall_s", "inner_wall_s", "peak_rss_mb",
                           "neg_overlap_vs_bruteforce", "build_s", "qps", "recall_at_k"])
        for k, v in summary.items():
            print(f"{name} {k}: {v}")
        return {"n": n, "queries": nq, "dim": dim, "rows": rows, "summary": summary,
                "sentence_transformers": "installed" if has_st else "not installed"}
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
