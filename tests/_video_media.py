"""Tiny synthetic test videos with known content (frame ids, hard cuts, a dissolve, VFR).

Shared by tests/media, tests/samplers, tests/tokenizers and bench/video.py.

- ``index_frame(i, w, h)`` draws frame ``i``: a colour that depends on ``i`` plus a bar
  code of the bits of ``i`` so any decoded frame can be identified (``read_index``).
- ``write_cfr`` writes a constant-frame-rate clip of index frames.
- ``write_vfr`` writes a clip whose frames have the given presentation times.
- ``write_shots`` writes a clip made of distinct synthetic shots (moving texture, noise,
  gradient, shapes, pan) joined by hard cuts or a dissolve and returns the true cut frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

BITS = 12


def index_frame(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """RGB uint8 frame identifying index ``i`` (background colour + bit bars)."""
    rng = np.random.default_rng(i)
    colour = rng.integers(40, 216, size=3)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = colour
    bar_h = h // 3
    bw = w // BITS
    for b in range(BITS):
        img[h - bar_h:, b * bw:(b + 1) * bw] = 250 if (i >> b) & 1 else 5
    return img


def read_index(img: np.ndarray) -> int:
    """Inverse of :func:`index_frame` on a decoded (lossy) frame."""
    h, w = img.shape[:2]
    bar_h = h // 3
    bw = w // BITS
    v = 0
    for b in range(BITS):
        cell = img[h - bar_h + 2:h - 2, b * bw + 1:(b + 1) * bw - 1]
        if cell.mean() > 128:
            v |= 1 << b
    return v


def _open_writer(path: Path, w: int, h: int, rate: Fraction | int, codec: str, gop: int,
                 time_base: Fraction | None = None, bframes: bool = True):
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    if time_base is not None:
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
    if codec == "libx264":
        opts = {"crf": "12", "g": str(gop), "keyint_min": str(gop)}
        if not bframes:
            opts["bf"] = "0"
        stream.options = opts
    else:
        stream.codec_context.gop_size = gop
        stream.bit_rate = 4_000_000
    return container, stream


def write_frames(path: str | Path, frames, *, fps: int = 25, codec: str = "libx264",
                 gop: int = 12) -> Path:
    """Encode an iterable of RGB uint8 frames (all one size) at a constant ``fps``."""
    import av

    path = Path(path)
    container = stream = None
    for img in frames:
        if container is None:
            h, w = img.shape[:2]
            container, stream = _open_writer(path, w, h, fps, codec, gop)
        for p in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img),
                                                          format="rgb24")):
            container.mux(p)
    assert container is not None, "no frames"
    for p in stream.encode():
        container.mux(p)
    container.close()
    return path


def write_cfr(path: str | Path, n: int, *, fps: int = 25, w: int = 64, h: int = 48,
              codec: str = "libx264", gop: int = 12) -> Path:
    """A constant-frame-rate clip of ``n`` index frames."""
    return write_frames(path, (index_frame(i, w, h) for i in range(n)), fps=fps,
                        codec=codec, gop=gop)


def write_vfr(path: str | Path, times: Sequence[float], *, w: int = 64, h: int = 48,
              frames: np.ndarray | None = None) -> Path:
    """A variable-frame-rate clip: frame ``i`` (an index frame, or ``frames[i]``) is shown
    at ``times[i]`` s."""
    import av

    path = Path(path)
    tb = Fraction(1, 1000)
    if frames is not None:
        h, w = frames.shape[1:3]
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.time_base = tb
    stream.codec_context.time_base = tb
    stream.options = {"crf": "12", "g": "10", "bf": "0"}
    for i, t in enumerate(times):
        img = index_frame(i, w, h) if frames is None else np.ascontiguousarray(frames[i])
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = int(round(t * 1000))
        frame.time_base = tb
        for p in stream.encode(frame):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)
    container.close()
    return path


# ---- shots with known cuts -------------------------------------------------------------

def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w]


def shot_frames(kind: str, n: int, w: int, h: int, seed: int) -> np.ndarray:
    """``n`` frames of one synthetic shot ``kind``: texture | noise | gradient | shapes |
    pan | static.  Colours differ per seed so consecutive shots look distinct."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, size=3).astype(np.int16)
    out = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind in ("texture", "pan"):
        tex = _texture(rng, 2 * w + n * 2, h).astype(np.int16)
        tex = ((tex // 2) + tint // 2).clip(0, 255).astype(np.uint8)
        speed = 2 if kind == "texture" else 1
        for t in range(n):
            out[t] = tex[:, t * speed: t * speed + w]
    elif kind == "noise":
        lo = rng.integers(0, 128, size=3)
        for t in range(n):
            out[t] = (lo + rng.integers(0, 128, size=(h, w, 3))).astype(np.uint8)
    elif kind == "gradient":
        for t in range(n):
            g = ((xx + yy + 2 * t) % 256)[..., None]
            out[t] = ((g * (tint + 64) // 320) + 20).clip(0, 255).astype(np.uint8)
    elif kind == "shapes":
        bg = rng.integers(0, 256, size=3)
        fg = 255 - bg
        for t in range(n):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = bg
            cx, cy = (w // 4 + t) % w, h // 2
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (h // 4) ** 2
            img[mask] = fg
            img[h // 8: h // 3, (w - t) % w: (w - t) % w + w // 6] = tint.clip(0, 255)
            out[t] = img
    elif kind == "static":
        img = _texture(rng, w, h)
        out[:] = img
    else:
        raise ValueError(kind)
    return out


def write_shots(path: str | Path, shots: Sequence[tuple[str, int]], *, fps: int = 25,
                w: int = 96, h: int = 64, dissolve_after: int | None = None,
                dissolve_len: int = 12, seed: int = 0, gop: int = 25) -> dict:
    """Write shots back to back; returns ``{"cuts": [...], "dissolve": (a, b) | None,
    "num_frames": n}``.

    ``cuts`` are the first frames of shots 1..k joined by a hard cut.  With
    ``dissolve_after=j`` shots j and j+1 are joined by a linear cross-fade of
    ``dissolve_len`` frames spanning frames ``[a, b)`` (not listed in ``cuts``).
    """
    clips = [shot_frames(kind, n, w, h, seed * 100 + i) for i, (kind, n) in enumerate(shots)]
    cuts: list[int] = []
    dissolve = None

    def gen():
        nonlocal dissolve
        pos = 0
        for i, clip in enumerate(clips):
            if i > 0 and dissolve_after == i - 1:
                continue  # consumed by the dissolve
            if i > 0:
                cuts.append(pos)
            if dissolve_after is not None and i == dissolve_after:
                nxt = clips[i + 1]
                L = dissolve_len
                body, tail = clip[:-L], clip[-L:]
                yield from body
                pos += len(body)
                a = pos
                for t in range(L):
                    alpha = (t + 1) / (L + 1)
                    yield (tail[t] * (1 - alpha) + nxt[t] * alpha).astype(np.uint8)
                pos += L
                dissolve = (a, pos)
                yield from nxt[L:]
                pos += len(nxt) - L
                continue
            yield from clip
            pos += len(clip)

    write_frames(path, gen(), fps=fps, gop=gop)
    n = sum(len(c) for c in clips) - (dissolve_len if dissolve_after is not None else 0)
    return {"cuts": cuts, "dissolve": dissolve, "num_frames": n}


# ---- ffmpeg-made fixtures and reference frames (the parity harness) ------------------

_SRC = "testsrc2=size={w}x{h}:rate={fps}:duration={dur}"

# name -> (file name, ffmpeg output arguments, encoder the fixture needs)
FFMPEG_FIXTURES: dict[str, tuple[str, list[str], str]] = {
    "avi_mpeg4_bframes": ("a.avi", ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-q:v", "3"],
                          "mpeg4"),
    "avi_mjpeg": ("m.avi", ["-c:v", "mjpeg", "-q:v", "3"], "mjpeg"),
    "mpeg_ps": ("p.mpg", ["-c:v", "mpeg2video", "-bf", "2", "-g", "12", "-q:v", "3",
                          "-f", "vob"], "mpeg2video"),
    "mpeg_ts": ("t.ts", ["-c:v", "libx264", "-bf", "2", "-g", "12", "-crf", "16",
                         "-f", "mpegts"], "libx264"),
    "mp4_h264_bframes": ("h.mp4", ["-c:v", "libx264", "-bf", "3", "-g", "12", "-crf", "16"],
                         "libx264"),
    "mp4_vfr": ("v.mp4", ["-vf", "setpts='(N+floor(N/4)*0.6+floor(N/7)*1.3)/25/TB'",
                          "-fps_mode", "passthrough", "-c:v", "libx264", "-g", "12",
                          "-crf", "16"], "libx264"),
    "mp4_hevc": ("e.mp4", ["-c:v", "libx265", "-x265-params", "keyint=12:bframes=2:log-level=0",
                           "-crf", "18", "-tag:v", "hvc1"], "libx265"),
    "webm_vp9": ("9.webm", ["-c:v", "libvpx-vp9", "-g", "12", "-crf", "30", "-b:v", "0",
                            "-deadline", "realtime", "-cpu-used", "8"], "libvpx-vp9"),
    "mkv_av1": ("1.mkv", ["-c:v", "libsvtav1", "-g", "12", "-crf", "40", "-preset", "12"],
                "libsvtav1"),
}


def ffmpeg_encoders() -> set[str]:
    """Names of the encoders the installed ffmpeg CLI has."""
    import subprocess

    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines()[10:] if len(line.split()) > 1}


def write_ffmpeg_fixture(folder: str | Path, name: str, *, w: int = 128, h: int = 96,
                         fps: int = 25, seconds: float = 3.2) -> Path:
    """Encode ``testsrc2`` (every frame distinct) as fixture ``name`` of FFMPEG_FIXTURES."""
    import subprocess

    fname, args, _ = FFMPEG_FIXTURES[name]
    out = Path(folder) / f"{name}_{fname}"
    src = _SRC.format(w=w, h=h, fps=fps, dur=seconds)
    res = subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", src,
                          "-pix_fmt", "yuv420p", *args, str(out)], capture_output=True,
                         text=True)
    if res.returncode:
        raise RuntimeError(f"ffmpeg could not write {name}: {res.stderr[-500:]}")
    return out


def ffmpeg_reference(path: str | Path) -> np.ndarray:
    """Every frame of the first video stream in presentation order, decoded by the ffmpeg
    CLI to raw RGB (``-fps_mode passthrough``: no frame dropped or duplicated)."""
    import json
    import subprocess

    info = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height", "-of", "json", str(path)],
        capture_output=True, check=True, text=True).stdout)["streams"][0]
    w, h = int(info["width"]), int(info["height"])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def frame_errors(frames: np.ndarray, indices: Sequence[int], ref: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per requested frame: mean abs difference to the reference frame, and the index of
    the reference frame (within +/-8) that the decoded frame is closest to."""
    mad = np.empty(len(indices))
    best = np.empty(len(indices), np.int64)
    for k, i in enumerate(indices):
        f = frames[k].astype(np.int16)
        lo, hi = max(0, i - 8), min(len(ref), i + 9)
        d = [float(np.abs(f - ref[j]).mean()) for j in range(lo, hi)]
        mad[k] = float(np.abs(f - ref[i]).mean())
        best[k] = lo + int(np.argmin(d))
    return mad, best


def parity(path: str | Path, backend: str, ref: np.ndarray, *, seed: int = 0) -> dict:
    """Decode ``path`` with ``backend`` (random access in a shuffled order, then one
    sequential pass) and compare with the ffmpeg reference ``ref``.

    Returns ``{"status": "exact" | "wrong" | "refused", "max_mad": ..., "wrong": [...],
    "num_frames": ..., "reason": ...}``; ``wrong`` lists (asked, got) index pairs."""
    from mmshard.errors import MmshardError
    from mmshard.media.video_reader import open_video

    n = len(ref)
    rng = np.random.default_rng(seed)
    idx = np.unique(np.r_[0, 1, n // 2, n - 2, n - 1, rng.choice(n, min(n, 16), replace=False)])
    order = rng.permutation(idx)
    try:
        with open_video(path, backend) as vr:
            m = vr.meta
            ts = vr.timestamps()
            rand = vr.get_frames(order)
            seq = np.stack([f.image for f in vr.iter_frames()])
    except MmshardError as e:
        return {"status": "refused", "reason": str(e)[:160]}
    out = {"num_frames": int(m.num_frames), "duration": m.duration,
           "times_ok": bool(np.all(np.isfinite(ts)) and np.all(np.diff(ts) > 0)
                            and 0 <= ts[-1] < m.duration < 1e6)}
    if m.num_frames != n or len(seq) != n:
        return {**out, "status": "wrong", "reason": f"{m.num_frames} frames, ffmpeg has {n}",
                "max_mad": float("nan"), "wrong": []}
    mad_r, best_r = frame_errors(rand, order.tolist(), ref)
    mad_s, best_s = frame_errors(seq, list(range(n)), ref)
    wrong = [(int(i), int(b)) for i, b in zip(order, best_r) if b != i]
    wrong += [(i, int(b)) for i, b in enumerate(best_s) if b != i]
    mad = float(max(mad_r.max(), mad_s.max()))
    exact = not wrong and mad < 3.0
    return {**out, "status": "exact" if exact else "wrong", "max_mad": round(mad, 3),
            "wrong": wrong[:6]}
