"""``mmshard train-vq``: train a VQ-VAE image tokenizer on a dataset's images.

Images stream from the dataset's shards through the streaming :class:`~mmshard.Loader`
(seeded shuffle, epoch after epoch, decoded in ``num_workers`` processes): each image
is scaled so its shortest side is ``image_size`` and centre-cropped to a square
(:class:`~mmshard.pipelines.stream.decode.ShortestSideCrop`).  Only samples the manifest knows
as images (width and height recorded) are planned; a sample that still fails to decode
is skipped and counted (``summary["skipped"]``).  The model is
:func:`mmshard.tokenizers.vqvae.train_vqvae` (EMA codebook, dead-code restarts).

Outputs: the checkpoint (``out``, safetensors, weights only, written by rename) and a
summary next to it (``<out stem>.summary.json``): the config, the dataset, the loss and
codebook-usage history (every ``log_every``-th step), and the codebook usage measured by
encoding up to ``usage_images`` training images with the final model.  Tokenize with
``mmshard tokenize DATASET --fields vqvae --option vqvae.path=OUT
--option vqvae.image_size=N``.

>>> r = train_vq("data/photos", "vq1024.safetensors", k=1024, steps=2000,
...              image_size=64)                                   # doctest: +SKIP
>>> r.stats["usage"]["used_fraction"]                              # doctest: +SKIP
0.93
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._registry import config_from_dict, config_to_dict
from ...errors import ConfigError, DataError
from ..artifacts import save_artifact, split_path
from ..result import JobResult

__all__ = ["TrainVQConfig", "TrainVQResult", "summary_path", "train_vq"]

SUFFIX = ".safetensors"
# VQVAEConfig fields a user may set through ``model``; k and batch_size have their own
# arguments, in_channels is fixed (RGB).
_MODEL_FIXED = ("batch_size", "codebook_size", "in_channels")


@dataclass(frozen=True, kw_only=True)
class TrainVQConfig:
    """What decides the trained tokenizer (execution choices such as device excluded).

    ``k``: codebook size; ``image_size``: square training resolution (a multiple of the
    model's downsample factor, ``2 ** num_down``); ``model``: other
    :class:`~mmshard.tokenizers.vqvae.VQVAEConfig` fields (``code_dim``, ``channels``,
    ``num_down``, ``lr``, ``restart_after`` ...); ``split``: which split's shards to
    read (None = all).  ``log_every``: history stride (None = about 1000 rows).

    >>> TrainVQConfig(k=256, steps=100, image_size=32).vqvae_config().codebook_size
    256
    """

    k: int
    steps: int
    image_size: int = 64
    batch_size: int = 32
    seed: int = 0
    split: str | None = "train"
    model: Mapping[str, Any] = field(default_factory=dict)
    log_every: int | None = None
    usage_images: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", dict(self.model))
        for name in ("k", "steps", "image_size", "batch_size", "usage_images"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name in (
                    "usage_images",) else 1):
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if self.log_every is not None and self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1 (or None), got {self.log_every}")
        fixed = sorted(set(self.model) & set(_MODEL_FIXED))
        if fixed:
            raise ConfigError(f"model option(s) {fixed} are set by train_vq itself (k, "
                              "batch_size; images are RGB); remove them from model")
        cfg = self.vqvae_config()  # unknown model options fail here, listing the allowed
        if self.image_size % cfg.factor:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of the "
                              f"downsample factor {cfg.factor} (2 ** num_down); use e.g. "
                              f"{max(cfg.factor, self.image_size // cfg.factor * cfg.factor)}")

    def vqvae_config(self) -> Any:
        """The :class:`~mmshard.tokenizers.vqvae.VQVAEConfig` this run trains."""
        from ...tokenizers.vqvae import VQVAEConfig

        return config_from_dict(VQVAEConfig, {**self.model, "codebook_size": self.k,
                                              "batch_size": self.batch_size})

    @property
    def stride(self) -> int:
        return self.log_every or max(1, self.steps // 1000)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainVQConfig:
        return config_from_dict(cls, dict(data))


def summary_path(out: str) -> str:
    """``vq.safetensors`` -> ``vq.summary.json`` (where :func:`train_vq` writes its summary)."""
    return out[: -len(SUFFIX)] + ".summary.json" if out.endswith(SUFFIX) else out + ".summary.json"


class _Images:
    """Endless iterator of ``[S, S, 3]`` uint8 images from the Loader, epoch by epoch.

    A planned batch's padding (rank evening, or a copy standing in for a sample that did
    not decode) is dropped, so every image the model sees is a real, distinct sample.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epochs = 0
        self.images = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            self.loader.set_epoch(self.epochs)
            got = 0
            for batch in self.loader:
                keep = ~batch["__pad__"]
                imgs = batch["image"][keep].permute(0, 2, 3, 1).numpy()
                for img in imgs:
                    got += 1
                    self.images += 1
                    yield img
            self.epochs += 1
            if got == 0:
                raise DataError("no_images", "an epoch of the dataset yielded no decodable "
                                "image; check the split and the ledger")


