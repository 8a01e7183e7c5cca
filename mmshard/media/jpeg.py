"""Fast image decode for the Loader: libjpeg-turbo with DCT-domain scaling, an
antialiased resize that matches PIL's, and the resize policy's crop and pad.

``decode_resized(data, policy)`` is what the Loader's image decode calls for a
:mod:`mmshard.media.resize` policy; it returns the same (H, W, 3) uint8 pixels as
``policy.apply_pil(Image.open(data).convert("RGB"))`` (the PIL reference) within the
stated tolerance, several times faster:

1. JPEG bytes are decoded by libjpeg-turbo through ``simplejpeg`` (a wheel with the
   library inside) straight into a numpy array, at the smallest DCT scale
   ``1/s`` (s = 1, 2, 4, 8) whose result still has at least ``dct_factor`` (3) times
   the pixels per side the policy resizes to.  Other formats (and JPEGs simplejpeg
   refuses, such as CMYK) are decoded by PIL at full size.
2. The resize runs on torch's uint8 antialiased kernel
   (``interpolate(..., antialias=True)``, the same separable filters as PIL's
   ``bicubic`` / ``bilinear``); other filters (``lanczos``, ``box``, ``nearest``,
   ``hamming``) and ``reducing_gap`` run through PIL on the decoded array.
3. The crop window and padding of the policy's plan are applied to the array.

Tolerance (a test checks it on photo-like images; bench/loader.py reports it on 3,000
real photos): PSNR >= 40 dB against the PIL reference for every image.  Decoding at
full size gives about 55-70 dB (the two resize kernels round differently); the DCT
scale is what brings it towards 40, so ``dct_factor=0`` turns DCT scaling off and
``dct_factor`` larger than 3 trades speed for more margin.

>>> import io; from PIL import Image
>>> from mmshard.media.resize import CenterCrop
>>> buf = io.BytesIO(); Image.new("RGB", (640, 480), (200, 30, 40)).save(buf, "JPEG")
>>> decode_resized(buf.getvalue(), CenterCrop(size=224)).shape
(224, 224, 3)
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..errors import DataError
from .resize import Resize, ResizePlan

__all__ = ["DCT_FACTOR", "backend", "decode_resized", "decode_rgb", "jpeg_size",
           "resize_array"]

DCT_FACTOR = 3.0  # decode at >= 3x the resized size per side: PSNR >= 40 dB vs full decode
_TORCH_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}
_SOI = b"\xff\xd8\xff"


def _simplejpeg() -> Any:
    try:
        import simplejpeg
    except ImportError:  # optional: PIL decodes everything without it
        return None
    return simplejpeg


def backend() -> str:
    """``"simplejpeg"`` when libjpeg-turbo decodes JPEGs directly, else ``"pil"``."""
    return "simplejpeg" if _simplejpeg() is not None else "pil"


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of JPEG bytes from the header alone; None when the bytes are
    not a JPEG simplejpeg can read (callers fall back to PIL)."""
    sj = _simplejpeg()
    if sj is None or not data.startswith(_SOI):
        return None
    try:
        h, w, _, _ = sj.decode_jpeg_header(data)
    except ValueError:
        return None
    return int(h), int(w)


