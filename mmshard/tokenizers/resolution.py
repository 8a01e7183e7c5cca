"""Resolution policies, patch layouts, NaViT packing plans and a multi-scale curriculum.

Every policy answers "what size does this image become and how many patches does the
model see?" from ``(height, width)`` alone, so a loader can bucket by it without decoding
pixels (``policy.plan(h, w)``); ``policy.apply(image)`` does the resize/pad when pixels
are wanted (PIL BICUBIC, padding on the bottom/right, the valid region recorded).

Policies (registry ``RESOLUTION_POLICIES``; each is its own frozen config):

- ``fixed`` (:class:`FixedSize`): every image becomes ``height x width`` (aspect ignored).
- ``shortest`` (:class:`ShortestSide`): shortest side = ``size``, aspect kept; the patch
  grid is ``floor(h/p) x floor(w/p)`` (a stride-p patch embedding drops the remainder).
- ``pad_multiple`` (:class:`PadToMultiple`): the Qwen-VL habit; aspect kept, optional
  ``min_pixels``/``max_pixels`` budget, then either padded up to a multiple of
  ``patch * merge`` (``mode="pad"``) or resized to the nearest multiple
  (``mode="resize"``, exactly Qwen2-VL's ``smart_resize``).
- ``max_patches`` (:class:`MaxPatches`): Pix2Struct's variable-resolution rule.

The ViT-L/14 classic: 224 x 224 in patches of 14 is 16 x 16 = 256 patches, plus CLS = 257::

    >>> plan = FixedSize(height=224, width=224, patch=14, extra_tokens=1).plan(480, 640)
    >>> plan.grid, plan.num_patches, plan.num_tokens
    ((16, 16), 256, 257)

Packing (:func:`plan_packing`) and the curriculum (:class:`MultiScaleSchedule`) build on
the plans. No pixels, torch or PIL are touched at import time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from .._registry import Registry, config_from_dict, config_to_dict
from ..errors import ConfigError, DataError

__all__ = [
    "RESOLUTION_POLICIES",
    "CurriculumStage",
    "FixedSize",
    "MaxPatches",
    "MultiScaleConfig",
    "MultiScaleSchedule",
    "PackedSequence",
    "PackingPlan",
    "PadToMultiple",
    "ResolutionPlan",
    "ResolutionPolicy",
    "ShortestSide",
    "plan_packing",
    "smart_resize",
]

RESOLUTION_POLICIES: Registry[type[ResolutionPolicy]] = Registry("resolution policy")


@dataclass(frozen=True)
class ResolutionPlan:
    """Where an ``orig_height x orig_width`` image ends up.

    The image is resized to ``height x width`` (the *content*), placed at the top-left of a
    ``canvas_height x canvas_width`` canvas (padding bottom/right; equal to the content when
    the policy does not pad), and cut into ``grid = (rows, cols)`` patches of ``patch``.
    ``num_tokens = num_patches + extra_tokens`` (CLS / register tokens).
    ``valid`` is the content's ``(top, left, height, width)`` inside the canvas.
    """

    orig_height: int
    orig_width: int
    height: int
    width: int
    canvas_height: int
    canvas_width: int
    patch: int
    extra_tokens: int = 0

    @property
    def grid(self) -> tuple[int, int]:
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
        return 0, 0, self.height, self.width

    @property
    def padding_pixels(self) -> int:
        return self.canvas_height * self.canvas_width - self.height * self.width

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (sizes, grid, counts, valid region)."""
        d = asdict(self)
        d.update(grid=list(self.grid), num_patches=self.num_patches,
                 num_tokens=self.num_tokens, valid=list(self.valid))
        return d


def _check_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise DataError("bad_size", f"image size must be positive, got {height}x{width}")


