"""``mmshard fit-codebook``: fit a k-means codebook on a dataset field.

Two kinds of field:

- a sidecar feature field set (``mel``, ``mfcc``, ``fbank``, ``spectral``): its frames
  (``[frames, D]``; mel is stored ``[bins, frames]`` and transposed) are sampled across
  shards and clustered; the codebook records the feature's tokenizer and config, so
  ``mmshard tokenize --fields units`` recomputes the same feature;
- an image field (``jpg``, ``png``, ``webp``): P x P patches -> a patch VQ tokenizer
  (``mmshard tokenize --fields vq``).

>>> r = fit_codebook("ds", "units500.safetensors",
...                  FitCodebookConfig(field="mfcc", k=500))          # doctest: +SKIP
>>> r.stats["usage"]["used_fraction"]                                 # doctest: +SKIP
0.97

The file is written through :class:`~mmshard.storage.Storage` (``out`` may be
``s3://...``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._registry import config_from_dict, config_to_dict
from ...dataset import open_dataset
from ...errors import ConfigError, ShardError
from ..artifacts import save_artifact
from ..result import JobResult

__all__ = ["FitCodebookConfig", "FitCodebookResult", "fit_codebook"]

IMAGE_FIELDS = ("jpg", "png", "webp")
BINS_FIRST = {"mel"}  # stored [bins, frames]


@dataclass(frozen=True, kw_only=True)
class FitCodebookConfig:
    """What decides a fitted codebook: the ``field`` (a feature field set or an image
    field), ``k`` centroids, image ``patch`` size and optional ``pca_dim``, at most
    ``max_vectors`` sampled frames, ``niter`` k-means rounds, ``seed``.

    >>> FitCodebookConfig(field="mfcc", k=64).niter
    20
    """

    field: str
    k: int
    patch: int = 16
    pca_dim: int | None = None
    max_vectors: int = 500_000
    niter: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise ConfigError(f"field must name a feature field set (mel, mfcc, fbank, "
                              f"spectral) or an image field ({', '.join(IMAGE_FIELDS)}); "
                              f"got {self.field!r}")
        for name, low in (("k", 2), ("patch", 1), ("max_vectors", 1), ("niter", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {v!r}")
        if self.pca_dim is not None and (not isinstance(self.pca_dim, int) or self.pca_dim < 1):
            raise ConfigError(f"pca_dim must be an int >= 1 or None, got {self.pca_dim!r}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitCodebookConfig:
        return config_from_dict(cls, dict(data))


@dataclass(frozen=True)
class FitCodebookResult(JobResult):
    """``out``: the codebook file; ``stats``: kind, k, vectors, dim, usage."""


def _load_npy(data: bytes, field: str, key: str, shard: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:  # object arrays (pickles) and corrupt headers
        raise ShardError(f"{field}.npy of sample {key!r} in shard {shard} is not a numeric "
                         f"array ({e}); recompute the field set with mmshard tokenize "
                         "--overwrite") from e


def _frames(ds, field: str, max_vectors: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    sidecars = ds.sidecars()
    if field not in sidecars:
        raise ConfigError(f"{ds.root} has no {field!r} field set; run `mmshard tokenize "
                          f"{ds.root} --fields {field}` first (have: {sorted(sidecars) or 'none'})")
    side = sidecars[field]
    rng = np.random.default_rng(seed)
    chunks, total = [], 0
    for sh in side.shards:
        for s in ds.iter_shard(sh, field_set=field):
            arr = _load_npy(s[f"{field}.npy"], field, s["__key__"], sh.url)
            if arr.ndim != 2 or arr.dtype.kind not in "fiu":
                raise ShardError(f"{field}.npy of sample {s['__key__']!r} in shard {sh.url} "
                                 f"is not a 2-D numeric array: {arr.dtype} {arr.shape}")
            arr = arr.astype(np.float32)
            frames = arr.T if field in BINS_FIRST else arr
            chunks.append(frames)
            total += len(frames)
    if not chunks:
        raise ConfigError(f"field set {field!r} of {ds.root} holds no samples")
    x = np.concatenate(chunks)
    if len(x) > max_vectors:
        x = x[np.sort(rng.choice(len(x), max_vectors, replace=False))]
    feature = {"tokenizer": side.provenance.get("tokenizer"),
               "config": side.provenance.get("config", {}),
               "layout": "bins_frames" if field in BINS_FIRST else "frames_bins",
               "field_set": field}
    return np.ascontiguousarray(x), feature


def _images(ds, field: str) -> Iterator[np.ndarray]:
    from PIL import Image

    for sh in ds.index.shards:
        for s in ds.iter_shard(sh):
            if field in s:
                with Image.open(io.BytesIO(s[field])) as im:
                    yield np.asarray(im.convert("RGB"))


def fit_codebook(dataset: str, out: str, config: FitCodebookConfig | None = None, *,
                 storage_options: dict | None = None, **options: Any) -> FitCodebookResult:
    """Fit a codebook on ``dataset`` and save it at ``out``.

    Pass a :class:`FitCodebookConfig` or its fields as keywords (``field="mfcc", k=64``),
    not both.  Raises ConfigError for bad settings or a missing field set, ShardError
    (naming shard and key) for a feature that is not a numeric array.
    """
    from ...tokenizers.codebook import Codebook

    if config is not None and options:
        raise ConfigError("give fit_codebook a FitCodebookConfig or its options as "
                          f"keywords, not both (got config and {sorted(options)})")
    cfg = config or config_from_dict(FitCodebookConfig, options)
    ds = open_dataset(dataset, storage_options)
    source = f"{ds.root} field {cfg.field}"
    if cfg.field in IMAGE_FIELDS:
        from ...tokenizers.patch_vq import PatchVQTokenizer

        tok = PatchVQTokenizer.fit(_images(ds, cfg.field), patch=cfg.patch, k=cfg.k,
                                   pca_dim=cfg.pca_dim, seed=cfg.seed, created_from=source)
        path = save_artifact(out, tok.save, storage_options)
        return FitCodebookResult(out=path, stats={
            "kind": "patch_vq", "k": cfg.k, "patch": cfg.patch, "path": path,
            "usage": tok.usage()})
    x, feature = _frames(ds, cfg.field, cfg.max_vectors, cfg.seed)
    cb = Codebook.fit(x, k=cfg.k, niter=cfg.niter, seed=cfg.seed, created_from=source)
    cb.provenance["feature"] = feature
    path = save_artifact(out, cb.save, storage_options)
    usage = cb.usage(cb.encode(x))
    return FitCodebookResult(out=path, stats={
        "kind": "codebook", "k": cfg.k, "vectors": int(len(x)), "dim": int(x.shape[1]),
        "path": path, "usage": json.loads(json.dumps(usage, default=float))})
