"""Video field sets of the transform job: ``frames`` (sampled frames as JPEG thumbnails).

``mmshard tokenize DS --fields frames`` writes, per video sample, ``frames.000.jpg``,
``frames.001.jpg`` ... and ``frames.json`` (frame indices, timestamps, the sampler's
name and config, the thumbnail size) into the ``frames/`` sidecar.  Which frames: a
sampler from :mod:`mmshard.samplers.frames` (``FRAME_SAMPLERS``: stride, uniform, tsn,
fps, keyframe, motion) chosen by the ``sampler`` option; every other option that is
not a :class:`FramesConfig` field goes to that sampler's config
(``--option frames.sampler=tsn --option frames.num_segments=8``).

Deterministic: samplers run in evaluation mode (``training=False``: segment middles, no
jitter) unless ``training=True``, whose random draws then come from ``(seed, content
hash of the video)``, so a rerun gives the same frames.  Only the sampled frames are
decoded (random access: seek to the keyframe before each target on PyAV, ``get_batch``
on decord), ``_CHUNK`` frames at a time, each resized and JPEG-encoded before the next
chunk is decoded: memory holds a chunk, never the whole video.  The ``keyframe`` sampler
runs the shot detector (streaming, small frames) and samples around its keyframes; the
``motion`` sampler streams small grey frames once for per-frame motion scores.

>>> fs = build_field_set("frames", {"sampler": "uniform", "num_frames": 4})  # doctest: +SKIP
>>> out = fs.compute(open("clip.mp4", "rb").read())                        # doctest: +SKIP
>>> sorted(out)                                                             # doctest: +SKIP
['frames.000.jpg', 'frames.001.jpg', 'frames.002.jpg', 'frames.003.jpg', 'frames.json']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._registry import config_from_dict, config_to_dict
from ...errors import ConfigError
from .fields import FIELD_SETS, FieldSet

__all__ = ["FramesConfig", "FramesExtractor"]

VERSION = "1"
_CHUNK = 8  # sampled frames decoded (and held full size) at once


@dataclass(frozen=True, kw_only=True)
class FramesConfig:
    """Options of the ``frames`` field set (the sampler's own options come beside them).

    ``size``: longest side of the thumbnails in pixels (never upscaled); ``jpeg_quality``
    1..100; ``backend``: video decoder (pyav | decord | opencv | auto); ``max_images``:
    at most this many thumbnails per video (more samples are thinned evenly, <= 1000).
    """

    sampler: str = "uniform"
    size: int = 224
    jpeg_quality: int = 90
    seed: int = 0
    training: bool = False
    backend: str = "pyav"
    max_images: int = 256

    def __post_init__(self) -> None:
        from ...media.video_reader import BACKENDS
        from ...samplers.frames import FRAME_SAMPLERS

        FRAME_SAMPLERS.get(self.sampler)  # unknown names list the known ones
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 8:
            raise ConfigError(f"frames size must be an int >= 8 pixels, got {self.size!r}")
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be an int in [1, 100], got "
                              f"{self.jpeg_quality!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got "
                              f"{self.backend!r}")
        if not isinstance(self.max_images, int) or not 1 <= self.max_images <= 1000:
            raise ConfigError(f"max_images must be an int in [1, 1000], got "
                              f"{self.max_images!r}")


class FramesExtractor:
    """Sampled frames of a video as JPEG thumbnails plus ``frames.json``.

    >>> ex = FramesExtractor.from_options({"sampler": "tsn", "num_segments": 4})
    >>> ex.sampler.name, ex.config.size
    ('tsn', 224)
    """

    name = "frames"
    version = VERSION

    def __init__(self, config: FramesConfig | None = None,
                 sampler_options: Mapping[str, Any] | None = None) -> None:
        from ...samplers.frames import build_frame_sampler

        self.config = config or FramesConfig()
        self.sampler = build_frame_sampler(self.config.sampler, dict(sampler_options or {}),
                                           seed=self.config.seed)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FramesExtractor:
        """Split flat options into :class:`FramesConfig` fields and sampler options."""
        own = {f.name for f in dataclasses.fields(FramesConfig)}
        opts = dict(options)
        cfg = config_from_dict(FramesConfig, {k: v for k, v in opts.items() if k in own})
        return cls(cfg, {k: v for k, v in opts.items() if k not in own})

    def provenance(self) -> dict[str, Any]:
        """``{"tokenizer": "frames", "version", "config", "sampler", "sampler_config"}``."""
        return {"tokenizer": self.name, "version": self.version,
                "config": config_to_dict(self.config), "sampler": self.sampler.name,
                "sampler_config": config_to_dict(self.sampler.config)}

    def __call__(self, video: bytes) -> dict[str, bytes]:
        return self.compute(video)

    def compute(self, video: bytes) -> dict[str, bytes]:
        """``{"frames.json": ..., "frames.000.jpg": ...}`` for one video's bytes.

        Raises :class:`~mmshard.errors.DataError` for undecodable or too-short video.
        """
        from ...media.video_reader import VideoReader

        c = self.config
        with VideoReader(video, backend=c.backend) as vr:
            meta = vr.meta
            ts = vr.timestamps()
            extra: dict[str, Any] = {}
            if self.sampler.name == "keyframe":
                from ...tokenizers.keyframes import KeyframeDetector

                kf, _ = KeyframeDetector().detect(vr)
                extra["keyframes"] = kf["keyframe_frames"] or kf["scene_starts"]
            elif self.sampler.name == "motion":
                extra["motion"] = _motion(vr)
            key = _sha256(video)[:16] if c.training else None
            picked = self.sampler.sample(meta.num_frames, meta.fps, timestamps=ts, key=key,
                                         training=c.training, **extra)
            idx = picked.indices
            thinned_from = None
            if len(idx) > c.max_images:
                thinned_from = len(idx)
                idx = idx[np.floor(np.arange(c.max_images) * len(idx) / c.max_images)
                          .astype(np.int64)]
            scale = min(1.0, c.size / max(meta.width, meta.height))
            wh = (max(1, round(meta.width * scale)), max(1, round(meta.height * scale)))
            out: dict[str, bytes] = {}
            files = []
            # sorted unique targets decoded in chunks; repeats reuse the same JPEG
            uniq = np.unique(idx)
            jpg_of: dict[int, bytes] = {}
            for s in range(0, len(uniq), _CHUNK):
                chunk = uniq[s:s + _CHUNK]
                frames = vr.get_frames(chunk)
                for i, img in zip(chunk.tolist(), frames):
                    jpg_of[i] = _jpeg(img, wh, c.jpeg_quality)
                del frames
            for n, i in enumerate(idx.tolist()):
                name = f"frames.{n:03d}.jpg"
                out[name] = jpg_of[i]
                files.append(name)
        doc = {"tokenizer": self.name, "version": self.version,
               "sampler": self.sampler.name, "sampler_config": config_to_dict(self.sampler.config),
               "seed": c.seed, "training": c.training, "backend": c.backend,
               "indices": idx.tolist(), "timestamps": [round(float(ts[i]), 6) for i in idx],
               "files": files, "size": list(wh), "num_frames": meta.num_frames,
               "fps": round(meta.fps, 6), "width": meta.width, "height": meta.height}
        if thinned_from is not None:
            doc["thinned_from"] = thinned_from
        out["frames.json"] = json.dumps(doc, sort_keys=True).encode()
        return out


def _sha256(video: Any) -> str:
    """Hex sha256 of a video's bytes, or of a FileRange read in 1 MiB pieces."""
    if isinstance(video, (bytes, bytearray, memoryview)):
        return hashlib.sha256(video).hexdigest()
    h = hashlib.sha256()
    with video.open() as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def _jpeg(img: np.ndarray, wh: tuple[int, int], quality: int) -> bytes:
    import cv2

    if (img.shape[1], img.shape[0]) != wh:
        img = cv2.resize(img, wh, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - imencode fails only on invalid arrays
        raise ConfigError("JPEG encoding of a frame failed")
    return buf.tobytes()


def _motion(vr: Any, width: int = 64) -> np.ndarray:
    """Mean absolute grey-level change per frame (frame 0: 0), streamed at ``width``."""
    meta = vr.meta
    h = max(2, round(meta.height * width / meta.width))
    out = np.zeros(meta.num_frames, np.float64)
    prev = None
    for f in vr.iter_frames(size=(width, h), gray=True):
        g = f.image.astype(np.int16)
        if prev is not None:
            out[f.index] = float(np.abs(g - prev).mean())
        prev = g
    return out


@FIELD_SETS.register("frames")
def _frames(options: Mapping[str, Any], device: str, out_name: str) -> FieldSet:
    ex = FramesExtractor.from_options(options)
    return FieldSet("frames", "video", ("frames.json",), ex.compute, ex.provenance(),
                    file_range=True)