def _image_batching() -> Any:
    """FixedBatching over the samples the manifest records a width and height for."""
    from ...samplers.batching import PlannedBatch, _chunks

    class ImagesOnly:
        equal_counts = False

        def plan(self, ids: np.ndarray, pad: np.ndarray, *, batch_size: int, drop_last: bool,
                 meta: Any, rng: np.random.Generator, epoch: int) -> list[PlannedBatch]:
            if meta.width is not None and meta.height is not None:
                ok = (meta.width[ids] > 0) & (meta.height[ids] > 0)
                ids, pad = ids[ok], pad[ok]
            return _chunks(ids, pad, batch_size, drop_last)

    return ImagesOnly()


def _usage(model: Any, images: list[np.ndarray], k: int) -> dict[str, Any]:
    from ...tokenizers.vqvae import VQVAETokenizer

    if not images:
        return {"images": 0, "used_codes": 0, "used_fraction": 0.0, "perplexity": 0.0}
    tok = VQVAETokenizer(model)
    counts = np.zeros(k, np.int64)
    for s in range(0, len(images), 64):
        ids = tok.encode(images[s: s + 64])
        counts += np.bincount(ids.ravel().astype(np.int64), minlength=k)
    p = counts / max(1, counts.sum())
    perplexity = float(math.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    return {"images": len(images), "used_codes": int((counts > 0).sum()),
            "used_fraction": round(float((counts > 0).mean()), 6),
            "perplexity": round(perplexity, 4)}


@dataclass(frozen=True)
class TrainVQResult(JobResult):
    """``out``: the checkpoint; ``stats``: the summary (also in :func:`summary_path`)."""


def _check_run(out: str, device: str | None, num_workers: int) -> None:
    if not out.endswith(SUFFIX):
        raise ConfigError(f"--out must be a {SUFFIX} file (weights only; pickle/.pt "
                          f"checkpoints are not written or read), got {out!r}")
    if device is not None and device != "cpu" and not str(device).startswith("cuda"):
        raise ConfigError(f"device must be cpu, cuda[:N] or None, got {device!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers (Loader processes) must be an int >= 0, got "
                          f"{num_workers!r}")


def _loader(dataset: str, cfg: TrainVQConfig, num_workers: int,
            storage_options: dict | None) -> Any:
    """The Loader of the training images: square uint8 crops, undecodable ones skipped."""
    from ..stream.decode import DecodeConfig, ImageDecode, ShortestSideCrop
    from ..stream.loader import Loader
    from ..stream.source import DatasetSource

    # field_sets=(): sidecars hold no images, and joining them would read more bytes
    return Loader(DatasetSource(root=str(dataset), split=cfg.split, field_sets=(),
                                storage_options=storage_options),
                  batch_size=cfg.batch_size, seed=cfg.seed, split=cfg.split,
                  num_workers=num_workers,
                  rank=0, world_size=1,  # one trainer reads everything, even under DDP
                  batching=_image_batching(), on_error="skip",
                  decode=DecodeConfig(image=ImageDecode(
                      resize=ShortestSideCrop(size=cfg.image_size), dtype="uint8"),
                      text=False, label=False))


def _fit(images: _Images, cfg: TrainVQConfig, vq_cfg: Any, device: str | None,
         progress: bool) -> tuple[Any, list[dict[str, Any]]]:
    from tqdm import tqdm

    from ...tokenizers.vqvae import train_vqvae

    gen = iter(images)
    stream: Iterator[np.ndarray] = gen
    if progress:
        stream = iter(tqdm(gen, total=cfg.steps * cfg.batch_size, unit="img", desc="train-vq"))
    try:
        return train_vqvae(stream, vq_cfg, steps=cfg.steps, seed=cfg.seed, device=device)
    finally:
        if stream is not gen:
            stream.close()  # type: ignore[attr-defined]  (closes the progress bar)
        gen.close()  # stops the loader's pass (and its worker processes, if any)


def _held_out(loader: Any, epoch: int, n: int) -> list[np.ndarray]:
    """Up to ``n`` images of a fresh epoch, for the final codebook usage."""
    held: list[np.ndarray] = []
    if n:
        loader.set_epoch(epoch)
        for batch in loader:
            keep = ~batch["__pad__"]
            held.extend(batch["image"][keep].permute(0, 2, 3, 1).numpy())
            if len(held) >= n:
                break
    return held[:n]


def _summary(out: str, dataset: str, cfg: TrainVQConfig, vq_cfg: Any, trained: Any,
             history: list[dict[str, Any]], images: _Images, loader: Any, seconds: float,
             usage: dict[str, Any]) -> dict[str, Any]:
    stride = cfg.stride
    rows = [h for h in history if h["step"] % stride == 0 or h is history[-1]]
    return {
        "checkpoint": out, "dataset": str(dataset), "split": cfg.split,
        "config": {**config_to_dict(cfg), "model": config_to_dict(vq_cfg)},
        "device": str(next(trained.parameters()).device), "steps": len(history),
        "images_seen": len(history) * cfg.batch_size, "epochs": images.epochs,
        "skipped": int(loader.stats["skipped"]), "errors": dict(loader.stats["errors"]),
        "seconds": round(seconds, 3),
        "first": {k_: history[0][k_] for k_ in ("loss", "recon")} if history else None,
        "last": {k_: history[-1][k_] for k_ in ("loss", "recon")} if history else None,
        "usage": usage, "history_stride": stride,
        "history": [{k_: (round(v, 6) if isinstance(v, float) else v) for k_, v in h.items()}
                    for h in rows],
    }


def train_vq(dataset: str, out: str, config: TrainVQConfig | None = None, *,
             device: str | None = "cpu", num_workers: int = 0, progress: bool = False,
             storage_options: dict | None = None, **options: Any) -> TrainVQResult:
    """Train a VQ-VAE on the images of ``dataset``; write ``out`` and its summary JSON.

    Pass a :class:`TrainVQConfig` or its fields as keywords (``k=32, steps=30``), not
    both.  ``device``: ``"cpu"``, ``"cuda[:N]"`` or None (CUDA when available);
    ``num_workers``: the Loader's decoding processes.  ``out`` may be an ``s3://`` URL
    (checkpoint and summary are written through Storage).  The summary's ``history``
    rows have ``step``, ``loss``, ``recon``, ``commit``, ``perplexity``, ``used_codes``,
    ``restarts``.

    Raises ConfigError for bad settings (before reading any shard), DataError when the
    dataset yields no decodable image.

    >>> r = train_vq("ds", "vq.safetensors", k=32, steps=30, image_size=32)  # doctest: +SKIP
    >>> r.stats["history"][-1]["loss"] < r.stats["history"][0]["loss"]     # doctest: +SKIP
    True
    """
    from ...tokenizers.vqvae import save_vqvae

    if config is not None and options:
        raise ConfigError("give train_vq a TrainVQConfig or its options as keywords, not "
                          f"both (got config and {sorted(options)})")
    cfg = config or config_from_dict(TrainVQConfig, options)
    out = os.fspath(out)
    _check_run(out, device, num_workers)
    vq_cfg = cfg.vqvae_config()
    loader = _loader(dataset, cfg, num_workers, storage_options)
    images = _Images(loader)
    t0 = time.perf_counter()
    trained, history = _fit(images, cfg, vq_cfg, device, progress)
    seconds = time.perf_counter() - t0
    usage = _usage(trained, _held_out(loader, images.epochs + 1, cfg.usage_images), cfg.k)
    out = save_artifact(out, lambda p: save_vqvae(trained, p), storage_options)
    summary = _summary(out, dataset, cfg, vq_cfg, trained, history, images, loader, seconds,
                       usage)
    st, rel = split_path(summary_path(out), storage_options)
    st.write_bytes(rel, json.dumps(summary, indent=1, sort_keys=True).encode())
    return TrainVQResult(out=out, stats=summary)

