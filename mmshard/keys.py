"""Deterministic sample keys and field names.

Keys come from a source's identity (its path relative to the source root, or a manifest
key column), never from randomness or time, and match ``[A-Za-z0-9_-]+`` so they are
safe as tar member stems and never contain the dot WebDataset splits on.

A path key is a readable slug (``/`` -> ``__``).  When the slug is lossy (characters
outside ``[A-Za-z0-9_-]``, unicode, dots in folders, ``__`` inside a name, empty or
``..`` parts, too long) it gets ``___`` plus a hash of the full identity, so distinct
identities never share a key: a lossless slug never contains ``___``.

>>> path_key("cats/tabby_01")
'cats__tabby_01'
>>> path_key("cats/Tabby cat.01")
'cats__Tabby_cat_01___k8a06c44a8e93ecf8'
>>> path_key("猫") != path_key("狗")
True
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
    "disambiguate_key",
    "hash_key",
    "media_field",
    "modality_of",
    "path_key",
]

MAX_KEY_LEN = 80  # leaves room for ".<field>" inside a 100-byte USTAR name
IMAGE_EXTS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp",
              "gif": "gif", "tif": "tif", "tiff": "tif", "avif": "avif", "heic": "heic",
              "heif": "heic", "jp2": "jp2", "j2k": "jp2", "jxl": "jxl", "ico": "ico",
              "ppm": "ppm", "pgm": "ppm", "pbm": "ppm", "pnm": "ppm"}
AUDIO_EXTS = {"flac": "flac", "wav": "wav", "mp3": "mp3", "ogg": "ogg", "opus": "opus",
              "m4a": "m4a", "aac": "aac", "aiff": "aiff", "aif": "aiff", "wma": "wma",
              "amr": "amr", "caf": "caf", "weba": "weba", "mka": "mka"}
# MPEG program streams are stored as "vob": webdataset's and Hugging Face's default
# decoders take ".mpg"/".mpeg" members for images (PIL lists them) and fail on video.
VIDEO_EXTS = {"mp4": "mp4", "webm": "webm", "mkv": "mkv", "mov": "mov", "avi": "avi",
              "m4v": "mp4", "mpg": "vob", "mpeg": "vob", "ts": "ts", "m2ts": "m2ts",
              "mts": "mts", "3gp": "3gp", "flv": "flv", "wmv": "wmv", "ogv": "ogv",
              "vob": "vob"}
TEXT_SIDECARS = {"txt", "json", "cls"}

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_CLEAN_PART = re.compile(r"^[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*$")  # no "__", no edge "_"


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


def disambiguate_key(slug: str, identity: str) -> str:
    """``slug`` (cut to fit) + ``___`` + a hash of ``identity``: a key no lossless slug
    can equal, distinct for distinct identities."""
    h = hash_key(identity)
    head = slug[: MAX_KEY_LEN - len(h) - 3].strip("_")
    return f"{head}___{h}" if head else f"___{h}"


def path_key(identity: str) -> str:
    """A readable key from a relative path stem: ``/`` -> ``__``, other characters
    outside ``[A-Za-z0-9_-]`` -> ``_``; a lossy or long slug gets a hash of the full
    identity appended (see the module doc), so distinct identities get distinct keys."""
    parts = identity.split("/")
    slug = "__".join(_BAD.sub("_", p) for p in parts if p not in ("", "."))
    lossless = all(_CLEAN_PART.match(p) for p in parts) and len(slug) <= MAX_KEY_LEN
    return slug if lossless else disambiguate_key(slug, identity)
