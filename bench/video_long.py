"""Long videos stay flat: peak memory of keyframes, frames and clips on a 30-minute 720p
video against a 1-minute one (issue 14, item 5).

Builds once, cached under bench/work/video_long/ (ffmpeg CLI):

- ``v1.mp4``: one minute of 1280x720 H.264 (libx264 ``ultrafast``, crf 28, GOP 10 s) at
  ``--fps`` (default 2: the decoder and encoders hold the same per-frame state at any
  rate, while a 30-minute 25 fps clips run would re-encode 45,000 720p frames, far over
  this script's 3-minute budget on 2 loaded cores), made of four 15-second sources
  joined with hard cuts (testsrc2, smptehdbars, testsrc, rgbtestsrc), with a stereo
  44.1 kHz AAC track (a sine sweep);
- ``v30.mp4``: that minute 30 times over, joined by the concat demuxer with stream copy
  (``-c copy``: seconds instead of re-encoding 30 minutes; a real 30-minute stream to
  every reader: 30x the frames, packets, audio frames, cuts and bytes).

Then, per video, in separate processes (``python -m mmshard.cli.main``), each sampled
over its whole process tree from /proc by ``_common.run_measured`` (peak sum of RSS and
of PSS, every 0.1 s):

1. ``ingest`` into a dataset (not part of the check; it makes the input);
2. ``tokenize --fields keyframes``;
3. ``tokenize --fields frames`` (default sampler);
4. ``clips`` (fixed 10-second windows, ``--preset ultrafast``).

Peer in the same run: the ffmpeg CLI decoding the same file to ``null`` (and, with
``--segment-peer``, cutting it into 10-second re-encoded segments, ``-f segment``,
libx264 ultrafast, one thread), so the ratio of a tool that reads its input in place is
printed beside mmshard's.

Prints a table (peak RSS for 1 min and 30 min, the ratio and the growth in MiB; the
goal is a ratio <= 1.5) and writes bench/results/video_long.json with /proc/loadavg
before and after every run.  When bench/video_real.py has fetched the Megamind trailer
(Debian opencv-doc), it is also cut into 2-second clips in three clean processes and the
clips' sha256 compared (the determinism check of issue 14).

    python bench/video_long.py                 # the check (about 3 min on 2 loaded cores)
    python bench/video_long.py --fps 5 --minutes 10
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, print_table, run_measured, save_json  # noqa: E402

WORK = ROOT / "bench" / "work" / "video_long"
RESULT = ROOT / "bench" / "results" / "video_long.json"
SOURCES = ("testsrc2", "smptehdbars", "testsrc", "rgbtestsrc")
CLI = [sys.executable, "-m", "mmshard.cli.main"]


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_videos(fps: int, minutes: int) -> dict[str, Path]:
    """The 1-minute and the long video (cached by fps and length)."""
    d = WORK / f"fps{fps}"
    d.mkdir(parents=True, exist_ok=True)
    one = d / "v1" / "v.mp4"
    long = d / f"v{minutes}" / "v.mp4"
    if not one.exists():
        one.parent.mkdir(parents=True, exist_ok=True)
        args: list[str] = []
        for s in SOURCES:
            args += ["-f", "lavfi", "-i", f"{s}=size=1280x720:rate={fps}:duration=15"]
        args += ["-f", "lavfi", "-i", "aevalsrc=sin(2*PI*(220+200*mod(t\\,5))*t):s=44100:d=60"]
        chain = "".join(f"[{i}:v]" for i in range(len(SOURCES)))
        tmp = one.with_suffix(".tmp.mp4")
        _ffmpeg([*args, "-filter_complex",
                 f"{chain}concat=n={len(SOURCES)}:v=1:a=0,format=yuv420p[v]",
                 "-map", "[v]", "-map", f"{len(SOURCES)}:a", "-c:v", "libx264",
                 "-preset", "ultrafast", "-crf", "28", "-g", str(10 * fps),
                 "-c:a", "aac", "-b:a", "64k", "-ac", "2", str(tmp)])
        tmp.rename(one)
    if not long.exists():
        long.parent.mkdir(parents=True, exist_ok=True)
        lst = d / "concat.txt"
        lst.write_text("".join(f"file '{one}'\n" for _ in range(minutes)))
        tmp = long.with_suffix(".tmp.mp4")
        _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(lst), "-c", "copy",
                 "-movflags", "+faststart", str(tmp)])
        tmp.rename(long)
    return {"1min": one, f"{minutes}min": long}


def _measured(name: str, cmd: list[str]) -> dict:
    before = _loadavg()
    r = run_measured(cmd, cwd=ROOT, interval=0.1, timeout=900)
    r.update(job=name, loadavg_before=before, loadavg_after=_loadavg())
    if r["rc"] != 0:
        print(f"{name} failed (rc {r['rc']}):\n{r['output'][-1500:]}", file=sys.stderr)
    r.pop("output")
    return r


def run_video(tag: str, video: Path, executor: str, segment_peer: bool) -> dict[str, dict]:
    ds, clips, seg = WORK / f"ds_{tag}", WORK / f"clips_{tag}", WORK / f"seg_{tag}"
    for p in (ds, clips, seg):
        shutil.rmtree(p, ignore_errors=True)
    seg.mkdir(parents=True)
    ex = ["--executor", executor, "--no-progress"]
    out = {"ingest": _measured("ingest", [*CLI, "ingest", str(video.parent), "--out", str(ds),
                                          *ex])}
    for fs in ("keyframes", "frames"):
        out[fs] = _measured(fs, [*CLI, "tokenize", str(ds), "--fields", fs, *ex])
    out["clips"] = _measured("clips", [*CLI, "clips", str(ds), "--out", str(clips),
                                       "--preset", "ultrafast", *ex])
    out["ffmpeg decode"] = _measured("ffmpeg decode", [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", str(video),
        "-f", "null", "-"])
    if not segment_peer:
        return out
    out["ffmpeg segment"] = _measured("ffmpeg segment", [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", str(video),
        "-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "threads=1",
        "-force_key_frames", "expr:gte(t,n_forced*10)", "-c:a", "aac", "-f", "segment",
        "-segment_time", "10", "-reset_timestamps", "1", str(seg / "c%04d.mp4")])
    shutil.rmtree(seg, ignore_errors=True)
    return out


MEGAMIND = ROOT / "bench" / "data" / "real" / "src" / "megamind.avi"  # bench/video_real.py
_CUT = """
import hashlib, sys
from mmshard.pipelines.clips import ClipsConfig, cut_clips, plan_video_clips
data = open(sys.argv[1], "rb").read()
cfg = ClipsConfig(window_s=2.0)
clips, _ = plan_video_clips("v", data, cfg)
print(" ".join(hashlib.sha256(m).hexdigest()[:12] for _, m, _ in cut_clips(data, clips, cfg)))
"""


def megamind_runs(n: int = 3) -> dict | None:
    """Cut the Megamind trailer (AVI, MPEG-4 Part 2 packed B-frames, AC3) into 2-second
    clips in ``n`` clean processes: the clip sha256s must agree (issue 14's drift)."""
    if not MEGAMIND.exists():
        return None
    runs = [subprocess.run([sys.executable, "-c", _CUT, str(MEGAMIND)], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
            for _ in range(n)]
    return {"runs": runs, "identical": all(r == runs[0] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=int, default=2)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--executor", choices=("local", "ray"), default="local")
    ap.add_argument("--segment-peer", action="store_true",
                    help="also time ffmpeg -f segment (re-encodes the whole video again: "
                         "about 5 min more on 2 loaded cores)")
    args = ap.parse_args()
    info = {**machine_info(), "fps": args.fps, "minutes": args.minutes,
            "executor": args.executor}
    videos = make_videos(args.fps, args.minutes)
    runs = {tag: run_video(tag, v, args.executor, args.segment_peer)
            for tag, v in videos.items()}
    (short, s), (long_tag, lng) = runs.items()
    rows = []
    for job in s:
        a, b = s[job], lng[job]
        rows.append({"job": job, "tool": "ffmpeg" if job.startswith("ffmpeg") else "mmshard",
                     f"rss_{short}_mib": a["peak_rss_mb"], f"rss_{long_tag}_mib": b["peak_rss_mb"],
                     "rss_ratio": round(b["peak_rss_mb"] / max(a["peak_rss_mb"], 1e-9), 3),
                     "rss_growth_mib": round(b["peak_rss_mb"] - a["peak_rss_mb"], 1),
                     "pss_ratio": round(b["peak_pss_mb"] / max(a["peak_pss_mb"], 1e-9), 3),
                     f"wall_{short}_s": a["wall_s"], f"wall_{long_tag}_s": b["wall_s"],
                     "ok": a["rc"] == 0 and b["rc"] == 0,
                     "flat": job == "ingest" or job.startswith("ffmpeg")
                     or b["peak_rss_mb"] <= 1.5 * a["peak_rss_mb"]})
    sizes = {tag: round(v.stat().st_size / 2**20, 1) for tag, v in videos.items()}
    print(f"video bytes (MiB): {sizes}; 1280x720 @ {args.fps} fps; loadavg now "
          f"{_loadavg()}")
    print_table(rows, list(rows[0]))
    mm = megamind_runs()
    if mm is not None:
        print(f"megamind.avi, 2 s clips, 3 clean runs byte-identical: {mm['identical']}")
    info["loadavg_at_end"] = _loadavg()
    save_json(RESULT, {"machine": info, "video_mib": sizes, "rows": rows, "runs": runs,
                       "megamind_clips": mm})
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
