"""Benchmark: mmshard.Loader vs webdataset.WebLoader on the same shards.

    python bench/loader.py            # 2,000 JPEGs, 2 workers, batch 64
    python bench/loader.py --quick    # 400 JPEGs

Generates small JPEGs (random sizes 80..160 px) into mmshard shards (TarWriter +
index.json), then for each configuration runs one epoch in a fresh subprocess:
``decode`` (JPEG -> shortest-side 64 + centre crop -> float32 (3, 64, 64) tensor, the
same PIL code for both) and ``raw`` (no image decoding: captions only for mmshard, raw
bytes for webdataset).  Reports samples/s over the epoch (loader construction included),
time to first batch
(from constructing the loader; torch and both libraries are imported before), and peak
RSS of the process tree (main + workers, sampled every 20 ms).  Results:
``bench/results/loader.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_shards(root: Path, n: int, per_shard: int) -> list[str]:
    from PIL import Image

    from mmshard.dataset import DatasetIndex, ShardInfo
    from mmshard.tario import TarWriter

    if (root / "index.json").exists():
        return sorted(str(p) for p in (root / "shards").glob("*.tar"))
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shards, i = [], 0
    for s in range(-(-n // per_shard)):
        url = f"shards/train-{s:06d}.tar"
        with TarWriter(str(root / url)) as w:
            count = 0
            while count < per_shard and i < n:
                wd, ht = (int(x) for x in rng.integers(80, 161, size=2))
                arr = rng.integers(0, 256, size=(ht // 8, wd // 8, 3), dtype=np.uint8)
                img = Image.fromarray(arr).resize((wd, ht))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                w.write({"__key__": f"img{i:06d}", "jpg": buf.getvalue(),
                         "txt": f"caption {i}", "json": json.dumps({"width": wd,
                                                                     "height": ht})})
                i += 1
                count += 1
        shards.append(ShardInfo(url=url, split="train", nsamples=count,
                                filesize=(root / url).stat().st_size, sha256=""))
    (root / "index.json").write_bytes(DatasetIndex(name="bench", shards=tuple(shards)).to_json())
    return sorted(str(root / s.url) for s in shards)


class RssSampler(threading.Thread):
    """Peak of (own RSS + RSS of all descendants), sampled from /proc."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = False

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def run(self) -> None:
        while not self.stop:
            todo, total = [os.getpid()], 0
            while todo:
                p = todo.pop()
                total += self._rss(p)
                todo += self._children(p)
            self.peak = max(self.peak, total)
            time.sleep(0.02)


def _transform():
    import torch

    from mmshard.pipelines.stream.decode import ShortestSideCrop

    crop = ShortestSideCrop(size=64)

    def f(img):
        img = crop(img.convert("RGB"), None)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1) \
            .float().div_(255.0)
    return f


def _identity(x):
    return x


def run_one(tool: str, mode: str, root: str, workers: int, batch: int) -> dict:
    import torch  # noqa: F401  - both tools need torch: import it outside the timings
    import webdataset  # noqa: F401

    import mmshard.pipelines.stream.loader  # noqa: F401

    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    first = None
    n = 0
    if tool == "mmshard":
        from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode, ShortestSideCrop
        from mmshard.pipelines.stream.loader import Loader

        decode = DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=64))) \
            if mode == "decode" else DecodeConfig()
        loader = Loader(root, batch_size=batch, seed=0, num_workers=workers, decode=decode,
                        shuffle_buffer=1000, pin_memory=False)
        for b in loader:
            first = first or time.perf_counter() - t0
            n += len(b["__key__"])
    else:
        import webdataset as wds

        urls = sorted(str(p) for p in Path(root, "shards").glob("*.tar"))
        ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False,
                            nodesplitter=None, workersplitter=wds.split_by_worker).shuffle(1000)
        if mode == "decode":
            ds = ds.decode("pil").to_tuple("__key__", "jpg", "txt") \
                .map_tuple(_identity, _transform(), _identity)
        else:
            ds = ds.to_tuple("__key__", "jpg", "txt")
        ds = ds.batched(batch, partial=True)
        loader = wds.WebLoader(ds, batch_size=None, num_workers=workers)
        for b in loader:
            first = first or time.perf_counter() - t0
            n += len(b[0])
    wall = time.perf_counter() - t0
    sampler.stop = True
    sampler.join()
    return {"tool": tool, "mode": mode, "workers": workers, "batch_size": batch,
            "samples": n, "wall_s": round(wall, 3), "samples_per_s": round(n / wall, 1),
            "time_to_first_batch_s": round(first or wall, 3),
            "peak_rss_mb": round(sampler.peak / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 images instead of 2,000")
    ap.add_argument("--n", type=int, default=None, help="number of images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data", default="/tmp/mmshard-bench-loader", help="shard folder")
    ap.add_argument("--run-one", nargs=2, metavar=("TOOL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = args.n or (400 if args.quick else 2000)
    root = Path(args.data) / f"n{n}"
    if args.run_one:
        print(json.dumps(run_one(*args.run_one, str(root), args.workers, args.batch_size)))
        return
    make_shards(root, n, per_shard=max(1, n // 8))
    rows = []
    for mode in ("decode", "raw"):
        for tool in ("mmshard", "webdataset"):
            cmd = [sys.executable, __file__, "--run-one", tool, mode, "--n", str(n),
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                   "--data", args.data]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    head = f"{'tool':<11} {'mode':<7} {'samples':>7} {'samples/s':>10} {'first batch s':>13} " \
           f"{'peak RSS MB':>11}"
    print(f"{n} JPEGs, {args.workers} workers, batch {args.batch_size}")
    print(head)
    for r in rows:
        print(f"{r['tool']:<11} {r['mode']:<7} {r['samples']:>7} {r['samples_per_s']:>10} "
              f"{r['time_to_first_batch_s']:>13} {r['peak_rss_mb']:>11}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "loader.json").write_text(json.dumps(
        {"n_images": n, "workers": args.workers, "batch_size": args.batch_size,
         "cpu_count": os.cpu_count(), "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
