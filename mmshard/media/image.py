"""Image validation, probing and re-encoding for ingest.

``process_image(data, options)`` takes the original bytes and returns what goes into the
shard: the original bytes (``format="keep"`` and no resize; still fully decoded once to
prove they are not truncated) or re-encoded bytes after EXIF orientation and a resize
policy.  JPEG draft mode (DCT-domain downscale at decode time, never below the size the
policy needs) is the main speed lever and is on by default.

>>> import io; from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (640, 480), "red").save(buf, "JPEG")
>>> out = process_image(buf.getvalue(), ImageOptions(resize="shortest", size=240, format="jpg"))
>>> out.field, out.facts["width"], out.facts["height"]
('jpg', 320, 240)
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, DataError
from .resize import CenterCrop, Longest, NoResize, PadToMultiple, Resize, Shortest

__all__ = ["RESIZE_POLICIES", "ImageOptions", "ProcessedMedia", "process_image",
           "register_image_plugins", "target_size"]

RESIZE_POLICIES = ("none", "shortest", "longest", "center_crop", "pad_multiple")
FORMATS = ("keep", "jpg", "webp", "png")
VERIFY_MODES = ("decode", "structure")
_PIL_TO_FIELD = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                 "TIFF": "tif", "MPO": "jpg", "AVIF": "avif", "HEIF": "heic",
                 "JPEG2000": "jp2", "JXL": "jxl", "ICO": "ico", "PPM": "ppm"}
_PLUGINS: list[str] = []  # Pillow plug-ins registered by register_image_plugins()
_PLUGINS_LOCK = threading.Lock()


def register_image_plugins() -> tuple[str, ...]:
    """Register the optional Pillow plug-ins once per process: pillow-heif (HEIC/HEIF)
    and pillow-jxl-plugin (JPEG XL).  AVIF, JPEG 2000, ICO and PPM are Pillow built-ins.
    Returns the plug-ins that loaded; a missing one means those files fail as
    ``not_an_image`` with a hint in the detail."""
    if not _PLUGINS:
        with _PLUGINS_LOCK:  # a task's threads: none opens an image before this is done
            if not _PLUGINS:
                _PLUGINS.extend(["", *_load_plugins()])  # "": tried; filled in one step
    return tuple(x for x in _PLUGINS if x)


def _load_plugins() -> list[str]:
    loaded = []
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        loaded.append("pillow_heif")
    except ImportError:
        pass
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL opener on import)

        loaded.append("pillow_jxl")
    except ImportError:
        pass
    return loaded


_FIELD_TO_PIL = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True, kw_only=True)
class ImageOptions:
    """How images are validated and stored.

    resize: none | shortest (shortest side = size) | longest (longest side = size) |
        center_crop (shortest side = size, then a size x size centre crop) |
        pad_multiple (longest side <= size when size > 0, then pad right/bottom to a
        multiple of ``patch``; the valid region is recorded).
    format: keep (original bytes when no resize) | jpg | webp | png.
    upscale: allow making images bigger than they are (off: small images pass as is).
    verify: how kept bytes (format keep, no resize) are checked: decode (default: a full
        decode, at 1/8 scale for JPEG, catches any corruption) | structure (header
        parsed plus the format's end marker: JPEG EOI, PNG IEND, WebP RIFF size; about 4x
        faster for disk-speed repacks, but a file corrupt in the middle with an intact end
        passes).
    """

    resize: str = "none"
    size: int = 0
    patch: int = 14
    format: str = "keep"
    quality: int = 95
    min_size: int = 0
    max_pixels: int = 89_478_485  # PIL's default decompression-bomb limit
    jpeg_draft: bool = True
    upscale: bool = False
    verify: str = "decode"

    def __post_init__(self) -> None:
        for name in ("size", "min_size", "patch", "quality", "max_pixels"):
            v = getattr(self, name, 0)
            if isinstance(v, bool) or not isinstance(v, int) or (name != "quality" and v < 0):
                raise ConfigError(f"image {name} must be an int >= 0, got {v!r}")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"image resize {self.resize!r} unknown; allowed: "
                              f"{', '.join(RESIZE_POLICIES)}")
        if self.format not in FORMATS:
            raise ConfigError(f"image format {self.format!r} unknown; allowed: "
                              f"{', '.join(FORMATS)}")
        if self.resize in ("shortest", "longest", "center_crop") and self.size <= 0:
            raise ConfigError(f"image resize {self.resize!r} needs size > 0 (--image-size)")
        if self.resize == "pad_multiple" and self.patch <= 0:
            raise ConfigError(f"pad_multiple needs patch > 0, got {self.patch}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"image quality must be in 1..100, got {self.quality}")
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"image verify {self.verify!r} unknown; allowed: "
                              f"{', '.join(VERIFY_MODES)}")
        if self.max_pixels <= 0 or self.min_size < 0:
            raise ConfigError("max_pixels must be > 0 and min_size >= 0")

    @property
    def reencodes(self) -> bool:
        return self.resize != "none" or self.format != "keep"

    def resize_policy(self) -> Resize:
        """The :mod:`mmshard.media.resize` policy this CLI-level choice stands for
        (Lanczos with PIL's two-step ``reducing_gap=3``, the ingest filter)."""
        common = {"upscale": self.upscale, "resample": "lanczos", "reducing_gap": 3.0}
        if self.resize == "none":
            return NoResize()
        if self.resize == "pad_multiple":
            return PadToMultiple(patch=self.patch, size=self.size, **common)
        cls = {"shortest": Shortest, "longest": Longest, "center_crop": CenterCrop}[self.resize]
        return cls(size=self.size, **common)


@dataclass(frozen=True)
class ProcessedMedia:
    """What one medium contributes to a sample: its field, stored bytes and facts."""

    field: str
    data: bytes
    facts: dict[str, Any] = field(default_factory=dict)


def target_size(w: int, h: int, opts: ImageOptions) -> tuple[int, int]:
    """Size after the resize step (before any crop/pad), from the oriented size alone.

    >>> target_size(640, 480, ImageOptions(resize="longest", size=320))
    (320, 240)
    """
    plan = opts.resize_policy().plan(h, w)
    return plan.resize_width, plan.resize_height


def _open(data: bytes, opts: ImageOptions):
    from PIL import Image, UnidentifiedImageError

    register_image_plugins()
    if not data:
        raise DataError("empty_file", "zero-byte image")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and \
            int.from_bytes(data[4:8], "little") + 8 > len(data):
        raise DataError("truncated", "WebP is shorter than its RIFF header says")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise DataError("too_many_pixels", str(e)) from e
        except UnidentifiedImageError as e:
            raise DataError("not_an_image",
                            "cannot identify image data (wrong extension or not an image)") from e
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
            reason = "truncated" if "truncated" in str(e) else "corrupt_image"
            raise DataError(reason, f"cannot parse image header: {e}") from e
    w, h = im.size
    if w * h > opts.max_pixels:
        raise DataError("too_many_pixels",
                        f"{w}x{h} = {w * h} pixels exceeds max_pixels={opts.max_pixels}")
    return im


def _load(im) -> None:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im.load()
        except OSError as e:
            msg = str(e)
            reason = "truncated" if "truncated" in msg or "broken data" in msg else "corrupt_image"
            raise DataError(reason, f"image does not decode: {msg}") from e
        except (SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError("corrupt_image", f"image does not decode: {e}") from e


def _check_structure(data: bytes, fmt: str) -> None:
    """End-marker checks that catch truncation without decoding (``verify=structure``)."""
    if fmt == "jpg":
        tail = data[-1024:].rstrip(b"\x00")
        if not tail.endswith(b"\xff\xd9"):
            raise DataError("truncated", "JPEG does not end with the EOI marker (FF D9)")
    elif fmt == "png":
        if data[-12:-8] != b"\x00\x00\x00\x00" or data[-8:-4] != b"IEND":
            raise DataError("truncated", "PNG does not end with the IEND chunk")
    elif fmt == "webp":
        size = int.from_bytes(data[4:8], "little") if len(data) >= 12 else -1
        if data[:4] != b"RIFF" or size + 8 != len(data):
            raise DataError("truncated", f"WebP RIFF size {size + 8} != file size {len(data)}")


def process_image(data: bytes, opts: ImageOptions) -> ProcessedMedia:
    """Validate one image and return the bytes to store (see module docstring).

    Raises DataError with reason ``empty_file``, ``not_an_image``, ``corrupt_image``,
    ``truncated``, ``too_many_pixels`` or ``too_small``.
    """
    from PIL import ImageOps

    im = _open(data, opts)
    fmt = _PIL_TO_FIELD.get(im.format or "", "")
    if not fmt:
        raise DataError("unsupported_format", f"image format {im.format!r} is not supported")
    w0, h0 = im.size
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        # PIL reads metadata chunks (PNG eXIf, TIFF IFDs) here: a cut file fails now
        raise DataError("truncated" if isinstance(e, (EOFError, struct.error)) or
                        "truncated" in str(e) else "corrupt_image",
                        f"cannot read image metadata: {e}") from e
    rotated = orientation in (5, 6, 7, 8)
    w, h = (h0, w0) if rotated else (w0, h0)
    if min(w, h) < opts.min_size:
        raise DataError("too_small", f"{w}x{h} is below min_size={opts.min_size}")
    facts: dict[str, Any] = {"width": w, "height": h, "format": fmt}
    if orientation != 1:
        facts["exif_orientation"] = orientation

    if not opts.reencodes and opts.verify == "structure" and fmt in ("jpg", "png", "webp"):
        _check_structure(data, fmt)
        return ProcessedMedia(fmt, data, facts)
    if not opts.reencodes:
        # Prove the bytes decode completely; draft keeps it cheap (1/8 scale DCT decode
        # still reads every entropy-coded block, so truncation is caught).
        if im.format == "JPEG" and opts.jpeg_draft:
            im.draft("RGB", (max(1, w0 // 8), max(1, h0 // 8)))
        _load(im)
        return ProcessedMedia(fmt, data, facts)

    policy = opts.resize_policy()
    plan = policy.plan(h, w)
    tw, th = plan.resize_width, plan.resize_height
    if im.format == "JPEG" and opts.jpeg_draft and (tw < w or th < h):
        req = (th, tw) if rotated else (tw, th)
        im.draft("RGB", req)  # picks the largest DCT scale that stays >= req
    _load(im)
    im = ImageOps.exif_transpose(im) if orientation != 1 else im
    out_field = fmt if opts.format == "keep" else opts.format
    if out_field not in _FIELD_TO_PIL:
        out_field = "jpg"
    keep_alpha = out_field in ("png", "webp") and (
        im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info))
    target_mode = "RGBA" if keep_alpha else "RGB"
    if im.mode != target_mode:
        im = im.convert(target_mode)
    im = policy.apply_pil(im, plan)  # (draft mode may hold a smaller decode: it resizes)
    if plan.padding_pixels:
        facts["valid_width"], facts["valid_height"] = plan.width, plan.height
    buf = io.BytesIO()
    pil_fmt = _FIELD_TO_PIL[out_field]
    if pil_fmt == "JPEG":
        im.save(buf, pil_fmt, quality=opts.quality)
    elif pil_fmt == "WEBP":
        im.save(buf, pil_fmt, quality=opts.quality, method=4)
    else:
        im.save(buf, pil_fmt)
    facts.update(orig_width=w, orig_height=h, width=im.width, height=im.height,
                 format=out_field)
    return ProcessedMedia(out_field, buf.getvalue(), facts)
