"""Embedding encoders for ``mmshard embed``: built-ins that need no weights, adapters for
sentence-transformers and open_clip models on local disk, and plug-ins.

An encoder maps a list of decoded items of one modality to ``float32 [N, D]``:
images are RGB ``uint8 [H, W, 3]`` arrays, texts are ``str``, audio is
``(float32 [T], sample_rate)``.

Built-in encoders (deterministic, no downloads; for tests, demos and baselines):

- ``pixels``  (image): 8 x 8 x 3 area-averaged colour thumbnail plus a 4 x 4 x 4 colour
  histogram, centred — 256 dims.
- ``hashing`` (text): character 2- to 4-gram counts hashed (blake2b) into 512 buckets with
  a signed hash, sublinear tf — the HashingVectorizer recipe.
- ``mel_stats`` (audio): mean and standard deviation of each Whisper log-mel bin — 160 dims.

``sentence-transformers:/path/to/model`` and ``open_clip:ARCH:/path/to/weights.pt``
load local weights only (no hub access); ``package.module:factory`` builds any object
with ``encode(items) -> array`` or any callable.

>>> enc = build_encoder("hashing")
>>> v = enc.encode(["a red car", "a red car", "green tea"])
>>> v.shape, bool((v[0] == v[1]).all()), bool((v[0] == v[2]).all())
((3, 512), True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._registry import Registry, load_object
from ..errors import ConfigError, DataError, DependencyMissingError

__all__ = ["ENCODERS", "Encoder", "build_encoder"]


@dataclass
class Encoder:
    """``encode(items) -> float32 [N, D]`` for one ``modality``, with provenance."""

    name: str
    modality: str
    encode_fn: Callable[[Sequence[Any]], np.ndarray]
    provenance: dict[str, Any]

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        out = np.asarray(self.encode_fn(list(items)), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(items):
            raise DataError("bad_embedding", f"encoder {self.name} returned shape {out.shape} "
                            f"for {len(items)} items")
        if not np.isfinite(out).all():
            raise DataError("nan_embedding", f"encoder {self.name} returned NaN/inf")
        return out


ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")


@ENCODERS.register("pixels")
def _pixels(**_: Any) -> Encoder:
    from PIL import Image

    def enc(images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for im in images:
            thumb = np.asarray(Image.fromarray(im).resize((8, 8), Image.Resampling.BOX),
                               np.float32).reshape(-1) / 255.0
            q = (im.reshape(-1, 3) // 64).astype(np.int64)
            hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
            hist = hist.astype(np.float32) / max(1, q.shape[0])
            v = np.concatenate([thumb - thumb.mean(), hist - 1 / 64])
            out.append(v)
        return np.stack(out)

    return Encoder("pixels", "image", enc, {"encoder": "pixels", "version": "1", "dim": 256})


@ENCODERS.register("hashing")
def _hashing(dim: int = 512, **_: Any) -> Encoder:
    def enc(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), np.float32)
        for i, t in enumerate(texts):
            t = f" {t.lower()} "
            for n in (2, 3, 4):
                for j in range(len(t) - n + 1):
                    h = int.from_bytes(hashlib.blake2b(t[j:j + n].encode(), digest_size=8)
                                       .digest(), "little")
                    out[i, h % dim] += 1.0 if (h >> 63) & 1 else -1.0
        return np.sign(out) * np.log1p(np.abs(out))

    return Encoder("hashing", "text", enc, {"encoder": "hashing", "version": "1", "dim": dim})


@ENCODERS.register("mel_stats")
def _mel_stats(**_: Any) -> Encoder:
    from .audio_features import WhisperMel

    mel = WhisperMel()

    def enc(items: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
        out = []
        for x, sr in items:
            m = mel(x, sr)
            out.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
        return np.stack(out)

    return Encoder("mel_stats", "audio", enc, {"encoder": "mel_stats", "version": "1",
                                               "dim": 160})


def _sentence_transformers(path: str, device: str) -> Encoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise DependencyMissingError("encoder sentence-transformers:... needs "
                                     "`pip install sentence-transformers`") from e
    model = SentenceTransformer(path, device=device, local_files_only=True)

    def enc(texts: Sequence[str]) -> np.ndarray:
        return model.encode(list(texts), convert_to_numpy=True, batch_size=64)

    return Encoder(f"sentence-transformers:{path}", "text", enc,
                   {"encoder": "sentence-transformers", "model": path})


def _open_clip(spec: str, device: str, modality: str) -> Encoder:
    try:
        import open_clip
        import torch
    except ImportError as e:
        raise DependencyMissingError("encoder open_clip:... needs `pip install open_clip_torch`"
                                     ) from e
    arch, _, weights = spec.partition(":")
    if not weights:
        raise ConfigError("open_clip encoder spec is open_clip:ARCH:/path/to/weights")
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights,
                                                                 device=device)
    model.eval()
    tok = open_clip.get_tokenizer(arch)

    @torch.no_grad()
    def enc(items: Sequence[Any]) -> np.ndarray:
        from PIL import Image

        if modality == "text":
            return model.encode_text(tok(list(items)).to(device)).float().cpu().numpy()
        batch = torch.stack([preprocess(Image.fromarray(x)) for x in items]).to(device)
        return model.encode_image(batch).float().cpu().numpy()

    return Encoder(f"open_clip:{spec}", modality, enc, {"encoder": "open_clip", "model": spec})


def build_encoder(spec: str, *, modality: str | None = None, device: str = "cpu",
                  **options: Any) -> Encoder:
    """``spec``: a built-in name, ``sentence-transformers:PATH``, ``open_clip:ARCH:WEIGHTS``
    or ``package.module:factory`` (the factory gets ``**options`` and returns an object
    with ``encode(items)`` or a callable; ``modality`` must then be given)."""
    if spec in ENCODERS:
        enc = ENCODERS.get(spec)(**options)
    elif spec.startswith("sentence-transformers:"):
        enc = _sentence_transformers(spec.split(":", 1)[1], device)
    elif spec.startswith("open_clip:"):
        enc = _open_clip(spec.split(":", 1)[1], device, modality or "image")
    elif ":" in spec:
        if modality is None:
            raise ConfigError(f"plug-in encoder {spec!r} needs the input modality "
                              "(image|text|audio), e.g. from --field")
        obj = load_object(spec)(**options)
        fn = getattr(obj, "encode", None) or (obj if callable(obj) else None)
        if fn is None:
            raise ConfigError(f"plug-in encoder {spec!r} returned {type(obj).__name__}, which "
                              "has no encode() and is not callable")

        def call(items: Sequence[Any]) -> np.ndarray:
            out = fn(items)
            return out.detach().cpu().numpy() if hasattr(out, "detach") else out

        enc = Encoder(spec, modality, call, {"encoder": spec, "options": options})
    else:
        raise ConfigError(f"unknown encoder {spec!r}; built-ins: {', '.join(ENCODERS.names())}; "
                          "or sentence-transformers:PATH, open_clip:ARCH:WEIGHTS, "
                          "package.module:factory")
    if modality is not None and enc.modality != modality:
        raise ConfigError(f"encoder {spec!r} encodes {enc.modality}, but the field holds "
                          f"{modality}")
    return enc
