"""Per-shard hashing task of dedup and audit: exact content hash + perceptual hashes.

One task per base shard (embarrassingly parallel, run on the executor).  For each sample
it emits the sha256 of its primary medium (image, else video, else audio, else caption),
its size (pixels when it is an image or a video, and bytes) and its perceptual hashes:
one per image; one per keyframe thumbnail of a video when the dataset has a keyframes
sidecar (``keyframes/``: ``kf.NNN.jpg`` members), none otherwise (exact hash only).
Images are decoded with PIL in draft mode (JPEG DCT-domain downscale; pHash only needs
32x32) under the decompression-bomb limit; an undecodable one is reported by reason,
never raised.

>>> task = HashTask(root="ds", storage_options={}, shard=shard, kind="phash")  # doctest: +SKIP
>>> out = hash_shard(task); out.keys[:1], out.hashes.dtype                     # doctest: +SKIP
(['train_00000'], dtype('uint64'))
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np

from ...dataset import Dataset, ShardInfo
from ...errors import ShardError

__all__ = ["IMAGE_FIELDS", "HashTask", "ShardHashes", "decode_errors", "hash_shard",
           "image_thumbnail_grey"]

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
VIDEO_FIELDS = ("mp4", "webm", "mkv", "mov", "avi")
AUDIO_FIELDS = ("flac", "wav", "mp3", "ogg", "m4a")
MEDIA_ORDER = IMAGE_FIELDS + VIDEO_FIELDS + AUDIO_FIELDS + ("txt",)
MAX_PIXELS = 89_478_485  # PIL's default decompression-bomb limit


@dataclass(frozen=True, kw_only=True)
class HashTask:
    """Hash one base shard of ``root``; ``kind`` is ``phash``, ``dhash`` or ``exact``."""

    root: str
    storage_options: dict
    shard: ShardInfo
    kind: str = "phash"
    keyframes: str | None = None  # sidecar holding kf.NNN.jpg per video, when present


@dataclass
class ShardHashes:
    """What a hash task returns (small: a few numbers per sample).

    ``keys``/``sha256``/``pixels``/``nbytes`` have one entry per sample, in shard order;
    ``owner`` (int32 into ``keys``) and ``hashes`` (uint64) one entry per perceptual hash;
    ``failed`` maps a key to the reason its medium could not be hashed.
    """

    shard: str
    split: str
    keys: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    pixels: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    owner: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    failed: dict[str, str] = field(default_factory=dict)


def decode_errors() -> tuple[type[BaseException], ...]:
    """What a bad image raises in PIL (truncated, not an image, bomb) or in hashing
    (too small): counted per sample, never fatal."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def image_thumbnail_grey(data: bytes, size: int = 64) -> tuple[np.ndarray, int]:
    """Decode image bytes to a small grey array (longest side about ``size``); also return
    the full-size pixel count.  Raises ``ValueError`` / ``OSError`` on bad bytes."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ValueError(f"too_many_pixels: {w}x{h}")
    im.draft("L", (size, size))
    im = im.convert("L")
    if max(im.size) > 4 * size:
        im.thumbnail((4 * size, 4 * size))
    return np.asarray(im), w * h


def _primary(sample: dict) -> tuple[str | None, bytes]:
    for f in MEDIA_ORDER:
        if f in sample:
            return f, sample[f]
    return None, b""


def _json_pixels(raw: bytes | None) -> int:
    try:
        meta = json.loads(raw) if raw else {}
        return int(meta.get("width") or 0) * int(meta.get("height") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0


def _sidecar_thumbs(ds: Dataset, task: HashTask) -> dict[str, list[bytes]]:
    if not task.keyframes:
        return {}
    out: dict[str, list[bytes]] = {}
    try:
        for s in ds.iter_shard(task.shard, field_set=task.keyframes):
            out[s["__key__"]] = [s[k] for k in sorted(s) if k.startswith("kf.")
                                 and k.endswith(".jpg")]
    except (FileNotFoundError, ShardError):
        return {}  # this shard has no keyframes sidecar (no videos in it)
    return out


def hash_shard(task: HashTask) -> ShardHashes:
    """Hash every sample of one shard (see the module docstring)."""
    from PIL import Image

    from ...tokenizers.phash import HASHES

    fn = HASHES.get(task.kind)
    bad = decode_errors()
    ds = Dataset(task.root, task.storage_options)
    thumbs = _sidecar_thumbs(ds, task) if fn is not None else {}
    out = ShardHashes(shard=task.shard.url, split=task.shard.split)
    owner: list[int] = []
    hashes: list[np.uint64] = []
    for sample in ds.iter_shard(task.shard):
        i = len(out.keys)
        key = sample["__key__"]
        fld, data = _primary(sample)
        out.keys.append(key)
        out.sha256.append(hashlib.sha256(data).hexdigest() if fld else "")
        out.nbytes.append(len(data))
        pixels = 0
        if fn is not None and fld in IMAGE_FIELDS:
            try:
                grey, pixels = image_thumbnail_grey(data)
                hashes.append(fn(grey))
                owner.append(i)
            except bad as e:
                out.failed[key] = "too_many_pixels" if "too_many" in str(e) or isinstance(
                    e, Image.DecompressionBombError) else "undecodable_image"
        elif fn is not None and fld in VIDEO_FIELDS:
            for jpg in thumbs.get(key, []):
                try:
                    grey, _ = image_thumbnail_grey(jpg)
                except bad:
                    continue  # one unreadable thumbnail: the video keeps its other ones
                hashes.append(fn(grey))
                owner.append(i)
            if key not in thumbs:
                out.failed[key] = "no_keyframes"
        out.pixels.append(pixels or _json_pixels(sample.get("json")))
    out.owner = np.asarray(owner, dtype=np.int32)
    out.hashes = np.asarray(hashes, dtype=np.uint64)
    return out
