"""Deterministic sample keys and field names.

Keys come from a source's identity (its path relative to the source root, or a manifest
key column), never from randomness or time, and match ``[A-Za-z0-9_-]+`` so they are
safe as tar member stems and never contain the dot WebDataset splits on.

>>> path_key("cats/Tabby cat.01")
'cats__Tabby_cat_01'
>>> len(path_key("x" * 300)) <= MAX_KEY_LEN
True
>>> hash_key("s3://bucket/a.jpg")
'kc17f3f669d533670'
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "AUDIO_EXTS",
    "IMAGE_EXTS",
    "KEY_RE",
    "MAX_KEY_LEN",
    "TEXT_SIDECARS",
    "VIDEO_EXTS",
    "hash_key",
    "media_field",
    "modality_of",
    "path_key",
]

MAX_KEY_LEN = 80  # leaves room for ".<field>" inside a 100-byte USTAR name
IMAGE_EXTS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp",
              "gif": "gif", "tif": "tif", "tiff": "tif"}
AUDIO_EXTS = {"flac": "flac", "wav": "wav", "mp3": "mp3", "ogg": "ogg", "opus": "opus",
              "m4a": "m4a", "aac": "aac"}
VIDEO_EXTS = {"mp4": "mp4", "webm": "webm", "mkv": "mkv", "mov": "mov", "avi": "avi",
              "m4v": "mp4"}
TEXT_SIDECARS = {"txt", "json", "cls"}

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def media_field(ext: str) -> str | None:
    """The shard field for a file extension (``"JPEG"`` -> ``"jpg"``), None if not media."""
    e = ext.lower().lstrip(".")
    return IMAGE_EXTS.get(e) or AUDIO_EXTS.get(e) or VIDEO_EXTS.get(e)


def modality_of(field: str) -> str:
    """``"jpg"`` -> ``"image"``; ``"flac"`` -> ``"audio"``; ``"mp4"`` -> ``"video"``."""
    if field in IMAGE_EXTS.values():
        return "image"
    if field in AUDIO_EXTS.values():
        return "audio"
    if field in VIDEO_EXTS.values():
        return "video"
    return "text"


def hash_key(identity: str) -> str:
    """A 17-character key from a hash of the identity (the ``hash`` key scheme)."""
    return "k" + hashlib.sha1(identity.encode("utf-8")).hexdigest()[:16]


def path_key(identity: str) -> str:
    """A readable key from a relative path stem: ``/`` -> ``__``, other characters
    outside ``[A-Za-z0-9_-]`` -> ``_``; long ones keep a prefix plus a hash."""
    parts = [p for p in identity.replace("\\", "/").split("/") if p not in ("", ".")]
    key = "__".join(_BAD.sub("_", p) for p in parts) or "_"
    if len(key) > MAX_KEY_LEN:
        key = key[: MAX_KEY_LEN - 18] + "_" + hash_key(identity)
    return key
