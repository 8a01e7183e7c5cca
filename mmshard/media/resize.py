"""The one resize family: every "what size does this image become?" in mmshard.

Ingest (``mmshard ingest --image-resize``), the Loader's image decode, the VQ / VQ-VAE
tokenizers and NaViT packing all use these policies.  Each is a frozen keyword-only
dataclass registered by name in :data:`RESIZES` with two halves:

- ``plan(height, width) -> ResizePlan``: pure arithmetic on the size alone (no pixels),
  so a loader can bucket or pack by it from the manifest;
- ``apply_pil(img)`` (PIL in, PIL out; also ``policy(img, hint)``, the Loader's decode
  signature) and ``apply(array_or_pil) -> (np.ndarray, plan)`` for numpy callers.

A plan is: scale the image to ``resize_height x resize_width``, cut the window
``(top, left, height, width)`` out of it (the *content*; the whole image unless the
policy crops), then pad bottom/right to ``canvas_height x canvas_width`` (the content
unless the policy pads; ``valid`` records the content region), cut into ``patch``
patches: ``grid``, ``num_patches``, ``num_tokens = num_patches + extra_tokens``.

========================  ================================================================
name (class)              rule
========================  ================================================================
``none`` (NoResize)       unchanged
``fixed`` (FixedResize)   ``size = (height, width)``, aspect ignored
``shortest`` (Shortest)   shortest side = ``size`` (optional ``max_size`` caps the longest)
``longest`` (Longest)     longest side = ``size``
``center_crop``           scale to cover ``size`` (int: square, or (h, w)), centre crop
(CenterCrop)
``pad_multiple``          Qwen-VL: longest side <= ``size`` (0: no bound), pixel budget,
(PadToMultiple)           pad to a multiple of ``patch * merge`` (``mode="resize"``:
                          Qwen2-VL's :func:`smart_resize`, no padding)
``max_patches``           Pix2Struct: the largest grid of at most ``max_patches`` patches
(MaxPatches)              at the image's aspect
========================  ================================================================

Common options: ``patch`` and ``extra_tokens`` (token counts), ``upscale`` (False: an
image smaller than the target passes at its size), ``resample`` (``bicubic`` default,
``lanczos`` ...), ``reducing_gap`` (PIL's two-step downscale) and ``pad_value``.
Sides are rounded with Python's ``round`` and never drop below one pixel.

    >>> Longest(size=512).plan(1600, 2560).grid        # 2560x1600 photo, patch 16
    (20, 32)
    >>> plan = PadToMultiple(patch=14).plan(20, 30)
    >>> (plan.canvas_height, plan.canvas_width), plan.valid
    ((28, 42), (0, 0, 20, 30))
    >>> build_resize("center_crop", size=224).plan(480, 640).to_dict()["grid"]
    [14, 14]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import numpy as np

from .._registry import Registry, config_from_dict, config_to_dict
from ..errors import ConfigError, DataError

__all__ = [
    "RESAMPLE",
    "RESIZES",
    "CenterCrop",
    "FixedResize",
    "Longest",
    "MaxPatches",
    "NoResize",
    "PadToMultiple",
    "Resize",
    "ResizePlan",
    "Shortest",
    "build_resize",
    "resize_from_dict",
    "smart_resize",
]

RESIZES: Registry[type[Resize]] = Registry("resize policy")
RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True, kw_only=True)
class ResizePlan:
    """Where an ``orig_height x orig_width`` image ends up (see the module docstring)."""

    orig_height: int
    orig_width: int
    resize_height: int
    resize_width: int
    top: int
    left: int
    height: int
    width: int
    canvas_height: int
    canvas_width: int
    patch: int
    extra_tokens: int = 0

    @property
    def grid(self) -> tuple[int, int]:
        """Patch ``(rows, cols)`` of the canvas (a remainder is dropped, as a stride-p
        patch embedding does)."""
        return self.canvas_height // self.patch, self.canvas_width // self.patch

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.extra_tokens

    @property
    def valid(self) -> tuple[int, int, int, int]:
        """The content's ``(top, left, height, width)`` inside the canvas."""
        return 0, 0, self.height, self.width

    @property
    def padding_pixels(self) -> int:
        return self.canvas_height * self.canvas_width - self.height * self.width

    @property
    def crops(self) -> bool:
        return (self.top, self.left, self.height, self.width) != (
            0, 0, self.resize_height, self.resize_width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (sizes, grid, counts, valid region)."""
        d = asdict(self)
        d.update(grid=list(self.grid), num_patches=self.num_patches,
                 num_tokens=self.num_tokens, valid=list(self.valid))
        return d


def _positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _check_size(height: int, width: int) -> tuple[int, int]:
    if int(height) <= 0 or int(width) <= 0:
        raise DataError("bad_size", f"image size must be positive, got {height}x{width}")
    return int(height), int(width)


def _scaled(h: int, w: int, scale: float, upscale: bool) -> tuple[int, int]:
    """Both sides times ``scale`` (Python rounding, >= 1 px); identity when not growing
    is asked for and ``scale >= 1``."""
    if scale >= 1 and not upscale:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


@dataclass(frozen=True, kw_only=True)
class Resize:
    """Base of the family: options shared by every policy (see the module docstring)."""

    name: ClassVar[str] = ""
    patch: int = 16
    extra_tokens: int = 0
    upscale: bool = True
    resample: str = "bicubic"
    reducing_gap: float | None = None
    pad_value: int = 0

    def __post_init__(self) -> None:
        _positive("patch", self.patch)
        if not isinstance(self.extra_tokens, int) or self.extra_tokens < 0:
            raise ConfigError(f"extra_tokens must be an int >= 0, got {self.extra_tokens!r}")
        if self.resample not in RESAMPLE:
            raise ConfigError(f"resample {self.resample!r} unknown; allowed: "
                              f"{', '.join(RESAMPLE)}")
        if self.reducing_gap is not None and not self.reducing_gap >= 1.0:
            raise ConfigError(f"reducing_gap must be None or >= 1.0, got {self.reducing_gap}")
        if not isinstance(self.upscale, bool):
            raise ConfigError(f"upscale must be true or false, got {self.upscale!r}")

    # -- arithmetic ------------------------------------------------------------------------
    def _resize_to(self, h: int, w: int) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan(self, height: int, width: int) -> ResizePlan:
        """Where an image of this size ends up (no pixels touched)."""
        h, w = _check_size(height, width)
        rh, rw = self._resize_to(h, w)
        return self._make(h, w, rh, rw)

    def _make(self, h: int, w: int, rh: int, rw: int, *, window: tuple[int, int, int, int]
              | None = None, canvas: tuple[int, int] | None = None) -> ResizePlan:
        top, left, ch, cw = window or (0, 0, rh, rw)
        canvas_h, canvas_w = canvas or (ch, cw)
        return ResizePlan(orig_height=h, orig_width=w, resize_height=rh, resize_width=rw,
                          top=top, left=left, height=ch, width=cw, canvas_height=canvas_h,
                          canvas_width=canvas_w, patch=self.patch,
                          extra_tokens=self.extra_tokens)

    def at_resolution(self, resolution: int) -> Resize:
        """This policy at a nominal side length (a multi-scale schedule's draw)."""
        _positive("resolution", resolution)
        return replace(self, size=resolution)  # type: ignore[call-arg]

    def for_target(self, height: int, width: int) -> Resize:
        """The policy that lands exactly on ``height x width`` (a bucket's size): cover
        and centre-crop, with this policy's filter."""
        return CenterCrop(size=(height, width), patch=self.patch, resample=self.resample,
                          reducing_gap=self.reducing_gap, extra_tokens=self.extra_tokens)

    # -- pixels --------------------------------------------------------------------------------
    def apply_pil(self, img: Any, plan: ResizePlan | None = None) -> Any:
        """Resize, crop and pad one PIL image by ``plan`` (default: ``self.plan``)."""
        from PIL import Image

        if plan is None:
            plan = self.plan(img.height, img.width)
        size = (plan.resize_width, plan.resize_height)
        if img.size != size:
            img = img.resize(size, _filter(self.resample), reducing_gap=self.reducing_gap)
        if plan.crops:
            img = img.crop((plan.left, plan.top, plan.left + plan.width, plan.top + plan.height))
        if (plan.canvas_height, plan.canvas_width) != (plan.height, plan.width):
            bands = len(img.getbands())
            fill = self.pad_value if bands == 1 else (self.pad_value,) * bands
            canvas = Image.new(img.mode, (plan.canvas_width, plan.canvas_height), fill)
            canvas.paste(img, (0, 0))
            img = canvas
        return img

    def __call__(self, img: Any, hint: tuple[int, int] | None = None) -> Any:
        """The Loader's decode signature: ``(PIL image, bucket (h, w) or None) -> PIL``."""
        policy = self if hint is None else self.for_target(*hint)
        return policy.apply_pil(img)

    def apply(self, image: Any) -> tuple[np.ndarray, ResizePlan]:
        """Resize/crop/pad a PIL image or a numpy ``[H, W]`` / ``[H, W, C]`` array (uint8,
        or float32 resized per channel); returns the array (input dtype and channels;
        PIL images become uint8) and the plan.

        >>> arr, plan = PadToMultiple(patch=14).apply(np.zeros((20, 30, 3), np.uint8))
        >>> arr.shape, plan.valid
        ((28, 42, 3), (0, 0, 20, 30))
        """
        from PIL import Image

        arr = _as_array(image)
        plan = self.plan(arr.shape[0], arr.shape[1])
        if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (3, 4)):
            return np.asarray(self.apply_pil(Image.fromarray(arr), plan)), plan
        chans = arr[..., None] if arr.ndim == 2 else arr
        outs = []
        for c in range(chans.shape[2]):
            ch = Image.fromarray(np.ascontiguousarray(chans[..., c], np.float32), mode="F")
            res = np.asarray(self.apply_pil(ch, plan))
            outs.append(np.clip(np.rint(res), 0, 255) if arr.dtype == np.uint8 else res)
        out = np.stack(outs, axis=-1).astype(arr.dtype)
        return (out[..., 0] if arr.ndim == 2 else out), plan

    # -- config ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"policy": name, **options}``; :func:`resize_from_dict` reverses it."""
        return {"policy": self.name, **config_to_dict(self)}


def _filter(name: str) -> Any:
    from PIL import Image

    return getattr(Image.Resampling, name.upper())


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        arr = image
    else:
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise ConfigError(f"image must be a PIL image or numpy array, got {type(image)!r}")
        if image.mode not in ("L", "RGB", "RGBA", "F"):
            image = image.convert("RGB")
        arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError("bad_shape", f"image array must be [H, W] or [H, W, C], got {arr.shape}")
    if arr.dtype not in (np.uint8, np.float32):
        raise DataError("bad_dtype", f"image array must be uint8 or float32, got {arr.dtype}; "
                        "convert it first (e.g. arr.astype(np.float32))")
    return arr


@RESIZES.register("none")
@dataclass(frozen=True, kw_only=True)
class NoResize(Resize):
    """Leave the image as it is.

    >>> NoResize(patch=16).plan(480, 640).grid
    (30, 40)
    """

    name: ClassVar[str] = "none"

    def _resize_to(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def at_resolution(self, resolution: int) -> Resize:
        return self


@RESIZES.register("fixed")
@dataclass(frozen=True, kw_only=True)
class FixedResize(Resize):
    """Every image becomes ``size = (height, width)`` (aspect and ``upscale`` ignored);
    a bucket hint wins when given.

    >>> FixedResize(size=(224, 224), patch=14, extra_tokens=1).plan(480, 640).num_tokens
    257
    """

    name: ClassVar[str] = "fixed"
    size: tuple[int, int] = (224, 224)

    def __post_init__(self) -> None:
        super().__post_init__()
        size = self.size if isinstance(self.size, (tuple, list)) else (self.size, self.size)
        object.__setattr__(self, "size", tuple(size))
        if len(self.size) != 2:
            raise ConfigError(f"fixed size must be (height, width), got {self.size!r}")
        for s in self.size:
            _positive("fixed size", s)

    def _resize_to(self, h: int, w: int) -> tuple[int, int]:
        return self.size

    def at_resolution(self, resolution: int) -> Resize:
        _positive("resolution", resolution)
        return replace(self, size=(resolution, resolution))

    def for_target(self, height: int, width: int) -> Resize:
        return replace(self, size=(height, width))


@RESIZES.register("shortest")
@dataclass(frozen=True, kw_only=True)
class Shortest(Resize):
    """Shortest side becomes ``size``, aspect kept; ``max_size`` (optional) caps the
    longest side (torchvision's ``Resize(max_size=)`` rule).

    >>> Shortest(size=224).plan(480, 640).width
    299
    """

    name: ClassVar[str] = "shortest"
    size: int = 224
    max_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("size", self.size)
        _positive("max_size", self.max_size, allow_none=True)
        if self.max_size is not None and self.max_size < self.size:
            raise ConfigError(f"max_size ({self.max_size}) must be >= size ({self.size})")

    def _resize_to(self, h: int, w: int) -> tuple[int, int]:
        scale = self.size / min(h, w)
        if self.max_size is not None and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        return _scaled(h, w, scale, self.upscale)


@RESIZES.register("longest")
@dataclass(frozen=True, kw_only=True)
class Longest(Resize):
    """Longest side becomes ``size``, aspect kept.

    >>> Longest(size=320).plan(480, 640).resize_height
    240
    """

    name: ClassVar[str] = "longest"
    size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("size", self.size)

    def _resize_to(self, h: int, w: int) -> tuple[int, int]:
        return _scaled(h, w, self.size / max(h, w), self.upscale)


@RESIZES.register("center_crop")
@dataclass(frozen=True, kw_only=True)
class CenterCrop(Resize):
    """Scale so the image covers ``size`` (an int: square; or ``(height, width)``), then
    cut the centre.  With ``upscale=False`` an image smaller than the target is not grown:
    the largest centred window of the target's aspect is cut instead.

    >>> plan = CenterCrop(size=224).plan(480, 640)
    >>> (plan.resize_height, plan.resize_width), (plan.top, plan.left, plan.height, plan.width)
    ((224, 299), (0, 37, 224, 224))
    """

    name: ClassVar[str] = "center_crop"
    size: int | tuple[int, int] = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.size, list):
            object.__setattr__(self, "size", tuple(self.size))
        for s in (self.size if isinstance(self.size, tuple) else (self.size,)):
            _positive("center_crop size", s)
        if isinstance(self.size, tuple) and len(self.size) != 2:
            raise ConfigError(f"center_crop size must be an int or (height, width), "
                              f"got {self.size!r}")

    @property
    def target(self) -> tuple[int, int]:
        return self.size if isinstance(self.size, tuple) else (self.size, self.size)

    def plan(self, height: int, width: int) -> ResizePlan:
        h, w = _check_size(height, width)
        th, tw = self.target
        scale = max(tw / w, th / h)
        rh, rw = _scaled(h, w, scale, self.upscale)
        if (rh, rw) != (h, w):  # guard float rounding: the scaled image covers the target
            rh, rw = max(th, rh), max(tw, rw)
        if rh >= th and rw >= tw:
            ch, cw = th, tw
        elif th == tw:
            ch = cw = min(th, rh, rw)
        else:
            f = min(rh / th, rw / tw)
            ch, cw = max(1, min(rh, round(th * f))), max(1, min(rw, round(tw * f)))
        return self._make(h, w, rh, rw, window=((rh - ch) // 2, (rw - cw) // 2, ch, cw))

    def for_target(self, height: int, width: int) -> Resize:
        return replace(self, size=(height, width))


def smart_resize(height: int, width: int, *, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``: both sides multiples of ``factor``, pixels in budget.

    Each side is rounded to the *nearest* multiple of ``factor`` (at least ``factor``);
    over ``max_pixels`` both sides are scaled by ``sqrt(h*w/max_pixels)`` and rounded
    *down*; under ``min_pixels`` scaled up and rounded *up*.  Aspect ratios over 200 are
    refused (as Qwen2-VL does).

    >>> smart_resize(480, 640)
    (476, 644)
    """
    _check_size(height, width)
    if max(height, width) / min(height, width) > 200:
        raise DataError("extreme_aspect", f"aspect ratio of {height}x{width} is over 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


_PAD_MODES = ("pad", "resize")


@RESIZES.register("pad_multiple")
@dataclass(frozen=True, kw_only=True)
class PadToMultiple(Resize):
    """Keep the aspect; make the canvas a multiple of ``factor = patch * merge``.

    ``mode="pad"`` (default): scale so the longest side is at most ``size`` (0: no bound),
    then into the pixel budget (``sqrt(max_pixels / (h*w))`` when over it,
    ``sqrt(min_pixels / (h*w))`` when under), then pad bottom/right to the next multiple
    of ``factor``; ``max_pixels`` bounds the *canvas*: when padding pushes it over, the
    scale shrinks until it fits.  The valid region is the plan's ``valid``.  Aspect error
    from rounding alone: ``|ar_out / ar_in - 1| <= 1 / (min(height, width) - 1)``.

    ``mode="resize"``: Qwen2-VL's :func:`smart_resize` (no padding; each side rounded to
    the nearest multiple); ``min_pixels``/``max_pixels`` default to Qwen2-VL's.

    >>> PadToMultiple(patch=14, merge=2, mode="resize", max_pixels=448 * 448).plan(1080, 1920).grid
    (24, 42)
    """

    name: ClassVar[str] = "pad_multiple"
    patch: int = 14
    size: int = 0
    merge: int = 1
    mode: str = "pad"
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("merge", self.merge)
        if not isinstance(self.size, int) or self.size < 0:
            raise ConfigError(f"pad_multiple size must be an int >= 0 (0: no bound), "
                              f"got {self.size!r}")
        if self.mode not in _PAD_MODES:
            raise ConfigError(f"pad_multiple mode {self.mode!r} unknown; allowed: "
                              f"{', '.join(_PAD_MODES)}")
        _positive("min_pixels", self.min_pixels, allow_none=True)
        _positive("max_pixels", self.max_pixels, allow_none=True)
        f2 = self.factor * self.factor
        if self.max_pixels is not None and self.max_pixels < f2:
            raise ConfigError(f"max_pixels ({self.max_pixels}) must be >= (patch*merge)^2 "
                              f"= {f2}: no canvas can fit")
        if (self.min_pixels is not None and self.max_pixels is not None
                and self.min_pixels > self.max_pixels):
            raise ConfigError(f"min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")

    @property
    def factor(self) -> int:
        return self.patch * self.merge

    def plan(self, height: int, width: int) -> ResizePlan:
        h, w = _check_size(height, width)
        f = self.factor
        scale = self.size / max(h, w) if self.size else 1.0
        if self.mode == "resize":
            sh, sw = _scaled(h, w, scale, self.upscale)
            oh, ow = smart_resize(
                sh, sw, factor=f,
                min_pixels=self.min_pixels if self.min_pixels is not None else 56 * 56,
                max_pixels=self.max_pixels if self.max_pixels is not None else 14 * 14 * 4 * 1280)
            return self._make(h, w, oh, ow)
        if self.max_pixels is not None and h * w * scale * scale > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (h * w))
        elif self.min_pixels is not None and h * w * scale * scale < self.min_pixels:
            scale = math.sqrt(self.min_pixels / (h * w))
        while True:
            oh, ow = _scaled(h, w, scale, self.upscale)
            ch, cw = -(-oh // f) * f, -(-ow // f) * f
            if self.max_pixels is None or ch * cw <= self.max_pixels or (oh == 1 and ow == 1):
                break
            # the padding pushed the canvas over budget: shrink the content a little
            scale = min(scale, oh / h) * min(0.999, math.sqrt(self.max_pixels / (ch * cw)))
        return self._make(h, w, oh, ow, canvas=(ch, cw))


@RESIZES.register("max_patches")
@dataclass(frozen=True, kw_only=True)
class MaxPatches(Resize):
    """Pix2Struct: the largest ``rows x cols`` grid within ``max_patches`` at the image's
    aspect; the image is resized to ``rows*p x cols*p`` (always: ``upscale`` ignored).

    ``scale = sqrt(max_patches * (p/h) * (p/w))``, ``rows = max(min(floor(scale*h/p),
    max_patches), 1)``, ``cols`` likewise; ``rows * cols <= max_patches`` always.  Aspect
    error from the floors: ``|ar_out / ar_in - 1| <= 1 / (min(rows, cols) - 1)`` when
    neither side is clamped.  :meth:`sequence_padding` gives Pix2Struct's sequence pad.

    >>> MaxPatches(max_patches=2048, patch=16).plan(1080, 1920).grid
    (33, 60)
    """

    name: ClassVar[str] = "max_patches"
    max_patches: int = 2048

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("max_patches", self.max_patches)

    def plan(self, height: int, width: int) -> ResizePlan:
        h, w = _check_size(height, width)
        p, n = self.patch, self.max_patches
        scale = math.sqrt(n * (p / h) * (p / w))
        rows = max(min(math.floor(scale * h / p), n), 1)
        cols = max(min(math.floor(scale * w / p), n), 1)
        while rows * cols > n:  # float rounding guard; real maths never enters
            if rows >= cols:
                rows -= 1
            else:
                cols -= 1
        return self._make(h, w, rows * p, cols * p)

    def sequence_padding(self, plan: ResizePlan) -> int:
        """Patch slots left empty when the sequence is padded to ``max_patches``."""
        return self.max_patches - plan.num_patches

    def at_resolution(self, resolution: int) -> Resize:
        """``resolution`` is a square side: the budget becomes ``(resolution // patch)**2``."""
        _positive("resolution", resolution)
        return replace(self, max_patches=max(1, (resolution // self.patch) ** 2))


def build_resize(name: str, **options: Any) -> Resize:
    """A policy by registry name; unknown names or options are a ConfigError listing the
    allowed ones.

    >>> build_resize("longest", size=512, upscale=False).plan(100, 80).resize_height
    100
    """
    return config_from_dict(RESIZES.get(name), dict(options))


def resize_from_dict(data: dict[str, Any]) -> Resize:
    """Build a policy from :meth:`Resize.to_dict` output (``policy`` names the entry).

    >>> resize_from_dict({"policy": "shortest", "size": 256}).plan(100, 200).width
    512
    """
    if isinstance(data, Resize):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"a resize policy must be a mapping with 'policy', got {data!r}")
    data = dict(data)
    name = data.pop("policy", None)
    if not isinstance(name, str):
        raise ConfigError("resize policy dict needs a 'policy' key; allowed: "
                          f"{', '.join(RESIZES.names())}")
    if name == "fixed" and "size" not in data and {"height", "width"} & set(data):
        data["size"] = (data.pop("height", 224), data.pop("width", 224))  # mmshard <= 0.x
    return build_resize(name, **data)


# The Loader's historical name for cover-and-centre-crop (``decode.ShortestSideCrop``).
RESIZES.register("shortest_side_crop")(CenterCrop)
