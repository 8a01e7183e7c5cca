"""URL ingest: ``mmshard ingest`` vs img2dataset on one URL list from a loopback server.

A server process (aiohttp, several ports = several "hosts") serves N small JPEGs
(``/img/<i>.jpg``), adding ``--latency`` seconds (default 50 ms) to every request and
failing a deterministic ``--fail`` fraction (default 5%) of the URLs: half answer 404,
half 500, on every request.  Both tools download the same Parquet URL list
(``url``, ``caption``) into WebDataset shards of 1,000 samples, without resizing, one
run each, on the same cores:

- ``mmshard (polite defaults)``: ``--per-host 4 --host-rate 10`` per task (the defaults),
  robots.txt and X-Robots-Tag honoured, 3 retries of 5xx with backoff;
- ``mmshard (polite, hash keys)``: the same with ``--key-scheme hash``: keys from a hash
  of the URL spread each host over all shards (path keys sort a host's URLs together, so
  a shard task talks to few hosts and their per-host rate limits the task);
- ``mmshard (unthrottled)``: ``--per-host 64``, no rate limit, ``--retries 0``: the same
  work as img2dataset, which has no per-host limits or robots.txt, 0 retries by default;
- ``img2dataset``: ``--processes_count W --thread_count T`` (in bench/.venv-img2dataset).

Reported: images/s (ok samples over wall time), the failures each tool recorded, and the
agreement of the two ledgers: URLs both saved, URLs both failed, and the disagreements.

    python bench/download.py            # 5,000 URLs
    python bench/download.py --n 1000   # smaller, when the machine is busy

Writes bench/results/download.json.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

WORK = BENCH / "work" / "download"
VENV = BENCH / ".venv-img2dataset"


def failing(i: int, frac: float) -> int:
    """0 (served), 404 or 500 for URL ``i``: a stable hash picks the failing fraction."""
    h = int(hashlib.sha256(str(i).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0 if h >= frac else (404 if h < frac / 2 else 500)


def serve(ports_file: str, hosts: int, latency: float, frac: float) -> None:
    """The server process: ``hosts`` ports, one handler."""
    from aiohttp import web
    from PIL import Image

    images = []
    for k in range(32):
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), (k * 7 % 256, k * 31 % 256, 90)).save(buf, "JPEG")
        images.append(buf.getvalue())

    async def handle(request):
        await asyncio.sleep(latency)
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        i = int(request.path.rsplit("/", 1)[-1].split(".")[0])
        code = failing(i, frac)
        if code:
            return web.Response(status=code)
        return web.Response(body=images[i % 32], content_type="image/jpeg")

    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ports = []
        for _ in range(hosts):
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])
        Path(ports_file).write_text(json.dumps(ports))
        await asyncio.Event().wait()

    asyncio.run(main())


def ensure_img2dataset() -> Path:
    exe = VENV / "bin" / "img2dataset"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def mmshard_ledger(out: Path) -> dict[str, bool]:
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "ledger.parquet", columns=["source", "status"]).to_pylist()
    return {r["source"]: r["status"] == "ok" for r in rows}


def img2dataset_ledger(out: Path) -> dict[str, bool]:
    import pyarrow.parquet as pq

    got: dict[str, bool] = {}
    for p in glob.glob(str(out / "*.parquet")):
        for r in pq.read_table(p, columns=["url", "status"]).to_pylist():
            got[r["url"]] = r["status"] == "success"
    return got


def agreement(a: dict[str, bool], b: dict[str, bool]) -> dict[str, int]:
    keys = set(a) | set(b)
    return {"both_ok": sum(1 for k in keys if a.get(k) and b.get(k)),
            "both_failed": sum(1 for k in keys if a.get(k) is False and b.get(k) is False),
            "only_first_ok": sum(1 for k in keys if a.get(k) and not b.get(k)),
            "only_second_ok": sum(1 for k in keys if b.get(k) and not a.get(k)),
            "missing_rows": sum(1 for k in keys if k not in a or k not in b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--fail", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32, help="img2dataset threads/process")
    args = ap.parse_args()
    if args.n < 1 or args.hosts < 1 or not 0 <= args.fail < 1:
        ap.error("--n and --hosts must be >= 1, --fail in [0, 1)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    exe = ensure_img2dataset()
    ports_file = WORK / "ports.json"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(ports_file),
                               str(args.hosts), str(args.latency), str(args.fail)])
    try:
        deadline = time.time() + 30
        while not ports_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        ports = json.loads(ports_file.read_text())
        rows = run_all(args, exe, ports)
    finally:
        server.terminate()
        server.wait(10)
    print_table(rows, ["tool", "rc", "wall_s", "images_s", "ok", "failed", "cpu_s",
                       "peak_pss_mb"])
    led = {r["tool"]: r.pop("_ledger") for r in rows}
    agree = {f"{a} vs img2dataset": agreement(led[a], led["img2dataset"])
             for a in led if a != "img2dataset"}
    for k, v in agree.items():
        print(f"ledger agreement, {k}: {v}")
    i2d = next(r for r in rows if r["tool"] == "img2dataset")
    summary = {f"ratio_{r['tool'].replace(' ', '_')}_over_img2dataset":
               round(r["images_s"] / i2d["images_s"], 2) for r in rows
               if r["tool"] != "img2dataset" and i2d["images_s"]}
    for r in rows:
        r.pop("output", None)
    path = save_json(BENCH / "results" / "download.json", {
        "machine": machine_info(), "args": vars(args), "runs": rows, "agreement": agree,
        "summary": summary})
    print(summary)
    print(f"wrote {path}")


def run_all(args: argparse.Namespace, exe: Path, ports: list[int]) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/img/{i}.jpg" for i in range(args.n)]
    table = WORK / "urls.parquet"
    pq.write_table(pa.table({"url": urls, "caption": [f"photo {i}" for i in range(args.n)]}),
                   table)
    rows = []
    mm = [sys.executable, "-m", "mmshard.cli.main", "ingest", str(table), "--url-column", "url",
          "--caption-column", "caption", "--executor", "local", "--workers",
          str(args.workers), "--no-progress", "--max-samples", "1000",
          "--max-failure-rate", "1"]
    for name, extra in (("mmshard (polite defaults)", []),
                        ("mmshard (polite, hash keys)", ["--key-scheme", "hash"]),
                        ("mmshard (unthrottled)", ["--per-host", "64", "--host-rate", "1e9",
                                                   "--retries", "0"])):
        out = WORK / name.split("(", 1)[1].strip(")").replace(", ", "_").replace(" ", "_")
        r = run_measured([*mm, "--out", str(out), *extra], timeout=900)
        led = mmshard_ledger(out) if r["rc"] == 0 else {}
        rows.append(_row(name, r, led))
    out = WORK / "i2d"
    r = run_measured([str(exe), "--url_list", str(table), "--input_format", "parquet",
                      "--url_col", "url", "--caption_col", "caption", "--output_format",
                      "webdataset", "--output_folder", str(out), "--processes_count",
                      str(args.workers), "--thread_count", str(args.threads),
                      "--resize_mode", "no", "--number_sample_per_shard", "1000",
                      "--enable_wandb", "False"], timeout=900)
    rows.append(_row("img2dataset", r, img2dataset_ledger(out) if r["rc"] == 0 else {}))
    return rows


def _row(name: str, r: dict, led: dict[str, bool]) -> dict:
    ok = sum(led.values())
    return {"tool": name, "rc": r["rc"], "wall_s": r["wall_s"],
            "images_s": round(ok / r["wall_s"], 1) if r["wall_s"] else 0.0, "ok": ok,
            "failed": len(led) - ok, "cpu_s": r["cpu_s"], "peak_pss_mb": r["peak_pss_mb"],
            "output": r["output"][-1500:], "_ledger": led}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
