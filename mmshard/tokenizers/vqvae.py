"""A small trainable VQ-VAE: conv encoder/decoder, EMA codebook with dead-code restarts.

The model (``VQVAE``) maps ``[B, 3, H, W]`` float images in ``[0, 1]`` to an id grid
``[B, H/f, W/f]`` (``f = 2 ** num_down``, 4 or 8) and back. The codebook is learned by
exponential moving averages (van den Oord et al. 2017, appendix; Razavi et al. 2019):

- ``N_k <- decay * N_k + (1 - decay) * n_k`` and ``m_k <- decay * m_k + (1 - decay) *
  sum(z assigned to k)``; Laplace smoothing ``N_k' = (N_k + eps) / (N + K * eps) * N``
  keeps ``e_k = m_k / N_k'`` finite for empty codes.
- *Dead-code restarts* fight codebook collapse: a code that no input chose for
  ``restart_after`` consecutive steps is re-initialised from a random encoder output of
  the current batch (and its EMA state reset to it).
- Loss: reconstruction (``mse`` or ``l1``) + ``beta`` (0.25) x commitment
  ``||z - sg(e)||^2``; gradients pass the quantiser straight through.
- Optional perceptual and adversarial terms are off by default. mmshard downloads no
  weights: a perceptual loss needs a user-supplied ``feature_extractor`` module (e.g. a
  VGG you loaded from local weights) and an adversarial loss a ``discriminator`` module;
  enabling either without it is a :class:`ConfigError`.

Checkpoints are safetensors (weights and EMA buffers) with the JSON config in the
metadata; :func:`load_vqvae` reads weights only (``safetensors.torch.load_file``) and
refuses pickle / ``torch.save`` files before parsing them.

    >>> import numpy as np
    >>> cfg = VQVAEConfig(codebook_size=16, code_dim=8, channels=(8, 16), batch_size=4)
    >>> imgs = [np.full((16, 16, 3), i * 20, np.uint8) for i in range(8)]
    >>> model, history = train_vqvae(imgs, cfg, steps=2, seed=0)
    >>> VQVAETokenizer(model)(imgs[0]).shape, sorted(history[-1])[:3]
    ((4, 4), ['commit', 'loss', 'perplexity'])
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._registry import config_from_dict, config_to_dict
from ..errors import ConfigError, DataError, DependencyMissingError
from .base import TOKENIZERS

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "VQVAE",
    "VQVAEConfig",
    "VQVAETokenizer",
    "load_vqvae",
    "save_vqvae",
    "train_vqvae",
]

_RECON = ("mse", "l1")
_FORMAT = "mmshard.vqvae"
_VERSION = "1"


@dataclass(frozen=True, kw_only=True)
class VQVAEConfig:
    """Architecture, codebook and training settings of a :class:`VQVAE`.

    ``channels`` are the encoder widths; ``num_down`` stride-2 convs give the downsample
    factor ``2 ** num_down`` (2 -> 4, 3 -> 8). ``restart_after`` is the number of
    consecutive unused steps before a code is restarted (0 disables restarts).
    """

    in_channels: int = 3
    channels: tuple[int, ...] = (64, 128)
    num_down: int = 2
    num_res_blocks: int = 1
    code_dim: int = 64
    codebook_size: int = 512
    decay: float = 0.99
    epsilon: float = 1e-5
    beta: float = 0.25
    recon_loss: str = "mse"
    restart_after: int = 20
    init_from_batch: bool = True
    lr: float = 2e-3
    batch_size: int = 32
    perceptual_weight: float = 0.0
    adversarial_weight: float = 0.0
    adversarial_start: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"channels must be positive ints, got {self.channels}")
        if self.num_down not in (1, 2, 3, 4):
            raise ConfigError(f"num_down must be 1..4 (factor 2..16), got {self.num_down}")
        for name in ("in_channels", "code_dim", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 2 <= self.codebook_size <= 2**31 - 1:
            raise ConfigError(f"codebook_size must be in 2..2^31-1, got {self.codebook_size}")
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"decay must be in (0, 1), got {self.decay}")
        if self.epsilon <= 0 or self.beta < 0 or self.lr <= 0:
            raise ConfigError("epsilon and lr must be > 0 and beta >= 0, got "
                              f"epsilon={self.epsilon} lr={self.lr} beta={self.beta}")
        if self.recon_loss not in _RECON:
            raise ConfigError(f"recon_loss {self.recon_loss!r} unknown; allowed: "
                              f"{', '.join(_RECON)}")
        if self.restart_after < 0 or self.num_res_blocks < 0 or self.adversarial_start < 0:
            raise ConfigError("restart_after, num_res_blocks and adversarial_start must be >= 0")
        if self.perceptual_weight < 0 or self.adversarial_weight < 0:
            raise ConfigError("perceptual_weight and adversarial_weight must be >= 0")

    @property
    def factor(self) -> int:
        return 2**self.num_down


def _torch() -> Any:
    import torch

    return torch


def _device(device: str | None) -> Any:
    """``None`` -> CUDA when available, else CPU; a CUDA request without CUDA is refused."""
    torch = _torch()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DependencyMissingError(f"device={device!r} but torch sees no CUDA device; "
                                     "pass device='cpu' (or None to pick automatically)")
    return dev


def _build_model_class() -> type:
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class ResBlock(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
            self.conv2 = nn.Conv2d(ch, ch, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv2(F.relu(self.conv1(F.relu(x))))

    class EMACodebook(nn.Module):
        """EMA vector quantiser; buffers hold the EMA state so checkpoints resume."""

        def __init__(self, k: int, dim: int, decay: float, eps: float) -> None:
            super().__init__()
            self.k, self.dim, self.decay, self.eps = k, dim, decay, eps
            self.register_buffer("embed", torch.randn(k, dim) * 0.1)
            self.register_buffer("cluster_size", torch.ones(k))
            self.register_buffer("embed_sum", self.embed.clone())
            self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.int64))
            self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

        def assign(self, flat: torch.Tensor) -> torch.Tensor:
            # ||z||^2 - 2 z.e + ||e||^2 ; argmin is deterministic (first minimum)
            d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t()
                 + self.embed.pow(2).sum(1)[None, :])
            return d.argmin(1)

        @torch.no_grad()
        def init_from(self, flat: torch.Tensor, gen: torch.Generator) -> None:
            idx = torch.randint(0, flat.shape[0], (self.k,), generator=gen,
                                device="cpu").to(flat.device)
            self.embed.copy_(flat[idx])
            self.embed_sum.copy_(flat[idx])
            self.cluster_size.fill_(1.0)
            self.initialised.fill_(True)

        @torch.no_grad()
        def update(self, flat: torch.Tensor, ids: torch.Tensor, restart_after: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, int]:
            onehot = F.one_hot(ids, self.k).to(flat.dtype)
            counts = onehot.sum(0)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.k * self.eps) * n
            self.embed.copy_(self.embed_sum / smoothed[:, None])
            self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
            restarted = 0
            if restart_after > 0:
                dead = (self.unused_steps >= restart_after).nonzero().flatten()
                if dead.numel():
                    idx = torch.randint(0, flat.shape[0], (dead.numel(),), generator=gen,
                                        device="cpu").to(flat.device)
                    self.embed[dead] = flat[idx]
                    self.embed_sum[dead] = flat[idx]
                    self.cluster_size[dead] = 1.0
                    self.unused_steps[dead] = 0
                    restarted = int(dead.numel())
            return counts, restarted

    class _VQVAE(nn.Module):
        """Conv encoder -> EMA codebook -> conv decoder (see the module docstring).

        ``encode(x)`` takes ``[B, C, H, W]`` floats in ``[0, 1]`` (H, W multiples of
        ``config.factor``) and returns int64 ids ``[B, H/f, W/f]``; ``decode(ids)``
        returns images in ``[0, 1]``; ``forward(x)`` returns ``(reconstruction in
        [-1, 1] space, z, z_q, ids)`` for training.
        """

        def __init__(self, config: VQVAEConfig) -> None:
            super().__init__()
            self.config = config
            ch = config.channels
            widths = [ch[min(i, len(ch) - 1)] for i in range(config.num_down)]
            enc: list[nn.Module] = []
            prev = config.in_channels
            for w in widths:
                enc += [nn.Conv2d(prev, w, 4, stride=2, padding=1), nn.ReLU()]
                prev = w
            enc.append(nn.Conv2d(prev, prev, 3, padding=1))
            enc += [ResBlock(prev) for _ in range(config.num_res_blocks)]
            enc += [nn.ReLU(), nn.Conv2d(prev, config.code_dim, 1)]
            self.encoder = nn.Sequential(*enc)
            dec: list[nn.Module] = [nn.Conv2d(config.code_dim, prev, 3, padding=1)]
            dec += [ResBlock(prev) for _ in range(config.num_res_blocks)]
            dec.append(nn.ReLU())
            ups = list(reversed(widths))
            for i in range(len(ups)):
                out = ups[i + 1] if i + 1 < len(ups) else ups[-1]
                dec += [nn.ConvTranspose2d(prev, out, 4, stride=2, padding=1), nn.ReLU()]
                prev = out
            dec.append(nn.Conv2d(prev, config.in_channels, 3, padding=1))
            self.decoder = nn.Sequential(*dec)
            self.codebook = EMACodebook(config.codebook_size, config.code_dim,
                                        config.decay, config.epsilon)

        def _check(self, x: torch.Tensor) -> None:
            f = self.config.factor
            if x.ndim != 4 or x.shape[1] != self.config.in_channels:
                raise DataError("bad_shape", f"expected [B, {self.config.in_channels}, H, W], "
                                f"got {tuple(x.shape)}")
            if x.shape[2] % f or x.shape[3] % f:
                raise DataError("bad_shape", f"H and W must be multiples of {f}, got "
                                f"{x.shape[2]}x{x.shape[3]}; resize with a "
                                "mmshard.media.resize policy")

        def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
            self._check(x)
            return self.encoder(x * 2 - 1)

        def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            b, d, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            ids = self.codebook.assign(flat)
            zq = self.codebook.embed[ids].view(b, h, w, d).permute(0, 3, 1, 2)
            return zq, ids.view(b, h, w)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            z = self.encode_latents(x)
            zq, ids = self.quantise(z)
            zq_st = z + (zq - z).detach()
            return self.decoder(zq_st), z, zq, ids

        @torch.no_grad()
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.quantise(self.encode_latents(x))[1]

        @torch.no_grad()
        def decode(self, ids: torch.Tensor) -> torch.Tensor:
            if ids.ndim != 3:
                raise DataError("bad_shape", f"ids must be [B, h, w], got {tuple(ids.shape)}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook.k):
                raise DataError("bad_ids", f"ids must be in [0, {self.codebook.k}), got "
                                f"[{int(ids.min())}, {int(ids.max())}]")
            zq = self.codebook.embed[ids.long()].permute(0, 3, 1, 2)
            return ((self.decoder(zq) + 1) / 2).clamp(0, 1)

    _VQVAE.__name__ = _VQVAE.__qualname__ = "VQVAE"
    return _VQVAE


_MODEL_CLASS: type | None = None


def _model_class() -> type:
    global _MODEL_CLASS  # built lazily so importing this module does not import torch
    if _MODEL_CLASS is None:
        _MODEL_CLASS = _build_model_class()
    return _MODEL_CLASS


def VQVAE(config: VQVAEConfig, *, seed: int = 0) -> Any:  # noqa: N802 - reads as a class
    """Build an untrained VQ-VAE module (weights drawn from ``seed``; global RNG untouched).

    >>> m = VQVAE(VQVAEConfig(codebook_size=8, code_dim=4, channels=(8,)))
    >>> import torch; m.encode(torch.rand(1, 3, 8, 8)).shape
    torch.Size([1, 2, 2])
    """
    torch = _torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _model_class()(config)


# ------------------------------------------------------------------------------ training

def _to_chw_float(img: Any, in_channels: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != in_channels:
        raise DataError("bad_shape", f"image must be [H, W, {in_channels}], got {arr.shape}")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype in (np.float32, np.float64):
        out = arr.astype(np.float32)
    else:
        raise DataError("bad_dtype", f"image must be uint8 or float in [0, 1], got {arr.dtype}")
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _batches(images: Iterable[Any], batch_size: int, seed: int) -> Iterator[list[Any]]:
    """Seeded shuffled passes over a sequence; one pass in order over a plain iterator."""
    if isinstance(images, (Sequence, np.ndarray)):
        n = len(images)
        if n == 0:
            raise DataError("empty", "train_vqvae got no images")
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(n)
            for s in range(0, max(1, n - batch_size + 1), batch_size):
                yield [images[int(i)] for i in order[s: s + batch_size]]
    else:
        batch: list[Any] = []
        for img in images:
            batch.append(img)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _perplexity(counts: torch.Tensor) -> float:
    p = counts / counts.sum().clamp_min(1)
    return float(math.exp(-(p * (p + 1e-12).log()).sum()))


def train_vqvae(images: Iterable[Any], config: VQVAEConfig, *, steps: int, seed: int = 0,
                device: str | None = None, feature_extractor: Any = None,
                discriminator: Any = None,
                init_model: Any = None) -> tuple[Any, list[dict[str, float]]]:
    """Train a VQ-VAE for ``steps`` optimiser steps; return ``(model, history)``.

    ``images``: ``[H, W, C]`` uint8 arrays (or floats in ``[0, 1]``) of one size (a
    multiple of ``config.factor``; apply a resolution policy first). A sequence (list,
    dataset with ``len``) is visited in seeded shuffled passes, as many as needed; a
    one-shot iterator is read once, in order, and training stops early (with a warning)
    when it runs out. ``device``: ``"cuda"`` / ``"cpu"`` / ``None`` (CUDA when available).
    ``history`` has one dict per step: ``loss``, ``recon``, ``commit``, ``perplexity``,
    ``used_codes`` (codes chosen in the batch), ``restarts`` (dead codes re-initialised
    this step: unused for ``restart_after`` steps) (+ ``perceptual``,
    ``adv_g``, ``adv_d`` when enabled). Deterministic on CPU for a given seed.

    >>> import numpy as np
    >>> imgs = [np.random.default_rng(i).integers(0, 255, (8, 8, 3), np.uint8) for i in range(4)]
    >>> cfg = VQVAEConfig(codebook_size=8, code_dim=4, channels=(8,), batch_size=2)
    >>> _, hist = train_vqvae(imgs, cfg, steps=3, seed=1)
    >>> len(hist), hist[0]["step"]
    (3, 0)
    """
    torch = _torch()
    F = torch.nn.functional
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if config.perceptual_weight > 0 and feature_extractor is None:
        raise ConfigError(
            "perceptual_weight > 0 needs feature_extractor=<torch module mapping images in "
            "[-1, 1] to features>, loaded from local weights (mmshard downloads none); "
            "or set perceptual_weight=0")
    if config.adversarial_weight > 0 and discriminator is None:
        raise ConfigError(
            "adversarial_weight > 0 needs discriminator=<torch module returning logits>; "
            "or set adversarial_weight=0")
    dev = _device(device)
    model = init_model if init_model is not None else VQVAE(config, seed=seed)
    model = model.to(dev).train()
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    if feature_extractor is not None:
        feature_extractor = feature_extractor.to(dev).eval()
        for p in feature_extractor.parameters():
            p.requires_grad_(False)
    d_opt = None
    if discriminator is not None and config.adversarial_weight > 0:
        discriminator = discriminator.to(dev).train()
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.9))
    history: list[dict[str, float]] = []
    batches = _batches(images, config.batch_size, seed)
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            warnings.warn(f"train_vqvae: images ran out after {step} of {steps} steps; pass "
                          "a sequence (list/dataset) to loop over it", stacklevel=2)
            break
        arrs = [_to_chw_float(im, config.in_channels) for im in batch]
        shapes = {a.shape for a in arrs}
        if len(shapes) > 1:
            raise DataError("mixed_sizes", f"a batch needs one image size, got {sorted(shapes)}; "
                            "resize them first (a mmshard.media.resize policy, e.g. FixedResize)")
        x = torch.from_numpy(np.stack(arrs)).to(dev)
        z = model.encode_latents(x)
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, config.code_dim)
        if config.init_from_batch and not bool(model.codebook.initialised):
            model.codebook.init_from(flat, gen)
        zq, ids = model.quantise(z)
        recon = model.decoder(z + (zq - z).detach())
        target = x * 2 - 1
        rec_loss = (F.mse_loss(recon, target) if config.recon_loss == "mse"
                    else F.l1_loss(recon, target))
        commit = F.mse_loss(z, zq.detach())
        loss = rec_loss + config.beta * commit
        rec: dict[str, float] = {"step": step}
        if feature_extractor is not None and config.perceptual_weight > 0:
            perc = F.mse_loss(feature_extractor(recon), feature_extractor(target))
            loss = loss + config.perceptual_weight * perc
            rec["perceptual"] = float(perc.detach())
        adv_on = d_opt is not None and step >= config.adversarial_start
        if adv_on:
            g_adv = -discriminator(recon).mean()
            loss = loss + config.adversarial_weight * g_adv
            rec["adv_g"] = float(g_adv.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if adv_on:
            d_opt.zero_grad(set_to_none=True)
            d_loss = (F.relu(1 - discriminator(target)).mean()
                      + F.relu(1 + discriminator(recon.detach())).mean())
            d_loss.backward()
            d_opt.step()
            rec["adv_d"] = float(d_loss.detach())
        counts, restarted = model.codebook.update(flat, ids.flatten(), config.restart_after, gen)
        rec.update(loss=float(loss.detach()), recon=float(rec_loss.detach()),
                   commit=float(commit.detach()),
                   perplexity=_perplexity(counts), used_codes=int((counts > 0).sum()),
                   restarts=restarted)
        history.append(rec)
    return model.eval(), history


# --------------------------------------------------------------------------- checkpoints

def save_vqvae(model: Any, path: str | os.PathLike[str]) -> None:
    """Write weights + EMA buffers as safetensors, the config as JSON metadata.

    The file is written to a temporary name and renamed, so no partial checkpoint is
    ever visible under ``path``.
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": _FORMAT, "version": _VERSION,
            "config": json.dumps(config_to_dict(model.config), sort_keys=True)}
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def _refuse_non_safetensors(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or (head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5):
        raise ConfigError(f"{path} is a pickle / torch.save file; mmshard loads safetensors "
                          "only (pickles can run code). Convert it yourself, from a trusted "
                          "source, with safetensors.torch.save_file")
    if len(head) < 9 or head[8:9] != b"{":
        raise ConfigError(f"{path} is not a safetensors file (bad header)")


def load_vqvae(path: str | os.PathLike[str], *, device: str | None = None) -> Any:
    """Load a :func:`save_vqvae` checkpoint (weights only, never unpickling anything).

    Pickle / ``torch.save`` payloads (and anything else that is not an mmshard VQ-VAE
    safetensors file) are refused with a :class:`ConfigError`, by their magic bytes,
    before any parsing. ``device``: ``None`` = CUDA when available.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = os.fspath(path)
    _refuse_non_safetensors(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ConfigError(f"{path} is not a readable safetensors file: {e}") from e
    if meta.get("format") != _FORMAT:
        raise ConfigError(f"{path} is not an mmshard VQ-VAE checkpoint "
                          f"(format={meta.get('format')!r}, expected {_FORMAT!r})")
    config = config_from_dict(VQVAEConfig, json.loads(meta["config"]))
    dev = _device(device)
    model = _model_class()(config)
    state = load_file(path, device="cpu")
    missing = sorted(set(model.state_dict()) ^ set(state))
    if missing:
        raise ConfigError(f"{path} tensors do not match the config: {missing[:5]}")
    model.load_state_dict(state)
    return model.to(dev).eval()


# ------------------------------------------------------------------------------ tokenizer

class VQVAETokenizer:
    """A trained VQ-VAE as a tokenizer: ``tok(image [H, W, C] uint8) -> int grid [h, w]``.

    Registered as ``"vqvae"`` (``build_tokenizer("vqvae", {"path": "vq.safetensors"})``).
    ``encode`` takes a batch ``[B, H, W, C]`` (or a list of same-size images) and returns
    ``[B, h, w]`` int16 (int32 when the codebook has more than 32767 codes); ``decode``
    returns uint8 images.  ``resize`` (a :mod:`mmshard.media.resize` policy, e.g.
    ``CenterCrop(size=256)``) is applied to every image first; its output sides must be
    multiples of the downsample factor.
    """

    name: ClassVar[str] = "vqvae"
    version: ClassVar[str] = _VERSION

    def __init__(self, model: Any, *, path: str | None = None, resize: Any = None) -> None:
        from ..media.resize import resize_from_dict

        self.model = model.eval()
        self.config = model.config
        self.path = path
        self.resize = None if resize is None else resize_from_dict(resize)
        self.storage_dtype = np.dtype(np.int16 if self.config.codebook_size <= 32767
                                      else np.int32)

    def encode(self, images: Any) -> np.ndarray:
        torch = _torch()
        if self.resize is not None:
            images = [self.resize.apply(np.asarray(im))[0] for im in images]
        arrs = [_to_chw_float(im, self.config.in_channels) for im in images]
        if len({a.shape for a in arrs}) > 1:
            raise DataError("mixed_sizes", "encode needs one image size per batch")
        dev = next(self.model.parameters()).device
        x = torch.from_numpy(np.stack(arrs)).to(dev)
        return self.model.encode(x).cpu().numpy().astype(self.storage_dtype)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        torch = _torch()
        ids = np.asarray(ids)
        single = ids.ndim == 2
        dev = next(self.model.parameters()).device
        t = torch.from_numpy(ids[None] if single else ids).long().to(dev)
        out = (self.model.decode(t) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return out[0] if single else out

    def __call__(self, image: Any) -> np.ndarray:
        return self.encode([image])[0]

    def provenance(self) -> dict[str, Any]:
        out = {"tokenizer": self.name, "version": self.version,
               "config": config_to_dict(self.config)}
        if self.resize is not None:
            out["resize"] = self.resize.to_dict()
        if self.path:
            out["checkpoint"] = os.path.basename(self.path)
        return out


@dataclass(frozen=True, kw_only=True)
class VQVAEFile:
    """Config of the registered ``"vqvae"`` tokenizer: a checkpoint path and a device."""

    path: str
    device: str | None = None
    resize: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("vqvae tokenizer needs path=<checkpoint .safetensors>")
        if self.resize is not None:
            from ..media.resize import resize_from_dict

            object.__setattr__(self, "resize", resize_from_dict(self.resize).to_dict())


def _build_vqvae_tokenizer(config: VQVAEFile) -> VQVAETokenizer:
    return VQVAETokenizer(load_vqvae(config.path, device=config.device), path=config.path,
                          resize=config.resize)


_build_vqvae_tokenizer.config_class = VQVAEFile  # type: ignore[attr-defined]
TOKENIZERS.register("vqvae")(_build_vqvae_tokenizer)
