"""Patch codebook tokenizer: image patches -> (optional PCA) -> k-means codes.

An image (optionally resized by a :mod:`~mmshard.media.resize` policy first) is
cut into ``P x P`` RGB patches; the bottom/right remainder (``H mod P`` rows, ``W mod P``
columns) is dropped, as a stride-``P`` patch embedding does. Each patch is flattened to
``3 * P * P`` values normalised per channel (``normalize="imagenet"``: ImageNet mean/std;
``"unit"``: ``[0, 1]``), optionally projected to ``pca_dim`` dimensions with PCA fit on
the sample (numpy, eigen-decomposition of the covariance; stored with the codebook), and
assigned to the nearest of ``k`` centroids of the shared FAISS k-means
:class:`~mmshard.tokenizers.codebook.Codebook` (GPU k-means when faiss has a GPU).

The id grid is ``int16 [H/P, W/P]`` when ``k <= 32767``, else ``int32``. ``decode``
maps ids back to centroid patches (inverting the PCA) for inspection. Files are one
safetensors file (centroids, PCA mean and components) with the JSON config, codebook
config and provenance in the metadata; pickles are refused.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(4)]
    >>> tok = PatchVQTokenizer.fit(imgs, patch=8, k=16, seed=0)
    >>> grid = tok(imgs[0]); grid.shape, grid.dtype, tok.decode(grid).shape
    ((4, 4), dtype('int16'), (32, 32, 3))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._registry import config_from_dict, config_to_dict
from ..errors import ConfigError, DataError
from ..media.resize import Resize, resize_from_dict
from .base import TOKENIZERS
from .codebook import Codebook, CodebookConfig

__all__ = ["PatchVQConfig", "PatchVQFile", "PatchVQTokenizer", "extract_patches"]

_FORMAT = "mmshard.patch_vq"
_VERSION = "1"
_NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@dataclass(frozen=True, kw_only=True)
class PatchVQConfig:
    """How a patch codebook is fit and applied.

    ``k`` codes (256..16384 is the useful range; any ``k >= 2`` is accepted) over
    ``patch x patch`` RGB patches; ``pca_dim`` (``None`` = no PCA) must be below
    ``3 * patch**2``. ``resolution`` is an optional resize policy
    (:mod:`mmshard.media.resize`; a policy or its :meth:`~mmshard.media.resize.Resize.to_dict`
    dict, e.g. ``{"policy": "longest", "size": 512}``) applied to every image before
    patching. The fit sample takes at most
    ``patches_per_image`` random patches of each image and ``max_fit_patches`` in all.
    """

    patch: int = 16
    k: int = 8192
    pca_dim: int | None = None
    normalize: str = "imagenet"
    resolution: Mapping[str, Any] | None = None
    seed: int = 0
    niter: int = 20
    max_points_per_centroid: int = 256
    patches_per_image: int = 256
    max_fit_patches: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("patch", "niter", "max_points_per_centroid", "patches_per_image",
                     "max_fit_patches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.k, int) or not 2 <= self.k <= 2**31 - 1:
            raise ConfigError(f"k must be an int in 2..2^31-1 (256..16384 typical), "
                              f"got {self.k!r}")
        dim = 3 * self.patch * self.patch
        if self.pca_dim is not None and not (isinstance(self.pca_dim, int)
                                             and 1 <= self.pca_dim < dim):
            raise ConfigError(f"pca_dim must be None or an int in 1..{dim - 1} "
                              f"(3 * patch^2 = {dim}), got {self.pca_dim!r}")
        if self.normalize not in _NORMALIZE:
            raise ConfigError(f"normalize {self.normalize!r} unknown; allowed: "
                              f"{', '.join(_NORMALIZE)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.resolution is not None:
            policy = resize_from_dict(self.resolution)  # validates it
            object.__setattr__(self, "resolution", policy.to_dict())

    @property
    def patch_dim(self) -> int:
        return 3 * self.patch * self.patch


def _as_rgb(image: Any) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DataError("bad_shape", f"image must be [H, W, 3] RGB, got {arr.shape}")
    if arr.dtype != np.uint8:
        raise DataError("bad_dtype", f"image must be uint8, got {arr.dtype}")
    return arr[:, :, :3]


def _policy(config: PatchVQConfig) -> Resize | None:
    if config.resolution is None:
        return None
    return resize_from_dict(dict(config.resolution))


def _norm_stats(config: PatchVQConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-value mean and 1/std of a flattened patch (channel-last, uint8 scale)."""
    mean, std = _NORMALIZE[config.normalize]
    reps = config.patch * config.patch
    return (np.tile(np.asarray(mean, np.float32) * 255, reps),
            np.tile(1.0 / (np.asarray(std, np.float32) * 255), reps))


