"""The real-footage shot-cut set of bench/video.py, built from Debian's opencv-doc videos.

``build(folder)`` returns one dict per video: ``path``, ``cuts`` (first frames of new
shots after a hard cut), ``dissolves`` (``(a, b)`` frame spans), ``num_frames``,
``container``/``codec`` notes.  Truth and recipes live in ``bench/truth/video_real.json``
(committed); the videos go to ``bench/data/real/`` (ignored by git).  The sources come
from the Debian package ``opencv-doc`` (``apt-get download opencv-doc``), unpacked here
on first use.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _video_media import ffmpeg_reference  # noqa: E402

TRUTH = Path(__file__).parent / "truth" / "video_real.json"
SOURCES = {"megamind.avi": "examples/data/Megamind.avi", "vtest.avi": "examples/data/vtest.avi",
           "box.mp4": "opencv4/html/box.mp4.gz", "cup.mp4": "opencv4/html/cup.mp4.gz"}
W, H = 640, 480


def fetch_sources(folder: Path) -> None:
    """Unpack the four source videos from the opencv-doc .deb (downloaded with apt)."""
    folder.mkdir(parents=True, exist_ok=True)
    if all((folder / n).exists() for n in SOURCES):
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True,
                       capture_output=True)
        deb = next(Path(tmp).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        base = Path(tmp) / "x" / "usr" / "share" / "doc" / "opencv-doc"
        for name, rel in SOURCES.items():
            src = base / rel
            if rel.endswith(".gz"):
                with gzip.open(src) as fi, open(folder / name, "wb") as fo:
                    shutil.copyfileobj(fi, fo)
            else:
                shutil.copy(src, folder / name)


def _encode(frames: np.ndarray, out: Path, args: list[str], fps: int = 25) -> None:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
           f"{W}x{H}", "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", *args, str(out)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)


def _build_joined(folder: Path, name: str, spec: dict, refs: dict) -> dict:
    import cv2

    parts, cuts, dissolves, pos = [], [], [], 0
    pending = 0  # dissolve length into the next segment
    for seg in spec["segments"]:
        src, a, b = seg[:3]
        opts = seg[3] if len(seg) > 3 else {}
        clip = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA)
                         for f in refs[src][a:b]])
        if pending:
            tail, parts[-1] = parts[-1][-pending:], parts[-1][:-pending]
            pos -= pending
            alpha = (np.arange(1, pending + 1) / (pending + 1))[:, None, None, None]
            blend = (tail * (1 - alpha) + clip[:pending] * alpha).round().astype(np.uint8)
            parts.append(blend)
            dissolves.append((pos, pos + pending))
            pos += pending
            clip = clip[pending:]
        elif parts:
            cuts.append(pos)
        parts.append(clip)
        pos += len(clip)
        pending = int(opts.get("dissolve", 0))
    frames = np.concatenate(parts)
    out = folder / name
    if not out.exists():
        _encode(frames, out, spec["args"])
    return {"name": name, "path": out, "cuts": cuts, "dissolves": dissolves,
            "num_frames": len(frames), "container": spec["format"]}


def build(folder: Path) -> list[dict]:
    """The set: the originals plus the joined videos (built once, then reused)."""
    truth = json.loads(TRUTH.read_text())
    src_dir = folder / "src"
    fetch_sources(src_dir)
    videos, refs = [], {}
    for name, t in truth["originals"].items():
        path = src_dir / name
        ref = ffmpeg_reference(path)
        refs[name] = ref
        videos.append({"name": name, "path": path, "cuts": t["cuts"],
                       "dissolves": [tuple(d) for d in t["dissolves"]],
                       "num_frames": len(ref), "container": name.rsplit(".", 1)[1]})
    for name, spec in truth["joined"].items():
        videos.append(_build_joined(folder, name, spec, refs))
    return videos


if __name__ == "__main__":
    for v in build(ROOT / "bench" / "data" / "real"):
        print(v["name"], v["num_frames"], v["cuts"], v["dissolves"])
