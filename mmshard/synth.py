"""Synthetic media with known properties, for tests, the demo and benchmarks.

Everything is generated from a seed: photo-like images (smooth colour fields, shapes,
noise), speech-like audio (a harmonic source with moving formants and syllable-rate
amplitude), tones, noise, short videos with hard scene cuts at known frames, and broken
variants (truncated, zero-byte, text named like media).

>>> img = photo_like(64, 48, seed=1); img.size
(64, 48)
>>> wav = speech_like(0.5, 16000, seed=0); wav.shape, wav.dtype
((8000,), dtype('float32'))
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "encode_image",
    "noise",
    "photo_like",
    "smooth_image",
    "speech_like",
    "tone",
    "write_audio",
    "write_broken_files",
    "write_video",
]


def photo_like(width: int, height: int, seed: int = 0):
    """A PIL RGB image: a smooth colour field plus ellipses, a gradient and mild noise."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), np.uint8)
    im = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(max(2, min(width, height) // 10), max(3, min(width, height) // 3)))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r],
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    im = im.filter(ImageFilter.GaussianBlur(radius=max(1, min(width, height) // 200)))
    arr = np.asarray(im).astype(np.int16) + rng.normal(0, 4, (height, width, 1)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def smooth_image(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """An ``n x n`` RGB uint8 image: a gradient plus a Gaussian blob per channel
    (photo-like, compressible, learnable by a small VQ model in few steps).

    >>> smooth_image(np.random.default_rng(0), 16).shape
    (16, 16, 3)
    """
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = np.zeros((n, n, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.3 * (a * xx + b * yy - (a + b) / 2)
        cx, cy = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.1, 0.3)
        img[..., c] += d * 0.4 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def encode_image(im, fmt: str = "JPEG", quality: int = 90, exif_orientation: int | None = None
                 ) -> bytes:
    """Encode a PIL image to bytes, optionally with an EXIF orientation tag."""
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if exif_orientation is not None:
        exif = im.getexif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, sr: int, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))
            ).astype(np.float32).clip(-1, 1)


def speech_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A voiced source (f0 ~ 120 Hz with jitter) through moving formant-like resonances,
    amplitude-modulated at a syllable rate (~4 Hz).  Not speech, but speech-shaped."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = (110 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
          + rng.normal(0, 1, n).cumsum() / n)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    for formant, bw in ((700, 1.0), (1200, 0.5), (2500, 0.25)):
        fm = formant * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        for h in range(1, 30):
            freq = h * f0
            gain = bw * np.exp(-((freq - fm) / 250.0) ** 2)
            out += gain * np.sin(h * phase)
    env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))) ** 2
    out = out * env
    out = out / (np.abs(out).max() + 1e-9) * 0.6
    return out.astype(np.float32)


def write_audio(path: str, x: np.ndarray, sr: int, fmt: str | None = None) -> str:
    """Write mono/multichannel float audio with soundfile (format from the extension)."""
    import soundfile as sf

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sf.write(path, x, sr, format=fmt)
    return path


def write_video(path: str, *, frames: int = 30, fps: int = 10, size: tuple[int, int] = (64, 48),
                cuts: Sequence[int] = (), seed: int = 0, codec: str = "libx264") -> list[int]:
    """Write a video whose scene changes exactly at ``cuts`` (frame indices); within a
    scene the picture moves slowly.  Returns the cut list.  Uses PyAV."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    bounds = [0, *sorted(cuts), frames]
    scenes = [photo_like(w + 32, h + 32, seed=int(rng.integers(1 << 30))) for _ in bounds[:-1]]
    with av.open(path, "w") as c:
        st = c.add_stream(codec, rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            arr = np.asarray(scenes[s])
            for i in range(a, b):
                dx = (i - a) % 32
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[dx:dx + h, dx:dx + w]),
                                                   format="rgb24")
                for p in st.encode(frame):
                    c.mux(p)
        for p in st.encode():
            c.mux(p)
    return list(cuts)


def write_broken_files(folder: str, seed: int = 0) -> dict[str, str]:
    """Write the classic bad inputs; returns {file name: expected ledger reason}."""
    os.makedirs(folder, exist_ok=True)
    good = encode_image(photo_like(96, 64, seed=seed))
    files = {
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        "empty.jpg": (b"", "empty_file"),
        "notes.jpg": (b"this is a text file, not a JPEG\n" * 4, "not_an_image"),
        "silence-empty.wav": (_empty_wav(), "empty_audio"),
        "broken.mp4": (b"\x00\x00\x00\x18ftypmp42" + os.urandom(64), "undecodable_video"),
    }
    out = {}
    for name, (data, reason) in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        out[name] = reason
    return out


def _empty_wav() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 1), np.float32), 16000, format="WAV")
    return buf.getvalue()


def make_demo_corpus(folder: str, *, images: int = 24, seed: int = 0) -> dict[str, int]:
    """A small mixed corpus: captioned photos in albums (group = album), speech-like and
    tonal audio by speaker, short videos with scene cuts, and the classic broken files.
    Returns counts by kind."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    n_img = 0
    for i in range(images):
        album = os.path.join(folder, "photos", f"album{i % 4}")
        os.makedirs(album, exist_ok=True)
        w, h = int(rng.integers(320, 900)), int(rng.integers(240, 700))
        name = os.path.join(album, f"img{i:03d}")
        with open(name + ".jpg", "wb") as f:
            f.write(encode_image(photo_like(w, h, seed=seed + i), quality=92))
        with open(name + ".txt", "w", encoding="utf-8") as f:
            f.write(f"a synthetic photo number {i} from album {i % 4}")
        n_img += 1
    n_aud = 0
    for spk in range(3):
        d = os.path.join(folder, "speech", f"speaker{spk}")
        os.makedirs(d, exist_ok=True)
        for u in range(2):
            sr = (16000, 22050, 44100)[spk]
            write_audio(os.path.join(d, f"utt{u}.wav"),
                        speech_like(1.0 + 0.5 * u, sr, seed=seed + 10 * spk + u), sr)
            with open(os.path.join(d, f"utt{u}.txt"), "w", encoding="utf-8") as f:
                f.write(f"speaker {spk} utterance {u}")
            n_aud += 1
    tones = os.path.join(folder, "tones")
    os.makedirs(tones, exist_ok=True)
    for k, freq in enumerate((220.0, 440.0, 880.0)):
        write_audio(os.path.join(tones, f"tone{int(freq)}.flac"), tone(1.0, 16000, freq), 16000)
        with open(os.path.join(tones, f"tone{int(freq)}.cls"), "w") as f:
            f.write(str(k))
        n_aud += 1
    vids = os.path.join(folder, "videos")
    os.makedirs(vids, exist_ok=True)
    for v in range(3):
        write_video(os.path.join(vids, f"clip{v}.mp4"), frames=40, fps=10, size=(96, 64),
                    cuts=(12, 27), seed=seed + 100 + v)
        with open(os.path.join(vids, f"clip{v}.txt"), "w") as f:
            f.write(f"a short clip with two scene cuts, number {v}")
    broken = write_broken_files(os.path.join(folder, "broken"), seed=seed)
    return {"images": n_img, "audio": n_aud, "videos": 3, "broken": len(broken)}
