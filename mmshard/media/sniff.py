"""Tell a medium by its first bytes (magic numbers), for files whose extension is unknown.

Used at plan time on tree files with an extension that names no medium (``photo.dat``,
``clip.bin``, no extension at all): a file that sniffs as media becomes an input with the
sniffed field; anything else is an ``ignored`` ledger row (reason ``not_media``).  Only
the first :data:`SNIFF_BYTES` bytes are read.

>>> sniff_field(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
'png'
>>> sniff_field(b"RIFF\\x24\\x00\\x00\\x00WAVEfmt ")
'wav'
>>> sniff_field(b"hello world") is None
True
"""

from __future__ import annotations

__all__ = ["SNIFF_BYTES", "sniff_field", "sniff_file"]

SNIFF_BYTES = 200  # one (M2)TS packet plus the next sync byte

# ISO-BMFF brands (bytes 8..12 after "ftyp") that are still images, not video
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def sniff_field(head: bytes) -> str | None:
    """The shard field (``jpg``, ``wav``, ``mp4`` ...) for a file starting with ``head``,
    or None when the bytes name no medium mmshard reads."""
    h = head
    if h[:3] == b"\xff\xd8\xff":
        return "jpg"
    if h[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if h[:4] == b"RIFF":
        return {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}.get(h[8:12])
    if h[:2] == b"BM" and len(h) > 14:
        return "bmp"
    if h[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    if h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand in _AVIF_BRANDS:
            return "avif"
        if brand in _HEIF_BRANDS:
            return "heic"
        if brand.startswith(b"3g"):
            return "3gp"
        if brand == b"qt  ":
            return "mov"
        if brand == b"M4A ":
            return "m4a"
        return "mp4"
    if h[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or h[:4] == b"\xff\x4f\xff\x51":
        return "jp2"
    if h[:2] == b"\xff\x0a" or h[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jxl"
    if h[:4] == b"\x00\x00\x01\x00" and len(h) > 6 and h[4] > 0:
        return "ico"
    if h[:2] in (b"P3", b"P6") and h[2:3] in (b"\n", b" ", b"\r", b"\t"):
        return "ppm"
    if h[:4] == b"fLaC":
        return "flac"
    if h[:4] == b"OggS":
        if b"theora" in h[28:40]:
            return "ogv"
        return "opus" if b"OpusHead" in h[28:40] else "ogg"
    if h[:3] == b"ID3" or (len(h) > 1 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0
                           and h[1] & 0x06 != 0):
        return "mp3"
    if h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if h[:4] == b"caff":
        return "caf"
    if h[:5] == b"#!AMR":
        return "amr"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        if b"webm" in h[:40]:
            return "webm"
        return "mkv"
    if h[:4] == b"\x00\x00\x01\xba":  # MPEG program stream: stored as vob (keys.py)
        return "vob"
    if len(h) > 188 and h[0] == 0x47 and h[188] == 0x47:  # MPEG-TS: a sync byte per packet
        return "ts"
    if len(h) > 196 and h[4] == 0x47 and h[196] == 0x47:  # M2TS: 4-byte timestamp + packet
        return "m2ts"
    if h[:3] == b"FLV":
        return "flv"
    if h[:16] == _ASF_GUID:
        return "wmv"
    return None


def sniff_file(path: str) -> str | None:
    """``sniff_field`` of a local file or fsspec URL's first bytes (None if unreadable)."""
    from ..errors import DataError
    from ..storage import open_input

    try:
        with open_input(path) as f:
            return sniff_field(f.read(SNIFF_BYTES))
    except (OSError, DataError):  # DataError: not a regular file
        return None