def _prepare(image: Any, policy: Resize | None) -> np.ndarray:
    arr = _as_rgb(image)
    if policy is not None:
        arr, _ = policy.apply(arr)
    return arr


def extract_patches(image: np.ndarray, patch: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``[H, W, C]`` -> ``([rows*cols, P*P*C] patches in row-major order, (rows, cols))``.

    The bottom/right remainder is dropped.

    >>> p, grid = extract_patches(np.zeros((10, 17, 3), np.uint8), 8)
    >>> p.shape, grid
    ((2, 192), (1, 2))
    """
    h, w, c = image.shape
    rows, cols = h // patch, w // patch
    if rows == 0 or cols == 0:
        raise DataError("too_small", f"image {h}x{w} is smaller than one {patch}x{patch} patch")
    x = image[: rows * patch, : cols * patch]
    x = x.reshape(rows, patch, cols, patch, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(rows * cols, patch * patch * c), (rows, cols)


def _fold_patches(patches: np.ndarray, grid: tuple[int, int], patch: int) -> np.ndarray:
    rows, cols = grid
    x = patches.reshape(rows, cols, patch, patch, -1).transpose(0, 2, 1, 3, 4)
    return x.reshape(rows * patch, cols * patch, -1)


class PatchVQTokenizer:
    """Patch codebook tokenizer (registered as ``"vq"``): ``tok(image) -> int grid``.

    Build with :meth:`fit` or :meth:`load`. ``encode(image)`` / ``tok(image)`` -> grid
    ``[rows, cols]``; ``encode_batch(images)`` -> list of grids (one k-means search for the
    whole batch); ``decode(grid)`` -> uint8 image; ``reconstruction_psnr(images)``;
    ``usage(grids)``; ``save(path)``; ``provenance()``.
    """

    name: ClassVar[str] = "vq"
    version: ClassVar[str] = _VERSION

    def __init__(self, config: PatchVQConfig, codebook: Codebook, *,
                 pca_mean: np.ndarray | None = None, pca_components: np.ndarray | None = None,
                 fit_usage: dict[str, Any] | None = None) -> None:
        want = config.pca_dim or config.patch_dim
        if codebook.dim != want or codebook.k != config.k:
            raise ConfigError(f"codebook is k={codebook.k} dim={codebook.dim}, config wants "
                              f"k={config.k} dim={want}")
        if (pca_components is None) != (config.pca_dim is None):
            raise ConfigError("pca_components must be given exactly when config.pca_dim is set")
        self.config = config
        self.codebook = codebook
        self.pca_mean = pca_mean
        self.pca_components = pca_components
        self.fit_usage = dict(fit_usage or {})
        self.storage_dtype = np.dtype(np.int16 if config.k <= 32767 else np.int32)
        self.policy = _policy(config)
        self._mean, self._scale = _norm_stats(config)

    def with_resize(self, policy: Resize | None) -> PatchVQTokenizer:
        """The same codebook applied after another resize policy (None: no resize)."""
        import copy

        out = copy.copy(self)
        out.policy = policy
        return out

    # ----------------------------------------------------------------- vectors

    def _prepare(self, image: Any) -> np.ndarray:
        return _prepare(image, self.policy)

    def _to_vectors(self, patches: np.ndarray) -> np.ndarray:
        x = (patches.astype(np.float32) - self._mean) * self._scale
        if self.pca_components is not None:
            x = (x - self.pca_mean) @ self.pca_components.T
        return np.ascontiguousarray(x, dtype=np.float32)

    def _from_vectors(self, x: np.ndarray) -> np.ndarray:
        if self.pca_components is not None:
            x = x @ self.pca_components + self.pca_mean
        return x / self._scale + self._mean

    # ----------------------------------------------------------------- fit

    @classmethod
    def fit(cls, images: Iterable[Any], *, patch: int = 16, k: int = 8192,
            pca_dim: int | None = None, seed: int = 0, gpu: bool | None = None,
            config: PatchVQConfig | None = None, created_from: str = "") -> PatchVQTokenizer:
        """Fit PCA (optional) and the k-means codebook on patches of ``images``.

        ``images``: uint8 ``[H, W, 3]`` arrays or PIL images (any sizes). Pass ``config``
        for every option (its values win over ``patch``/``k``/``pca_dim``/``seed``).
        Deterministic for a seed; ``gpu=None`` uses a faiss GPU when there is one.

        >>> rng = np.random.default_rng(1)
        >>> imgs = [rng.integers(0, 255, (16, 16, 3), np.uint8) for _ in range(8)]
        >>> PatchVQTokenizer.fit(imgs, patch=4, k=8, pca_dim=6).codebook.dim
        6
        """
        if config is None:
            config = PatchVQConfig(patch=patch, k=k, pca_dim=pca_dim, seed=seed)
        policy = _policy(config)
        norm_mean, norm_scale = _norm_stats(config)
        rng = np.random.default_rng(config.seed)
        chunks: list[np.ndarray] = []
        total = n_images = 0
        for image in images:
            patches, _ = extract_patches(_prepare(image, policy), config.patch)
            if len(patches) > config.patches_per_image:
                pick = np.sort(rng.choice(len(patches), config.patches_per_image, replace=False))
                patches = patches[pick]
            patches = patches[: config.max_fit_patches - total]
            chunks.append(patches)
            total += len(patches)
            n_images += 1
            if total >= config.max_fit_patches:
                break
        if total < config.k:
            raise ConfigError(f"fitting k={config.k} codes needs at least {config.k} patches, "
                              f"got {total} from {n_images} images; add images, raise "
                              "patches_per_image, or lower k")
        x = (np.concatenate(chunks).astype(np.float32) - norm_mean) * norm_scale
        mean = comps = None
        if config.pca_dim is not None:
            mean, comps = _fit_pca(x, config.pca_dim)
            x = (x - mean) @ comps.T
        cb = Codebook.fit(np.ascontiguousarray(x, np.float32), k=config.k, niter=config.niter,
                          seed=config.seed,
                          max_points_per_centroid=config.max_points_per_centroid, gpu=gpu,
                          created_from=created_from or f"{n_images} images, {total} patches")
        usage = cb.usage(cb.encode(x))
        return cls(config, cb, pca_mean=mean, pca_components=comps, fit_usage=usage)

    # ----------------------------------------------------------------- use

    def encode(self, image: Any) -> np.ndarray:
        """One image -> id grid ``[rows, cols]`` (``storage_dtype``)."""
        return self.encode_batch([image])[0]

    __call__ = encode

    def encode_batch(self, images: Iterable[Any]) -> list[np.ndarray]:
        """Several images (sizes may differ) -> their grids, with one codebook search."""
        parts, grids = [], []
        for image in images:
            patches, grid = extract_patches(self._prepare(image), self.config.patch)
            parts.append(patches)
            grids.append(grid)
        if not parts:
            return []
        ids = self.codebook.encode(self._to_vectors(np.concatenate(parts)))
        out, start = [], 0
        for rows, cols in grids:
            out.append(ids[start: start + rows * cols].reshape(rows, cols)
                       .astype(self.storage_dtype))
            start += rows * cols
        return out

    def decode(self, grid: np.ndarray) -> np.ndarray:
        """Id grid ``[rows, cols]`` -> uint8 image ``[rows*P, cols*P, 3]`` of centroids."""
        grid = np.asarray(grid)
        if grid.ndim != 2:
            raise DataError("bad_shape", f"grid must be [rows, cols], got {grid.shape}")
        try:
            vec = self.codebook.decode(grid.reshape(-1))
        except ConfigError as e:
            raise DataError("bad_ids", str(e)) from e
        pix = np.clip(np.rint(self._from_vectors(vec)), 0, 255).astype(np.uint8)
        return _fold_patches(pix, grid.shape, self.config.patch)

    def reconstruction_psnr(self, images: Iterable[Any]) -> float:
        """Mean PSNR (dB, peak 255) of ``decode(encode(image))`` against the image
        (after the resolution policy, cropped to whole patches)."""
        values = []
        for image in images:
            arr = self._prepare(image)
            rec = self.decode(self.encode(arr))
            ref = arr[: rec.shape[0], : rec.shape[1]].astype(np.float64)
            mse = float(((rec.astype(np.float64) - ref) ** 2).mean())
            values.append(100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse))
        if not values:
            raise DataError("empty", "reconstruction_psnr got no images")
        return float(np.mean(values))

    def usage(self, grids: Iterable[np.ndarray] | None = None) -> dict[str, Any]:
        """Code usage (``perplexity``, ``used``, ``dead_codes``, ``k``, ``count``) of
        ``grids``; with no argument, the usage measured on the fit sample."""
        if grids is None:
            return dict(self.fit_usage)
        ids = [np.asarray(g).ravel() for g in grids]
        return self.codebook.usage(np.concatenate(ids) if ids else np.zeros(0, np.int64))

    def provenance(self) -> dict[str, Any]:
        """Name, version, config and the codebook's identity (as the ``units`` tokenizer)."""
        cb = self.codebook
        return {"tokenizer": self.name, "version": self.version,
                "config": config_to_dict(self.config),
                "codebook": {"fingerprint": cb.fingerprint, "k": cb.k, "dim": cb.dim,
                             "config": config_to_dict(cb.config),
                             "provenance": dict(cb.provenance)}}

    # ----------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file (centroids + PCA) with JSON metadata, written atomically."""
        from safetensors.numpy import save

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"centroids": np.ascontiguousarray(self.codebook.centroids)}
        if self.pca_components is not None:
            tensors["pca_mean"] = np.ascontiguousarray(self.pca_mean, np.float32)
            tensors["pca_components"] = np.ascontiguousarray(self.pca_components, np.float32)
        meta = {"format": _FORMAT, "version": _VERSION,
                "config": json.dumps(config_to_dict(self.config), sort_keys=True),
                "codebook_config": json.dumps(config_to_dict(self.codebook.config),
                                              sort_keys=True),
                "codebook_provenance": json.dumps(self.codebook.provenance, sort_keys=True),
                "fit_usage": json.dumps(self.fit_usage, sort_keys=True),
                "fingerprint": self.codebook.fingerprint}
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(save(tensors, metadata=meta))
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchVQTokenizer:
        """Read a :meth:`save` file; pickles and foreign files are a ``ConfigError``."""
        from safetensors import safe_open

        p = Path(path)
        try:
            head = p.open("rb").read(9)
        except OSError as e:
            raise ConfigError(f"cannot read patch VQ file {str(p)!r}: {e}") from e
        if len(head) < 9 or head[8:9] != b"{":
            kind = "a pickle / torch.save file" if head[:1] == b"\x80" or head[:2] == b"PK" \
                else "not a safetensors file"
            raise ConfigError(f"{str(p)!r} is {kind}; a patch VQ tokenizer is the safetensors "
                              "file written by PatchVQTokenizer.save (pickles are never loaded)")
        try:
            with safe_open(str(p), framework="np") as f:
                meta = dict(f.metadata() or {})
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as e:
            raise ConfigError(f"cannot read patch VQ safetensors {str(p)!r}: {e}") from e
        if meta.get("format") != _FORMAT:
            raise ConfigError(f"{str(p)!r} has format {meta.get('format')!r}, expected "
                              f"{_FORMAT!r} (a Codebook file loads with Codebook.load)")
        try:
            config = config_from_dict(PatchVQConfig, json.loads(meta["config"]))
            cb_config = config_from_dict(CodebookConfig, json.loads(meta["codebook_config"]))
            cb = Codebook(tensors["centroids"], cb_config,
                          json.loads(meta.get("codebook_provenance", "{}")))
            fit_usage = json.loads(meta.get("fit_usage", "{}"))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{str(p)!r}: bad patch VQ metadata or tensors: {e}") from e
        if meta.get("fingerprint") not in (None, cb.fingerprint):
            raise ConfigError(f"{str(p)!r}: centroids do not match the stored fingerprint")
        return cls(config, cb, pca_mean=tensors.get("pca_mean"),
                   pca_components=tensors.get("pca_components"), fit_usage=fit_usage)


def _fit_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top ``dim`` principal axes ``[dim, D]`` (signs fixed for determinism)."""
    mean = x.mean(0, dtype=np.float64)
    xc = x.astype(np.float64) - mean
    cov = xc.T @ xc / max(1, len(x) - 1)
    vals, vecs = np.linalg.eigh(cov)
    comps = vecs[:, np.argsort(vals)[::-1][:dim]].T
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(1)])
    comps *= np.where(signs == 0, 1.0, signs)[:, None]
    return mean.astype(np.float32), np.ascontiguousarray(comps, np.float32)


@dataclass(frozen=True, kw_only=True)
class PatchVQFile:
    """Config of the registered ``"vq"`` tokenizer: the path of a saved tokenizer."""

    path: str = field(default="")

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("vq tokenizer needs path=<file written by PatchVQTokenizer.save> "
                              "(fit one with PatchVQTokenizer.fit / mmshard fit-codebook)")


def _build_vq_tokenizer(config: PatchVQFile) -> PatchVQTokenizer:
    return PatchVQTokenizer.load(config.path)


_build_vq_tokenizer.config_class = PatchVQFile  # type: ignore[attr-defined]
TOKENIZERS.register("vq")(_build_vq_tokenizer)