def _positive(name: str, value: int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


class ResolutionPolicy:
    """Base of the policies: ``plan(h, w)`` (no pixels) and ``apply(image)`` (pixels).

    Subclasses are frozen keyword-only dataclasses with ``patch``, ``extra_tokens`` and
    ``pad_value`` fields and implement ``plan``.
    """

    name: ClassVar[str] = ""
    patch: int
    extra_tokens: int
    pad_value: int

    def plan(self, height: int, width: int) -> ResolutionPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """``{"policy": name, **config}``; :meth:`from_dict` reverses it."""
        return {"policy": self.name, **config_to_dict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ResolutionPolicy:
        """Build a policy from :meth:`to_dict` output (``policy`` names the registry entry).

        >>> ResolutionPolicy.from_dict({"policy": "shortest", "size": 256}).plan(100, 200).width
        512
        """
        data = dict(data)
        name = data.pop("policy", None)
        if not isinstance(name, str):
            raise ConfigError("resolution policy dict needs a 'policy' key; allowed: "
                              f"{', '.join(RESOLUTION_POLICIES.names())}")
        return config_from_dict(RESOLUTION_POLICIES.get(name), data)

    def apply(self, image: Any) -> tuple[np.ndarray, ResolutionPlan]:
        """Resize (PIL BICUBIC) and pad (bottom/right, ``pad_value``) one image.

        ``image`` is a PIL image or a numpy array ``[H, W]`` / ``[H, W, C]`` (uint8, or
        float32 resized per channel). Returns the canvas array (same dtype and channel
        count as the input; PIL images become uint8 arrays) and the plan.

        >>> import numpy as np
        >>> arr, plan = PadToMultiple(patch=14).apply(np.zeros((20, 30, 3), np.uint8))
        >>> arr.shape, plan.valid
        ((28, 42, 3), (0, 0, 20, 30))
        """
        arr = _as_array(image)
        plan = self.plan(arr.shape[0], arr.shape[1])
        out = _resize(arr, plan.height, plan.width)
        if (plan.canvas_height, plan.canvas_width) != (plan.height, plan.width):
            canvas = np.full((plan.canvas_height, plan.canvas_width) + out.shape[2:],
                             self.pad_value, dtype=out.dtype)
            canvas[: plan.height, : plan.width] = out
            out = canvas
        return out, plan

    def _validate_common(self) -> None:
        _positive("patch", self.patch)
        if not isinstance(self.extra_tokens, int) or self.extra_tokens < 0:
            raise ConfigError(f"extra_tokens must be an int >= 0, got {self.extra_tokens!r}")


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        arr = image
    else:
        try:
            from PIL import Image
        except ImportError as e:  # pragma: no cover - pillow is a dependency
            raise ConfigError("apply() needs pillow for PIL images") from e
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


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    if arr.shape[:2] == (height, width):
        return arr.copy()
    from PIL import Image

    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (3, 4)):
        img = Image.fromarray(arr)
        return np.asarray(img.resize((width, height), Image.Resampling.BICUBIC))
    # float32 or odd channel counts: resize each channel as a mode-"F" image
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = np.empty((height, width, chans.shape[2]), dtype=arr.dtype)
    for c in range(chans.shape[2]):
        ch = Image.fromarray(np.ascontiguousarray(chans[..., c]).astype(np.float32), mode="F")
        res = np.asarray(ch.resize((width, height), Image.Resampling.BICUBIC))
        if arr.dtype == np.uint8:
            res = np.clip(np.rint(res), 0, 255)
        out[..., c] = res
    return out[..., 0] if arr.ndim == 2 else out


@RESOLUTION_POLICIES.register("fixed")
@dataclass(frozen=True, kw_only=True)
class FixedSize(ResolutionPolicy):
    """Every image becomes ``height x width`` (aspect ignored, no padding).

    >>> FixedSize(height=224, width=224, patch=16).plan(100, 300).num_patches
    196
    """

    name: ClassVar[str] = "fixed"
    height: int = 224
    width: int = 224
    patch: int = 14
    extra_tokens: int = 0
    pad_value: int = 0

    def __post_init__(self) -> None:
        _positive("height", self.height)
        _positive("width", self.width)
        self._validate_common()

    def plan(self, height: int, width: int) -> ResolutionPlan:
        _check_size(height, width)
        return ResolutionPlan(int(height), int(width), self.height, self.width,
                              self.height, self.width, self.patch, self.extra_tokens)


def _keep_aspect(h: int, w: int, scale: float) -> tuple[int, int]:
    """Round half-up each scaled side, never below one pixel."""
    return max(1, int(math.floor(h * scale + 0.5))), max(1, int(math.floor(w * scale + 0.5)))


@RESOLUTION_POLICIES.register("shortest")
@dataclass(frozen=True, kw_only=True)
class ShortestSide(ResolutionPolicy):
    """Shortest side becomes ``size`` keeping the aspect (sides rounded half-up).

    ``max_size`` (optional) caps the longest side (the shortest side is then smaller than
    ``size``, torchvision's ``Resize(max_size=)`` rule). The patch grid is
    ``floor(h/p) x floor(w/p)``: a stride-``p`` patch embedding drops the remainder.

    >>> ShortestSide(size=224, patch=14).plan(480, 640).width
    299
    """

    name: ClassVar[str] = "shortest"
    size: int = 224
    max_size: int | None = None
    patch: int = 14
    extra_tokens: int = 0
    pad_value: int = 0

    def __post_init__(self) -> None:
        _positive("size", self.size)
        _positive("max_size", self.max_size, allow_none=True)
        if self.max_size is not None and self.max_size < self.size:
            raise ConfigError(f"max_size ({self.max_size}) must be >= size ({self.size})")
        self._validate_common()

    def plan(self, height: int, width: int) -> ResolutionPlan:
        _check_size(height, width)
        h, w = int(height), int(width)
        scale = self.size / min(h, w)
        if self.max_size is not None and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        oh, ow = _keep_aspect(h, w, scale)
        return ResolutionPlan(h, w, oh, ow, oh, ow, self.patch, self.extra_tokens)


def smart_resize(height: int, width: int, *, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``: both sides multiples of ``factor``, pixels in budget.

    Rounding: each side is rounded to the *nearest* multiple of ``factor`` (at least
    ``factor``); if the area then exceeds ``max_pixels`` both sides are scaled by
    ``sqrt(h*w/max_pixels)`` and rounded *down*; if it is below ``min_pixels`` they are
    scaled up by ``sqrt(min_pixels/(h*w))`` and rounded *up*. Aspect ratios over 200
    are refused (as Qwen2-VL does).

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


@RESOLUTION_POLICIES.register("pad_multiple")
@dataclass(frozen=True, kw_only=True)
class PadToMultiple(ResolutionPolicy):
    """Keep the aspect; make the canvas a multiple of ``patch * merge`` (Qwen-VL habit).

    ``mode="pad"`` (default): the image is scaled only when needed to fit the pixel budget
    (``s = sqrt(max_pixels / (h*w))`` when over it, ``sqrt(min_pixels / (h*w))`` when
    under; ``upscale=False`` forbids growing), sides rounded half-up, then padded bottom/
    right up to the next multiple of ``factor = patch * merge``. ``max_pixels`` bounds the
    *canvas* (what the model sees): when the padding pushes it over, the scale shrinks
    until the canvas fits. The content aspect error is from rounding alone:
    ``|ar_out / ar_in - 1| <= 1 / (min(height, width) - 1)`` for content sides >= 2.

    ``mode="resize"``: Qwen2-VL's :func:`smart_resize` (no padding; each side is rounded
    to the nearest multiple, so the aspect moves by up to ``factor / 2`` pixels a side).
    ``min_pixels``/``max_pixels`` default to Qwen2-VL's (3136 and 1003520) in this mode.

    >>> PadToMultiple(patch=14).plan(20, 30).grid
    (2, 3)
    >>> PadToMultiple(patch=14, merge=2, mode="resize", max_pixels=448 * 448).plan(1080, 1920).grid
    (24, 42)
    """

    name: ClassVar[str] = "pad_multiple"
    patch: int = 14
    merge: int = 1
    mode: str = "pad"
    min_pixels: int | None = None
    max_pixels: int | None = None
    upscale: bool = True
    extra_tokens: int = 0
    pad_value: int = 0

    def __post_init__(self) -> None:
        self._validate_common()
        _positive("merge", self.merge)
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

    def plan(self, height: int, width: int) -> ResolutionPlan:
        _check_size(height, width)
        h, w, f = int(height), int(width), self.factor
        if self.mode == "resize":
            oh, ow = smart_resize(
                h, w, factor=f,
                min_pixels=self.min_pixels if self.min_pixels is not None else 56 * 56,
                max_pixels=self.max_pixels if self.max_pixels is not None else 14 * 14 * 4 * 1280,
            )
            return ResolutionPlan(h, w, oh, ow, oh, ow, self.patch, self.extra_tokens)
        scale = 1.0
        if self.max_pixels is not None and h * w > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (h * w))
        elif self.min_pixels is not None and h * w < self.min_pixels and self.upscale:
            scale = math.sqrt(self.min_pixels / (h * w))
        while True:
            oh, ow = _keep_aspect(h, w, scale)
            ch, cw = -(-oh // f) * f, -(-ow // f) * f
            if self.max_pixels is None or ch * cw <= self.max_pixels or (oh == 1 and ow == 1):
                break
            # the padding pushed the canvas over budget: shrink the content a little
            scale *= min(0.999, math.sqrt(self.max_pixels / (ch * cw)))
        return ResolutionPlan(h, w, oh, ow, ch, cw, self.patch, self.extra_tokens)


@RESOLUTION_POLICIES.register("max_patches")
@dataclass(frozen=True, kw_only=True)
class MaxPatches(ResolutionPolicy):
    """Pix2Struct: the largest ``rows x cols`` grid within ``max_patches`` at the image's aspect.

    ``scale = sqrt(max_patches * (p/h) * (p/w))``, ``rows = max(min(floor(scale*h/p),
    max_patches), 1)``, ``cols`` likewise; the image is resized to ``rows*p x cols*p``.
    ``rows * cols <= max_patches`` always (a guard trims the larger side should floating
    point round a floor up). Aspect error from the floors:
    ``|ar_out / ar_in - 1| <= 1 / (min(rows, cols) - 1)`` when neither side is clamped.
    Pix2Struct pads the *sequence* to ``max_patches``: :attr:`sequence_padding` gives the
    count for a plan.

    >>> MaxPatches(max_patches=2048, patch=16).plan(1080, 1920).grid
    (33, 60)
    """

    name: ClassVar[str] = "max_patches"
    max_patches: int = 2048
    patch: int = 16
    extra_tokens: int = 0
    pad_value: int = 0

    def __post_init__(self) -> None:
        _positive("max_patches", self.max_patches)
        self._validate_common()

    def plan(self, height: int, width: int) -> ResolutionPlan:
        _check_size(height, width)
        h, w, p, n = int(height), int(width), self.patch, self.max_patches
        scale = math.sqrt(n * (p / h) * (p / w))
        rows = max(min(math.floor(scale * h / p), n), 1)
        cols = max(min(math.floor(scale * w / p), n), 1)
        while rows * cols > n:  # float rounding guard; real maths never enters
            if rows >= cols:
                rows -= 1
            else:
                cols -= 1
        return ResolutionPlan(h, w, rows * p, cols * p, rows * p, cols * p, p, self.extra_tokens)

    def sequence_padding(self, plan: ResolutionPlan) -> int:
        """Patch slots left empty when the sequence is padded to ``max_patches``."""
        return self.max_patches - plan.num_patches


# --------------------------------------------------------------------------- NaViT packing

_PACK_ALGOS = ("ffd", "greedy")
_OVERSIZE = ("error", "shrink")


@dataclass(frozen=True)
class PackedSequence:
    """One fixed-length sequence: which images, where each starts, how much padding.

    ``items[i]`` is an index into the input list; its tokens occupy
    ``offsets[i] : offsets[i] + lengths[i]``. The tail ``padding`` tokens are empty.
    """

    seq_len: int
    items: tuple[int, ...]
    lengths: tuple[int, ...]
    offsets: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    extra_tokens: int = 0

    @property
    def used(self) -> int:
        return sum(self.lengths)

    @property
    def padding(self) -> int:
        return self.seq_len - self.used

    def segment_ids(self) -> np.ndarray:
        """``int32 [seq_len]``: 1..n for the n images in order, 0 for padding.

        Build an attention mask with ``ids[:, None] == ids[None, :] & (ids > 0)``.
        """
        out = np.zeros(self.seq_len, np.int32)
        for seg, (off, n) in enumerate(zip(self.offsets, self.lengths), start=1):
            out[off: off + n] = seg
        return out

    def patch_positions(self) -> np.ndarray:
        """``int32 [seq_len, 2]``: each token's (row, col) in its image's patch grid.

        Extra tokens (CLS ...) come first in each segment at ``(-1, -1)``; padding too.
        NaViT uses these as factorised 2D position indices.
        """
        out = np.full((self.seq_len, 2), -1, np.int32)
        for off, (rows, cols) in zip(self.offsets, self.grids):
            start = off + self.extra_tokens
            rr, cc = np.divmod(np.arange(rows * cols, dtype=np.int32), cols)
            out[start: start + rows * cols, 0] = rr
            out[start: start + rows * cols, 1] = cc
        return out


@dataclass(frozen=True)
class PackingPlan:
    """All sequences of one packing, and each input's final plan (after any shrink)."""

    seq_len: int
    sequences: tuple[PackedSequence, ...]
    plans: tuple[ResolutionPlan, ...]
    shrunk: tuple[int, ...] = ()

    @property
    def padding(self) -> int:
        return sum(s.padding for s in self.sequences)

    @property
    def efficiency(self) -> float:
        """Share of token slots holding image tokens (1.0 = no padding)."""
        total = self.seq_len * len(self.sequences)
        return 1.0 if total == 0 else 1.0 - self.padding / total

    def location(self) -> dict[int, tuple[int, int]]:
        """``{image index: (sequence index, position in sequence)}``."""
        return {item: (s, j) for s, seq in enumerate(self.sequences)
                for j, item in enumerate(seq.items)}


def plan_packing(sizes: Sequence[tuple[int, int]], *, seq_len: int, policy: ResolutionPolicy,
                 algorithm: str = "ffd", oversize: str = "error") -> PackingPlan:
    """NaViT-style packing: images of mixed sizes into sequences of ``seq_len`` tokens.

    Each ``(height, width)`` goes through ``policy.plan`` to get its token count
    (``num_tokens``: patches plus the policy's ``extra_tokens``). Then:

    - ``algorithm="ffd"``: first-fit-decreasing (longest first, ties by input index;
      each image goes into the first sequence with room). Fewest sequences in practice.
    - ``algorithm="greedy"``: next-fit in input order (start a new sequence when the next
      image does not fit). Keeps the input order; suits streaming.

    An image longer than ``seq_len``: ``oversize="error"`` raises :class:`DataError`
    (reason ``too_many_patches``, naming the image and its count); ``oversize="shrink"``
    re-plans it with Pix2Struct :class:`MaxPatches` at the policy's patch size and a
    budget of ``seq_len - extra_tokens`` patches (indices listed in ``shrunk``).
    Deterministic: the same sizes and arguments give the same plan.

    >>> plan = plan_packing([(224, 224), (112, 224), (112, 112)], seq_len=256,
    ...                     policy=PadToMultiple(patch=14))
    >>> [s.items for s in plan.sequences], plan.padding
    ([(0,), (1, 2)], 64)
    """
    if algorithm not in _PACK_ALGOS:
        raise ConfigError(f"packing algorithm {algorithm!r} unknown; allowed: "
                          f"{', '.join(_PACK_ALGOS)}")
    if oversize not in _OVERSIZE:
        raise ConfigError(f"oversize policy {oversize!r} unknown; allowed: {', '.join(_OVERSIZE)}")
    _positive("seq_len", seq_len)
    extra = policy.extra_tokens
    if oversize == "shrink" and seq_len - extra < 1:
        raise ConfigError(f"seq_len {seq_len} leaves no room for patches after "
                          f"{extra} extra tokens")
    plans: list[ResolutionPlan] = []
    shrunk: list[int] = []
    for i, (h, w) in enumerate(sizes):
        plan = policy.plan(h, w)
        if plan.num_tokens > seq_len:
            if oversize == "error":
                raise DataError(
                    "too_many_patches",
                    f"image {i} ({h}x{w}) needs {plan.num_tokens} tokens > seq_len {seq_len}; "
                    "raise seq_len, use a smaller policy, or pass oversize='shrink'")
            fallback = MaxPatches(max_patches=seq_len - extra, patch=policy.patch,
                                  extra_tokens=extra)
            plan = fallback.plan(h, w)
            shrunk.append(i)
        plans.append(plan)

    lengths = [p.num_tokens for p in plans]
    bins: list[list[int]] = []
    room: list[int] = []
    if algorithm == "ffd":
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            for b, free in enumerate(room):
                if lengths[i] <= free:
                    bins[b].append(i)
                    room[b] -= lengths[i]
                    break
            else:
                bins.append([i])
                room.append(seq_len - lengths[i])
    else:
        for i, n in enumerate(lengths):
            if not bins or n > room[-1]:
                bins.append([])
                room.append(seq_len)
            bins[-1].append(i)
            room[-1] -= n
    seqs = []
    for items in bins:
        lens = tuple(lengths[i] for i in items)
        offs = tuple(int(x) for x in np.concatenate([[0], np.cumsum(lens)[:-1]]))
        seqs.append(PackedSequence(seq_len, tuple(items), lens, offs,
                                   tuple(plans[i].grid for i in items), extra))
    return PackingPlan(seq_len, tuple(seqs), tuple(plans), tuple(shrunk))


# ------------------------------------------------------------- multi-scale curriculum

@dataclass(frozen=True, kw_only=True)
class CurriculumStage:
    """From ``start_step`` on, sample ``resolutions`` with the given ``weights``."""

    start_step: int
    resolutions: tuple[int, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.start_step, int) or self.start_step < 0:
            raise ConfigError(f"stage start_step must be an int >= 0, got {self.start_step!r}")
        if not self.resolutions or len(self.resolutions) != len(self.weights):
            raise ConfigError(f"stage at step {self.start_step}: resolutions "
                              f"{self.resolutions} and weights {self.weights} must be "
                              "non-empty and the same length")
        for r in self.resolutions:
            _positive("resolution", r)
        if any(w < 0 for w in self.weights) or not math.isclose(sum(self.weights), 1.0,
                                                                abs_tol=1e-6):
            raise ConfigError(f"stage at step {self.start_step}: weights {self.weights} must "
                              "be >= 0 and sum to 1")


def _default_stages() -> tuple[CurriculumStage, ...]:
    return (
        CurriculumStage(start_step=0, resolutions=(224,), weights=(1.0,)),
        CurriculumStage(start_step=10_000, resolutions=(224, 448), weights=(0.7, 0.3)),
        CurriculumStage(start_step=20_000, resolutions=(224, 448, 896),
                        weights=(0.5, 0.3, 0.2)),
    )


@dataclass(frozen=True, kw_only=True)
class MultiScaleConfig:
    """The curriculum table: stages sorted by ``start_step``, the first starting at 0.

    The default is the seed's table (stage 1: 100 % 224; stage 2: 70 % 224 / 30 % 448;
    stage 3: 50 / 30 / 20 % of 224 / 448 / 896) with stages starting at steps 0, 10k and
    20k; set ``stages`` to your own boundaries.
    """

    stages: tuple[CurriculumStage, ...] = _default_stages()

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, CurriculumStage) else
                       config_from_dict(CurriculumStage, dict(s)) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or stages[0].start_step != 0:
            raise ConfigError("the first curriculum stage must start at step 0")
        starts = [s.start_step for s in stages]
        if starts != sorted(set(starts)):
            raise ConfigError(f"stage start steps must be strictly increasing, got {starts}")


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class MultiScaleSchedule:
    """Deterministic multi-scale resolution curriculum.

    ``resolution_at(step)`` is a pure function of ``(seed, step)`` and the table (a
    splitmix64 hash, stable across numpy versions), so every rank of a DDP job picks the
    same resolution for a step. ``next()`` walks steps; ``state_dict()`` /
    ``load_state_dict()`` resume exactly.

    >>> sched = MultiScaleSchedule(MultiScaleConfig(), seed=0)
    >>> sched.resolution_at(5), sched.shares_at(25_000)
    (224, {224: 0.5, 448: 0.3, 896: 0.2})
    >>> first = [sched.next() for _ in range(3)]; state = sched.state_dict()
    >>> a = [sched.next() for _ in range(3)]
    >>> sched.load_state_dict(state); a == [sched.next() for _ in range(3)]
    True
    """

    def __init__(self, config: MultiScaleConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or MultiScaleConfig()
        self.seed = int(seed)
        self.step = 0

    def stage_at(self, step: int) -> int:
        """Index of the stage in force at ``step``."""
        idx = 0
        for i, s in enumerate(self.config.stages):
            if step >= s.start_step:
                idx = i
        return idx

    def shares_at(self, step: int) -> dict[int, float]:
        """``{resolution: weight}`` in force at ``step``."""
        s = self.config.stages[self.stage_at(step)]
        return dict(zip(s.resolutions, s.weights))

    def resolution_at(self, step: int) -> int:
        """The resolution sampled for ``step`` (pure function of seed, step and table)."""
        if step < 0:
            raise ConfigError(f"step must be >= 0, got {step}")
        stage = self.config.stages[self.stage_at(step)]
        u = (_splitmix64((_splitmix64(self.seed & _MASK64) ^ step) & _MASK64) >> 11) / 2.0**53
        acc = 0.0
        for res, w in zip(stage.resolutions, stage.weights):
            acc += w
            if u < acc:
                return res
        return stage.resolutions[-1]

    def next(self) -> int:
        """The resolution for the current step, then advance one step."""
        res = self.resolution_at(self.step)
        self.step += 1
        return res

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step,
                "stages": config_to_dict(self.config)["stages"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``seed`` and ``step``; a state saved with another table is refused."""
        mine = config_to_dict(self.config)["stages"]
        theirs = state.get("stages", mine)
        if [dict(s) for s in theirs] != [dict(s) for s in mine]:
            raise ConfigError("curriculum state was saved with a different stage table; "
                              "build the schedule with the same MultiScaleConfig")
        self.seed = int(state["seed"])
        self.step = int(state["step"])
