"""Benchmark: mmshard.Loader vs webdataset.WebLoader on the same shards.

    python bench/loader.py            # real photos (3,000) + synthetic (2,000), 2 workers, batch 64
    python bench/loader.py --quick    # 300 real photos + 400 synthetic
    python bench/loader.py --set real # one set only

Two sets, each written into mmshard shards (TarWriter + index.json) that both tools read:

- ``real``: 3,000 JPEGs of 0.3-3 MP cut from camera photos shipped in Debian packages
  (bench/realphotos.py), decoded to a float32 (3, 224, 224) tensor: shortest side 224 +
  centre crop.  webdataset: ``.decode("pil")`` + the PIL resize (the reference);
  mmshard: ``ImageDecode(resize=ShortestSideCrop(224))`` (its default decoder:
  libjpeg-turbo with DCT scaling + torch's antialiased resize, mmshard.media.jpeg).
  The run also checks the tensors: PSNR of mmshard's against the PIL reference on
  every photo of the set (``psnr_min_db`` / ``psnr_mean_db``; the stated tolerance is
  >= 40 dB) and reports ``decoder="pil"`` (mmshard through PIL) as a third row.
- ``synthetic``: small JPEGs (random sizes 80..160 px) -> shortest side 64 + crop.

For each configuration one epoch runs in a fresh subprocess: ``decode`` and ``raw`` (no
image decoding: captions only for mmshard, raw bytes for webdataset).  Reports samples/s
over the epoch (loader construction included), time to first batch (from constructing
the loader; torch and both libraries are imported before), and peak RSS of the process
tree (main + workers, sampled every 20 ms).  Results: ``bench/results/loader.json``.
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
sys.path.insert(0, str(HERE))


def make_real_shards(root: Path, files: list[Path], per_shard: int) -> None:
    """The real photos as-is (original JPEG bytes) in mmshard shards."""
    from PIL import Image

    from mmshard.dataset import DatasetIndex, ShardInfo
    from mmshard.tario import TarWriter

    if (root / "index.json").exists():
        return
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(-(-len(files) // per_shard)):
        url = f"shards/train-{s:06d}.tar"
        part = files[s * per_shard:(s + 1) * per_shard]
        with TarWriter(str(root / url)) as w:
            for f in part:
                with Image.open(f) as im:
                    wd, ht = im.size
                w.write({"__key__": f.stem, "jpg": f.read_bytes(), "txt": f"photo {f.stem}",
                         "json": json.dumps({"width": wd, "height": ht})})
        shards.append(ShardInfo(url=url, split="train", nsamples=len(part),
                                filesize=(root / url).stat().st_size, sha256=""))
    (root / "index.json").write_bytes(DatasetIndex(name="real", shards=tuple(shards)).to_json())


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


def _transform(size: int):
    """The reference: PIL image -> shortest side ``size`` + centre crop -> float (3, s, s)."""
    import torch

    from mmshard.pipelines.stream.decode import ShortestSideCrop

    crop = ShortestSideCrop(size=size)

    def f(img):
        img = crop(img.convert("RGB"), None)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1) \
            .float().div_(255.0)
    return f


def _identity(x):
    return x


def run_one(tool: str, mode: str, root: str, workers: int, batch: int, size: int) -> dict:
    import torch  # noqa: F401  - both tools need torch: import it outside the timings
    import webdataset  # noqa: F401

    import mmshard.pipelines.stream.loader  # noqa: F401

    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    first = None
    n = 0
    if tool.startswith("mmshard"):
        from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode, ShortestSideCrop
        from mmshard.pipelines.stream.loader import Loader

        decoder = "pil" if tool == "mmshard-pil" else "auto"
        decode = DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=size),
                                                decoder=decoder)) \
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
                .map_tuple(_identity, _transform(size), _identity)
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


def psnr_check(files: list[Path], size: int) -> dict:
    """PSNR of the tensors mmshard's decode delivers against the PIL reference's."""
    from mmshard.pipelines.stream.decode import (
        DecodeConfig,
        ImageDecode,
        ShortestSideCrop,
        decode_sample,
    )

    ref = _transform(size)
    cfg = DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=size)))
    from PIL import Image

    vals = []
    for f in files:
        data = f.read_bytes()
        ours = decode_sample({"__key__": f.stem, "jpg": data}, cfg)["image"].numpy()
        with Image.open(f) as im:
            theirs = ref(im).numpy()
        mse = float(np.mean((ours.astype(np.float64) - theirs) ** 2))
        vals.append(99.0 if mse == 0 else 10 * np.log10(1.0 / mse))
    v = np.asarray(vals)
    return {"images": len(v), "psnr_min_db": round(float(v.min()), 2),
            "psnr_p1_db": round(float(np.percentile(v, 1)), 2),
            "psnr_mean_db": round(float(v.mean()), 2)}


def _run_set(name: str, root: Path, args: argparse.Namespace, size: int,
             tools: tuple[str, ...]) -> list[dict]:
    rows = []
    for mode in ("decode", "raw"):
        for tool in tools if mode == "decode" else ("mmshard", "webdataset"):
            cmd = [sys.executable, __file__, "--run-one", tool, mode, str(root),
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                   "--size", str(size)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"set": name, **row})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 real + 400 synthetic images")
    ap.add_argument("--set", choices=("real", "synthetic", "both"), default="both")
    ap.add_argument("--n", type=int, default=None, help="number of synthetic images")
    ap.add_argument("--n-real", type=int, default=None, help="number of real photos")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--data", default="/tmp/mmshard-bench-loader", help="shard folder")
    ap.add_argument("--run-one", nargs=3, metavar=("TOOL", "MODE", "ROOT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        tool, mode, root = args.run_one
        print(json.dumps(run_one(tool, mode, root, args.workers, args.batch_size, args.size)))
        return
    rows, checks, sets = [], {}, {}
    if args.set in ("real", "both"):
        import realphotos

        n_real = args.n_real or (300 if args.quick else 3000)
        _, files, _ = realphotos.ensure(n_real)
        root = Path(args.data) / f"real{n_real}"
        make_real_shards(root, files, per_shard=max(1, n_real // 8))
        sets["real"] = {"images": n_real, **realphotos.describe(files), "size": 224}
        checks["real"] = psnr_check(files[:min(len(files), 300 if args.quick else 1000)], 224)
        rows += _run_set("real", root, args, 224, ("mmshard", "mmshard-pil", "webdataset"))
    if args.set in ("synthetic", "both"):
        n = args.n or (400 if args.quick else 2000)
        root = Path(args.data) / f"n{n}"
        make_shards(root, n, per_shard=max(1, n // 8))
        sets["synthetic"] = {"images": n, "size": 64}
        rows += _run_set("synthetic", root, args, 64, ("mmshard", "webdataset"))
    ratios = {}
    for name in sets:
        by = {(r["tool"], r["mode"]): r["samples_per_s"] for r in rows if r["set"] == name}
        for mode in ("decode", "raw"):
            ratios[f"{name}_{mode}_ratio_mmshard_over_webdataset"] = round(
                by[("mmshard", mode)] / by[("webdataset", mode)], 2)
    print(f"{args.workers} workers, batch {args.batch_size}; sets: {json.dumps(sets)}")
    print(f"{'set':<10} {'tool':<12} {'mode':<7} {'samples':>7} {'samples/s':>10} "
          f"{'first batch s':>13} {'peak RSS MB':>11}")
    for r in rows:
        print(f"{r['set']:<10} {r['tool']:<12} {r['mode']:<7} {r['samples']:>7} "
              f"{r['samples_per_s']:>10} {r['time_to_first_batch_s']:>13} "
              f"{r['peak_rss_mb']:>11}")
    for k, v in ratios.items():
        print(f"{k}: {v}x")
    for k, v in checks.items():
        print(f"{k} tensors vs the PIL reference: {json.dumps(v)}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "loader.json").write_text(json.dumps(
        {"workers": args.workers, "batch_size": args.batch_size, "quick": args.quick,
         "cpu_count": os.cpu_count(), "sets": sets, "ratios": ratios, "tensor_check": checks,
         "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
