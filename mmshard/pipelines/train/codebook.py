"""``mmshard fit-codebook``: fit a k-means codebook on a dataset field.

Two kinds of field:

- a sidecar feature field set (``mel``, ``mfcc``, ``fbank``, ``spectral``): its frames
  (``[frames, D]``; mel is stored ``[bins, frames]`` and transposed) are sampled across
  shards and clustered; the codebook records the feature's tokenizer and config, so
  ``mmshard tokenize --fields units`` recomputes the same feature;
- an image field (``jpg``, ``png``, ``webp``): P x P patches -> a patch VQ tokenizer
  (``mmshard tokenize --fields vq``).

>>> fit_codebook("ds", "mfcc", k=500, out="units500.safetensors")   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...dataset import open_dataset
from ...errors import ConfigError, ShardError

__all__ = ["fit_codebook"]

IMAGE_FIELDS = ("jpg", "png", "webp")
BINS_FIRST = {"mel"}  # stored [bins, frames]


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
            arr = np.load(io.BytesIO(s[f"{field}.npy"]), allow_pickle=False).astype(np.float32)
            if arr.ndim != 2:
                raise ShardError(f"{field}.npy of {s['__key__']} is not 2-D: {arr.shape}")
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


def fit_codebook(dataset: str, field: str, *, k: int, out: str, patch: int = 16,
                 pca_dim: int | None = None, max_vectors: int = 500_000, niter: int = 20,
                 seed: int = 0, storage_options: dict | None = None) -> dict[str, Any]:
    """Fit and save a codebook; returns a summary (k, vectors, usage, path)."""
    from ...tokenizers.codebook import Codebook

    ds = open_dataset(dataset, storage_options)
    if field in IMAGE_FIELDS:
        from ...tokenizers.patch_vq import PatchVQTokenizer

        tok = PatchVQTokenizer.fit(_images(ds, field), patch=patch, k=k, pca_dim=pca_dim,
                                   seed=seed, created_from=f"{ds.root} field {field}")
        path = tok.save(out)
        return {"kind": "patch_vq", "k": k, "patch": patch, "path": str(path),
                "usage": tok.usage()}
    x, feature = _frames(ds, field, max_vectors, seed)
    cb = Codebook.fit(x, k=k, niter=niter, seed=seed, created_from=f"{ds.root} field {field}")
    cb.provenance["feature"] = feature
    path = cb.save(out)
    usage = cb.usage(cb.encode(x))
    return {"kind": "codebook", "k": k, "vectors": int(len(x)), "dim": int(x.shape[1]),
            "path": str(path), "usage": json.loads(json.dumps(usage, default=float))}
