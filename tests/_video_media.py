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
