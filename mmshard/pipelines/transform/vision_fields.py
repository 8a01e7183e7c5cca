"""Vision field sets of the transform job: ``vq`` and ``vqvae`` ids, ``tokenizer`` plug-ins.

Importing this module registers three field sets in
:data:`mmshard.pipelines.transform.fields.FIELD_SETS`:

- ``vq`` -- a patch codebook (``mmshard fit-codebook --field jpg``) turns each image into
  an id grid ``vq.npy``.  Options: ``codebook_path`` / ``path`` (``--codebook``) and a
  resize policy of :mod:`mmshard.media.resize`: ``resize`` (its name: ``longest``,
  ``max_patches``, ``pad_multiple``, ``none`` ...) plus that policy's options
  (``size``, ``max_patches``, ``upscale`` ...; ``patch`` defaults to the codebook's).
  Default: the policy the codebook was fit with, else ``longest`` ``size=512`` without
  upscaling, so a 2560x1600 photo becomes a 32 x 20 grid of 16-pixel patches, not
  160 x 100 (``--option vq.resize=none`` keeps the full size).  The policy is recorded
  in the field set's provenance (``resize``).
- ``vqvae`` -- a VQ-VAE checkpoint made by ``mmshard train-vq`` turns each image (RGB
  ``uint8 [H, W, 3]``) into an id grid ``[H/f, W/f]`` stored as ``<name>.npy``
  (``vqvae.npy`` by default; int16 when the codebook has <= 32767 codes, else int32).
  Options: ``path`` (the ``.safetensors`` checkpoint, required), ``image_size``
  (optional: scale the shortest side to it and centre-crop a square, the same policy
  ``train-vq`` trains with) or any resize policy as for ``vq`` (``resize=pad_multiple``
  pads to multiples of ``f``); without one an image's sides must be multiples of ``f``,
  else the sample is a ``bad_shape`` ledger row.  Runs on the job's device (``--device
  cuda``).  Provenance: the tokenizer's config plus the checkpoint's sha256, so a
  retrained checkpoint at the same path is noticed by a rerun.
- ``tokenizer`` -- any ``package.module:factory`` plug-in
  (:func:`mmshard.tokenizers.plugin.load_tokenizer`).  Reserved options: ``factory``
  (the spec, required), ``field`` (``jpg``/``png``/``webp``, default ``jpg``: the
  sample's image, whichever of those formats it is stored in; ``txt`` and audio or video
  fields work too), ``allow_float`` (store float outputs instead of refusing them with a
  ``float_output`` ledger row; default false) and ``store_dtype`` (cast ids to this
  integer dtype, values checked; default: the plug-in's ``storage_dtype`` if it declares
  one, else the dtype it returns); every other option is a keyword argument of the
  factory, which also gets ``device=`` when its signature names that parameter (the
  device is left out of the provenance).  Each sample is encoded as a batch of one,
  ``encode([medium])[0]``: an image is an RGB ``uint8 [H, W, 3]`` array, text a ``str``,
  audio a ``(float32 mono waveform, sample_rate)`` tuple, video the file's bytes.  The
  ids land in ``<name>.npy`` (``tokenizer.npy`` by default).  With the Ray executor the
  plug-in module must be importable on every worker (installed, or on ``PYTHONPATH``).

>>> from mmshard.pipelines.transform.fields import build_field_set   # doctest: +SKIP
>>> fs = build_field_set("vqvae", {"path": "vq.safetensors", "image_size": 64})  # doctest: +SKIP
>>> fs.outputs                                                        # doctest: +SKIP
('vqvae.npy',)
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from ...media.resize import RESIZES, CenterCrop, Longest, Resize, build_resize
from .fields import FIELD_SETS, FieldSet, npy_bytes

__all__ = ["checkpoint_sha256", "crop_to_square", "resize_option"]

TOKENIZER_FIELDS = ("jpg", "png", "webp")
_RESERVED = ("allow_float", "factory", "field", "store_dtype")


def checkpoint_sha256(path: str) -> str:
    """sha256 hex digest of a (local) checkpoint file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise ConfigError(f"cannot read checkpoint {path!r}: {e}") from e
    return h.hexdigest()


def crop_to_square(image: np.ndarray, size: int) -> np.ndarray:
    """Scale the shortest side to ``size`` (bicubic) and centre-crop ``size x size``.

    The resize family's :class:`~mmshard.media.resize.CenterCrop` (the Loader's
    ``ShortestSideCrop``), which ``train_vq`` uses, so tokenized images look like the
    training images.

    >>> crop_to_square(np.zeros((20, 40, 3), np.uint8), 8).shape
    (8, 8, 3)
    """
    return CenterCrop(size=size).apply(np.asarray(image, np.uint8))[0]