def _dct_scale(h: int, w: int, need_h: int, need_w: int, factor: float) -> int:
    """The largest s in 1, 2, 4, 8 with ceil(side / s) >= factor * needed side."""
    s = 1
    if factor <= 0:
        return 1
    while s < 8 and -(-h // (2 * s)) >= factor * need_h and -(-w // (2 * s)) >= factor * need_w:
        s *= 2
    return s


def decode_rgb(data: bytes, *, at_least: tuple[int, int] | None = None,
               dct_factor: float = DCT_FACTOR, max_pixels: int | None = None) -> np.ndarray:
    """JPEG (or any PIL-readable) bytes -> (H, W, 3) uint8 RGB.

    ``at_least=(h, w)``: JPEGs are decoded at the smallest power-of-two DCT scale that
    keeps ``dct_factor`` times that many pixels per side (no scaling when None).
    Raises :class:`~mmshard.errors.DataError` (``corrupt_image``, ``too_many_pixels``).

    >>> import io; from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (800, 600), "blue").save(buf, "JPEG")
    >>> decode_rgb(buf.getvalue(), at_least=(60, 80)).shape   # 1/2 scale: 400x300 >= 3x
    (300, 400, 3)
    """
    size = jpeg_size(data)
    if size is not None:
        h, w = size
        _check_pixels(h, w, max_pixels)
        s = 1 if at_least is None else _dct_scale(h, w, *at_least, dct_factor)
        try:
            return _simplejpeg().decode_jpeg(data, colorspace="RGB", min_height=-(-h // s),
                                             min_width=-(-w // s))
        except ValueError:  # CMYK, lossless, damaged: PIL decides (and names the error)
            pass
    return _pil_rgb(data, max_pixels)


def _check_pixels(h: int, w: int, max_pixels: int | None) -> None:
    if max_pixels is not None and h * w > max_pixels:
        raise DataError("too_many_pixels", f"{w}x{h} image")


def _pil_rgb(data: bytes, max_pixels: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(im.height, im.width, max_pixels)
            return np.array(im.convert("RGB"))  # writable: torch wraps it without a copy
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError("corrupt_image", str(e)) from e


def resize_array(arr: np.ndarray, policy: Resize, plan: ResizePlan) -> np.ndarray:
    """Resize (H, W, 3) uint8 ``arr`` to the plan's size with the policy's filter, then
    crop and pad by the plan; ``arr`` may be a DCT-scaled decode of the planned image
    (the plan's sizes are in original pixels, the filter maps the whole array onto
    them).

    >>> from mmshard.media.resize import Shortest
    >>> a = np.zeros((300, 400, 3), np.uint8)
    >>> resize_array(a, Shortest(size=150), Shortest(size=150).plan(600, 800)).shape
    (150, 200, 3)
    """
    size = (plan.resize_height, plan.resize_width)
    if arr.shape[:2] != size:
        mode = _TORCH_MODES.get(policy.resample)
        if mode is not None and policy.reducing_gap is None:
            arr = _torch_resize(arr, size, mode)
        else:
            from PIL import Image

            from .resize import _filter

            arr = np.array(Image.fromarray(arr).resize(
                (size[1], size[0]), _filter(policy.resample), reducing_gap=policy.reducing_gap))
    if plan.crops:
        arr = arr[plan.top:plan.top + plan.height, plan.left:plan.left + plan.width]
    if (plan.canvas_height, plan.canvas_width) != (plan.height, plan.width):
        canvas = np.full((plan.canvas_height, plan.canvas_width, arr.shape[2]),
                         policy.pad_value, np.uint8)
        canvas[:plan.height, :plan.width] = arr
        arr = canvas
    return arr


def _torch_resize(arr: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    import torch

    if not (arr.flags.c_contiguous and arr.flags.writeable):
        arr = np.array(arr)
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]  # a channels-last NCHW view
    out = torch.nn.functional.interpolate(t, size=size, mode=mode, antialias=True,
                                          align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def decode_resized(data: bytes, policy: Resize, *, dct_factor: float = DCT_FACTOR,
                   max_pixels: int | None = None) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 pixels of ``policy`` (see the module docstring for
    the steps and the tolerance against PIL)."""
    size = jpeg_size(data)
    if size is not None:
        plan = policy.plan(*size)
        arr = decode_rgb(data, at_least=(plan.resize_height, plan.resize_width),
                         dct_factor=dct_factor, max_pixels=max_pixels)
    else:
        arr = _pil_rgb(data, max_pixels)
        plan = policy.plan(arr.shape[0], arr.shape[1])
    return resize_array(arr, policy, plan)
