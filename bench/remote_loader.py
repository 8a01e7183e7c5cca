"""Training from object storage: mmshard.Loader vs LitData vs Mosaic Streaming.

The same N JPEGs (96x128, with captions) are written once per tool in its own format by
its own writer (``mmshard ingest``; ``litdata.optimize``; Mosaic ``MDSWriter``), each
tool in its own virtual environment (bench/.venv-litdata, bench/.venv-mosaic, created
with ``--system-site-packages`` so they share this machine's torch), with shards/chunks
of about ``--shard-kb`` KB, uploaded to one bucket on a loopback moto S3 server.  Then
each tool reads one epoch from ``s3://`` through its own local cache with a cache limit
of a quarter of the data: a torch DataLoader with ``--workers`` workers and batches of
64, every image decoded and resized to 64x64 uint8 (the same PIL work in every tool).

Reported, one run each: samples/s over the epoch, time to the first batch, and the peak
bytes of the cache folder (sampled every 50 ms), with the load average before each tool
ran.  A tool still reading after ``--max-seconds`` (150) is stopped there and its rate
is over what it read (``partial``).

The written datasets are kept in bench/work/remote_loader-build/n<N>-kb<KB>/ (one
folder per tool, written once; delete it to rewrite), so a rerun starts a fresh moto
server, uploads the three, and reads; the JPEGs are kept in bench/data/.

    python bench/remote_loader.py --setup      # create the two venvs, run nothing
    python bench/remote_loader.py              # 10,000 images: the issue's run

Writes bench/results/remote_loader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work" / "remote_loader"
BUILD = BENCH / "work" / "remote_loader-build"
VENVS = {"litdata": ("litdata", BENCH / ".venv-litdata"),
         "mosaic": ("mosaicml-streaming", BENCH / ".venv-mosaic")}
BUCKET = "bench"


# ------------------------------------------------------------------ in the tool's venv
def _decode(jpeg: bytes):
    import io

    import numpy as np
    import torch
    from PIL import Image

    im = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((64, 64))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def write_litdata(src: str, out: str, shard_kb: int) -> None:
    import litdata

    files = sorted(p for p in os.listdir(src) if p.endswith(".jpg"))
    litdata.optimize(fn=_lit_item, inputs=[os.path.join(src, f) for f in files],
                     output_dir=out, chunk_bytes=f"{shard_kb}KB", num_workers=1)


def _lit_item(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    with open(path[:-4] + ".txt") as f:
        return {"image": data, "caption": f.read()}


def write_mosaic(src: str, out: str, shard_kb: int) -> None:
    from streaming import MDSWriter

    files = sorted(p for p in os.listdir(src) if p.endswith(".jpg"))
    with MDSWriter(out=out, columns={"image": "bytes", "caption": "str"},
                   size_limit=shard_kb * 1024) as w:
        for f in files:
            w.write(_lit_item(os.path.join(src, f)))


def read_peer(tool: str, url: str, cache: str, limit: int, workers: int, result: str,
              endpoint: str) -> None:
    import torch.utils.data as tud

    if tool == "litdata":
        import litdata
        import litdata.streaming.downloader as lit_dl

        t0 = time.perf_counter()  # after the imports, as for mmshard

        # LitData's obstore path builds its client without allow_http, so it cannot talk
        # to an http:// endpoint (BadScheme); its boto3 path (used without obstore) can.
        lit_dl._OBSTORE_AVAILABLE = False

        class Lit(litdata.StreamingDataset):
            def __getitem__(self, i):
                item = super().__getitem__(i)
                return _decode(item["image"]), item["caption"]

        opts = {"endpoint_url": endpoint, "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing"}
        ds = Lit(input_dir=litdata.streaming.cache.Dir(path=cache, url=url),
                 max_cache_size=limit, storage_options=opts, shuffle=True, seed=0)
        dl = litdata.StreamingDataLoader(ds, batch_size=64, num_workers=workers)
    else:
        from streaming import StreamingDataset

        t0 = time.perf_counter()

        class Mds(StreamingDataset):
            def __getitem__(self, i):
                item = super().__getitem__(i)
                return _decode(item["image"]), item["caption"]

        ds = Mds(remote=url, local=cache, cache_limit=limit, batch_size=64, shuffle=True,
                 shuffle_seed=0)
        dl = tud.DataLoader(ds, batch_size=64, num_workers=workers)
    _epoch(dl, t0, result)


def _epoch(dl, t0: float, result: str) -> None:
    cap = float(os.environ.get("REMOTE_BENCH_MAX_S") or 0)  # --max-seconds (0: none)
    n = 0
    first = None
    partial = False
    for batch in dl:
        if first is None:
            first = time.perf_counter() - t0
        n += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch["__key__"])
        if cap and time.perf_counter() - t0 > cap:
            partial = True
            break
    wall = time.perf_counter() - t0
    Path(result).write_text(json.dumps({"samples": n, "wall_s": wall,
                                        "first_batch_s": first, "partial": partial}))


def read_mmshard(url: str, cache: str, limit: int, workers: int, result: str,
                 endpoint: str, buffer: int, window: str = "auto") -> None:
    import mmshard
    from mmshard.pipelines.stream.decode import DecodeConfig, FixedResize, ImageDecode
    from mmshard.pipelines.stream.source import DatasetSource

    t0 = time.perf_counter()
    opts = {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    ld = mmshard.Loader(DatasetSource(root=url, storage_options=opts), batch_size=64, seed=0,
                        rank=0, world_size=1, num_workers=workers, cache_dir=cache,
                        shuffle_buffer=buffer, shuffle_window=(
                            None if window == "none" else window if window == "auto"
                            else int(window)),
                        cache_limit=limit, decode=DecodeConfig(image=ImageDecode(
                            resize=FixedResize(size=(64, 64)), dtype="uint8")))
    _epoch(ld, t0, result)


# ---------------------------------------------------------------------- the driver
def setup() -> None:
    for pkg, venv in VENVS.values():
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                           check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", pkg], check=True)


def make_images(d: Path, n: int) -> int:
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    total = 0
    for i in range(n):
        p = d / f"img{i:06d}.jpg"
        if not p.exists():
            arr = np.roll(base, i % 97, axis=1) // 2 + (i % 128)
            Image.fromarray(arr.astype(np.uint8)).save(p, quality=85)
            (d / f"img{i:06d}.txt").write_text(f"photo {i}")
        total += p.stat().st_size
    return total


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def timed_read(cmd: list[str], cache: Path, result: Path, env: dict) -> dict:
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], du(cache))
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    stop.set()
    th.join()
    if p.returncode != 0:
        return {"rc": p.returncode, "error": (p.stdout + p.stderr)[-1500:]}
    r = json.loads(result.read_text())
    return {"rc": 0, "samples": r["samples"], "samples_s": round(r["samples"] / r["wall_s"], 1),
            "wall_s": round(r["wall_s"], 2), "first_batch_s": round(r["first_batch_s"], 2),
            "peak_cache_mb": round(peak[0] / 2**20, 2),
            **({"partial": True} if r.get("partial") else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--shard-kb", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--setup", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=150,
                    help="stop a tool's epoch after this long and report the rate over what "
                         "it read (marked partial; 0: the whole epoch)")
    ap.add_argument("--mm-buffer", type=int, default=None,
                    help="mmshard shuffle_buffer (default: the samples of a quarter of the "
                         "cache)")
    ap.add_argument("--mm-window", default="auto",
                    help="mmshard shuffle_window: auto (block shuffle sized from the cache), "
                         "an int (shards), or none (the sliding shuffle buffer)")
    ap.add_argument("--json", default="remote_loader.json",
                    help="results file under bench/results (a partial rerun: another name)")
    ap.add_argument("--tools", default="mmshard,litdata,mosaic")
    args = ap.parse_args()
    if args.setup:
        setup()
        return
    sys.path.insert(0, str(BENCH))
    from _common import machine_info, print_table, save_json

    sys.path.insert(0, str(BENCH.parent))
    from tests.pipelines.test_cluster_s3 import free_port, wait_port

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    src = BENCH / "data" / f"remote_images_{args.n}"
    data_bytes = make_images(src, args.n)
    limit = data_bytes // 4
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
               S3_ENDPOINT_URL=endpoint, DISABLE_S5CMD="1", AWS_ALLOW_HTTP="true",
               PYTHONPATH=str(BENCH.parent), REMOTE_BENCH_MAX_S=str(args.max_seconds))
    try:
        wait_port(port)
        import s3fs

        fs = s3fs.S3FileSystem(key="testing", secret="testing",
                               client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(BUCKET)
        rows = run_tools(args, src, fs, endpoint, env, limit)
    finally:
        moto.terminate()
        moto.wait(10)
    for r in rows:
        r["cache_limit_mb"] = round(limit / 2**20, 2)
    print(f"{args.n} images, {data_bytes / 2**20:.1f} MiB of JPEG; cache limit "
          f"{limit / 2**20:.1f} MiB")
    print_table(rows, ["tool", "rc", "samples", "samples_s", "first_batch_s", "wall_s",
                       "peak_cache_mb", "cache_limit_mb", "partial", "loadavg_before"])
    ok = {r["tool"].split(" (")[0]: r for r in rows if r.get("rc") == 0}
    summary = {}
    if "mmshard" in ok:
        for peer in ("litdata", "mosaic"):
            if peer in ok:
                summary[f"ratio_mmshard_over_{peer}"] = round(
                    ok["mmshard"]["samples_s"] / ok[peer]["samples_s"], 2)
    path = save_json(BENCH / "results" / args.json, {
        "machine": machine_info(), "args": vars(args), "data_bytes": data_bytes,
        "runs": rows, "summary": summary})
    print(summary)
    print(f"wrote {path}")


def build(args, src: Path, env: dict) -> Path:
    """Each tool's dataset written once by its own writer into bench/work/remote_loader-
    build/n<N>-kb<KB>/ (kept: a rerun with the same --n and --shard-kb only uploads)."""
    me = str(Path(__file__).resolve())
    out = BUILD / f"n{args.n}-kb{args.shard_kb}"
    out.mkdir(parents=True, exist_ok=True)
    per_shard = max(1, args.shard_kb * 1024 // max(1, du(src) // args.n))
    for tool in ("mmshard", "litdata", "mosaic"):
        dest = out / tool
        if (out / f"{tool}.done").exists() or tool not in args.tools.split(","):
            continue
        shutil.rmtree(dest, ignore_errors=True)
        t0 = time.perf_counter()
        if tool == "mmshard":
            cmd = [sys.executable, "-m", "mmshard.cli.main", "ingest", str(src), "--out",
                   str(dest), "--executor", "local", "--workers", str(args.workers),
                   "--no-progress", "--max-samples", str(per_shard)]
        else:
            cmd = [str(VENVS[tool][1] / "bin" / "python"), me, "--write", tool, str(src),
                   str(dest), str(args.shard_kb)]
        w = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if w.returncode != 0:
            raise SystemExit(f"{tool} writer failed ({w.returncode}): {w.stderr[-1500:]}")
        (out / f"{tool}.done").write_text(f"{time.perf_counter() - t0:.1f} s\n")
        print(f"built {tool} in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def run_tools(args, src: Path, fs, endpoint: str, env: dict, limit: int) -> list[dict]:
    me = str(Path(__file__).resolve())
    rows = []
    built = build(args, src, env)
    tools = [t for t in ("mmshard", "litdata", "mosaic") if t in args.tools.split(",")]
    for tool in tools:  # one upload of each tool's own files into the same bucket
        fs.put(str(built / tool) + "/", f"{BUCKET}/{tool}/", recursive=True)
    for tool in tools:
        cache = WORK / f"{tool}-cache"
        result = WORK / f"{tool}.json"
        py = sys.executable if tool == "mmshard" else str(VENVS[tool][1] / "bin" / "python")
        cmd = [py, me, "--read", tool, f"s3://{BUCKET}/{tool}", str(cache), str(limit),
               str(args.workers), str(result), endpoint]
        if tool == "mmshard":  # a shuffle window of what fits in a quarter of the cache
            cmd.append(str(args.mm_buffer if args.mm_buffer is not None else
                           max(64, limit // 4 // max(1, du(src) // args.n))))
            cmd.append(args.mm_window)
        load = Path("/proc/loadavg").read_text().split()[:3]
        rows.append({"tool": tool, **timed_read(cmd, cache, result, env),
                     "loadavg_before": " ".join(load)})
        if tool == "mmshard" and (cache / "journal.log").exists():  # shard downloads
            lines = (cache / "journal.log").read_text().splitlines()
            rows[-1]["fetches"] = sum(1 for ln in lines if ln.split()[2:3] == ["fetch"])
            rows[-1]["shards"] = len(fs.glob(f"{BUCKET}/mmshard/**/*.tar"))
            rows[-1]["tool"] = f"mmshard (shuffle_window={args.mm_window})"
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--write":
        tool, src_dir, out_dir, kb = sys.argv[2:6]
        (write_litdata if tool == "litdata" else write_mosaic)(src_dir, out_dir, int(kb))
    elif len(sys.argv) > 1 and sys.argv[1] == "--read":
        tool, url, cache_dir, lim, nw, res, ep = sys.argv[2:9]
        if tool == "mmshard":
            read_mmshard(url, cache_dir, int(lim), int(nw), res, ep, int(sys.argv[9]),
                         sys.argv[10] if len(sys.argv) > 10 else "auto")
        else:
            read_peer(tool, url, cache_dir, int(lim), int(nw), res, ep)
    else:
        main()