def resize_option(opts: dict[str, Any], *, default: Resize | None, patch: int
                  ) -> Resize | None:
    """Pop a resize policy out of field-set options (``resize`` = a policy name, plus that
    policy's own options); ``default`` when none are given.  Options the policy does not
    have stay in ``opts`` for the caller to refuse.

    >>> opts = {"resize": "longest", "size": 256, "path": "x"}
    >>> resize_option(opts, default=None, patch=16).plan(1600, 2560).grid, opts
    ((10, 16), {'path': 'x'})
    """
    name = opts.pop("resize", None)
    if name is None and default is None:
        return None
    cls = RESIZES.get(str(name)) if name is not None else type(default)
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: opts.pop(k) for k in sorted(set(opts) & names)}
    if name is None and not given:
        return default
    base = dataclasses.asdict(default) if name is None and default is not None else {}
    return build_resize(cls.name, **{"patch": patch, **base, **given})


def _allowed(own: tuple[str, ...], policy: Resize | None) -> str:
    extra = [f.name for f in dataclasses.fields(type(policy))] if policy is not None else []
    return ", ".join(sorted({*own, "resize", *extra}))


@FIELD_SETS.register("vq")
def _vq(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    """Patch-codebook ids of each image, after a resize policy (see the module docstring)."""
    from ...tokenizers.patch_vq import PatchVQTokenizer

    opts = dict(options)
    path = opts.pop("codebook_path", None) or opts.pop("path", None)
    opts.pop("path", None)
    if not path:
        raise ConfigError("--fields vq needs a tokenizer file: --codebook PATH (made by "
                          "`mmshard fit-codebook --field jpg --patch 16`)")
    tok = PatchVQTokenizer.load(path)
    patch = tok.config.patch
    default = tok.policy or Longest(size=512, upscale=False, patch=patch)
    policy = resize_option(opts, default=default, patch=patch)
    if opts:
        raise ConfigError(f"unknown vq option(s) {sorted(opts)}; allowed: "
                          f"{_allowed(('codebook_path', 'path'), policy)}")
    tok = tok.with_resize(policy)

    def compute(image: np.ndarray) -> dict[str, bytes]:
        return {"vq.npy": npy_bytes(tok.encode(image))}

    prov = {**tok.provenance(), "resize": None if policy is None else policy.to_dict()}
    return FieldSet("vq", "image", ("vq.npy",), compute, prov)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ConfigError(f"option {name} must be true or false, got {value!r}")


@FIELD_SETS.register("vqvae")
def _vqvae(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    """VQ-VAE id grids of each image (see the module docstring)."""
    from ...tokenizers.vqvae import VQVAETokenizer, load_vqvae

    opts = dict(options)
    path = opts.pop("path", None) or opts.pop("codebook_path", None)
    image_size = opts.pop("image_size", None)
    policy = resize_option(opts, default=None, patch=16)
    if opts:
        raise ConfigError(f"unknown vqvae option(s) {sorted(opts)}; allowed: "
                          f"{_allowed(('path', 'image_size'), policy)}")
    if policy is not None and image_size is not None:
        raise ConfigError("vqvae takes image_size or a resize policy, not both")
    if not path:
        raise ConfigError("--fields vqvae needs a checkpoint: --option vqvae.path=CKPT "
                          "(made by `mmshard train-vq DATASET --out CKPT.safetensors`)")
    path = str(path)
    model = load_vqvae(path, device=device)  # refuses pickles before parsing anything
    tok = VQVAETokenizer(model, path=path)
    factor = tok.config.factor
    if policy is not None and "patch" not in options:
        policy = dataclasses.replace(policy, patch=factor)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ConfigError(f"vqvae image_size must be a positive int, got {image_size!r}")
        if image_size % factor:
            raise ConfigError(f"vqvae image_size {image_size} is not a multiple of the "
                              f"checkpoint's downsample factor {factor}; use e.g. "
                              f"{max(factor, image_size // factor * factor)}")
    member = f"{out_name}.npy"

    if image_size is not None:
        policy = CenterCrop(size=image_size)

    def compute(image: np.ndarray) -> dict[str, bytes]:
        if policy is not None:
            image = policy.apply(image)[0]
        if image.shape[0] % factor or image.shape[1] % factor:
            raise DataError("bad_shape", f"image is {image.shape[1]}x{image.shape[0]}, not a "
                            f"multiple of the VQ-VAE factor {factor}; pass "
                            "--option <name>.image_size=N to resize and crop (or "
                            f"resize=pad_multiple with patch={factor})")
        return {member: npy_bytes(tok.encode([image])[0])}

    prov = {**tok.provenance(), "checkpoint_sha256": checkpoint_sha256(path),
            "image_size": image_size,
            "resize": "none" if policy is None else
            "shortest_side_crop" if image_size is not None else policy.to_dict(),
            "dtype": str(tok.storage_dtype)}
    return FieldSet(out_name, "image", (member,), compute, prov)


def _takes_device(factory: Any) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins / C callables: do not guess
        return False
    return "device" in params  # not **kwargs: those may go somewhere that rejects it


def _as_ids(out: Any, spec: str, allow_float: bool, store_dtype: np.dtype | None
            ) -> np.ndarray:
    """The first element of ``encode([x])`` as an integer array (see module docstring)."""
    if hasattr(out, "detach"):  # a torch tensor, maybe on the GPU
        out = out.detach().cpu().numpy()
    try:
        n = len(out)
    except TypeError:
        raise DataError("bad_output", f"plug-in {spec} encode([x]) returned "
                        f"{type(out).__name__}, not a batch (a list or array with one "
                        "entry per input)") from None
    if n != 1:
        raise DataError("bad_output", f"plug-in {spec} encode([x]) returned {n} entries "
                        "for a batch of one")
    first = out[0]
    if hasattr(first, "detach"):
        first = first.detach().cpu().numpy()
    try:
        arr = np.asarray(first)
    except ValueError as e:  # ragged nested lists
        raise DataError("bad_output", f"plug-in {spec} returned ids that are not a "
                        f"rectangular array: {e}") from e
    if arr.dtype.kind == "f":
        if not allow_float:
            raise DataError("float_output", f"plug-in {spec} returned {arr.dtype} values, not "
                            "integer ids; return ints, or pass --option <name>.allow_float=true "
                            "to store them as they are")
    elif arr.dtype.kind not in "iu":
        raise DataError("bad_output", f"plug-in {spec} returned {arr.dtype} values "
                        f"({type(first).__name__}); expected integer ids")
    if store_dtype is not None and arr.dtype.kind in "iu":
        cast = arr.astype(store_dtype)
        if not np.array_equal(cast, arr):
            raise DataError("ids_overflow", f"plug-in {spec} ids in [{arr.min()}, {arr.max()}] "
                            f"do not fit store_dtype {store_dtype}; pick a wider one")
        arr = cast
    return arr


@FIELD_SETS.register("tokenizer")
def _tokenizer(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    """A user plug-in ``package.module:factory`` (see the module docstring)."""
    from ..._registry import load_object
    from ...keys import modality_of
    from ...tokenizers.plugin import load_tokenizer

    opts = dict(options)
    spec = opts.pop("factory", None)
    field = str(opts.pop("field", "jpg"))
    allow_float = _bool("allow_float", opts.pop("allow_float", False))
    raw_dtype = opts.pop("store_dtype", None)
    if not spec:
        raise ConfigError("--fields tokenizer needs factory=package.module:factory (e.g. "
                          "--option tokenizer.factory=mytok.vision:build); other options "
                          f"go to the factory; reserved: {', '.join(_RESERVED)}")
    modality = modality_of(field)
    if modality == "text" and field != "txt":
        raise ConfigError(f"tokenizer field {field!r} unknown; allowed: "
                          f"{', '.join(TOKENIZER_FIELDS)} (images), txt, or an audio field")
    store_dtype = None
    if raw_dtype is not None:
        try:
            store_dtype = np.dtype(str(raw_dtype))
        except TypeError as e:
            raise ConfigError(f"store_dtype {raw_dtype!r} is not a numpy dtype") from e
        if store_dtype.kind not in "iu":
            raise ConfigError(f"store_dtype must be an integer dtype (int16, int32, uint16 "
                              f"...), got {store_dtype}")
    kwargs = dict(opts)
    if "device" not in kwargs and _takes_device(load_object(str(spec))):
        tok = load_tokenizer(str(spec), **kwargs, device=device)
        tok.kwargs.pop("device", None)  # the device is not part of what the ids mean
    else:
        tok = load_tokenizer(str(spec), **kwargs)
    if store_dtype is None and hasattr(tok.inner, "storage_dtype"):
        store_dtype = tok.storage_dtype if tok.storage_dtype.kind in "iu" else None
    member = f"{out_name}.npy"

    def compute(medium: Any) -> dict[str, bytes]:
        return {member: npy_bytes(_as_ids(tok.encode([medium]), str(spec), allow_float,
                                          store_dtype))}

    prov = {**tok.provenance(), "field": field, "allow_float": allow_float,
            "store_dtype": None if store_dtype is None else str(store_dtype)}
    return FieldSet(out_name, modality, (member,), compute, prov)
