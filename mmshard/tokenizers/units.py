"""Discrete audio units, HuBERT iteration-0 style: feature frames -> k-means code ids.

``UnitTokenizer(codebook, config)`` assigns each feature frame ``[T, D]`` to its nearest
codebook centroid. On a waveform it first computes Kaldi MFCCs (``config.mfcc``; the
default, 13 ceps + deltas + delta-deltas at 100 Hz, is HuBERT's iteration-0 feature), so
the codebook must be fit on the same features (see ``reduce`` below).

Frame-rate reduction (``frame_rate_reduction = r``) averages each group of ``r``
consecutive feature frames *before* assignment (100 Hz -> 25 Hz with r=4). Averaging keeps
information from every frame (picking every r-th frame would alias, voting on per-frame
ids would need r times the search); the last group may be shorter and is averaged over
the frames it has, so no audio is dropped: ``ceil(T / r)`` units. Fit the codebook on
``tok.reduce(frames)`` so centroids live in the same averaged space.

Run-length dedup (``dedup=True``) collapses repeats of the same id; ``encode`` also
returns the run lengths (in reduced frames), so ``run_length_decode`` recovers the
un-deduplicated sequence and durations (``run_length * unit_duration_s``).

Ids are ``int16`` when the codebook has k <= 32767 codes, else ``int32``.

    >>> import numpy as np
    >>> from mmshard.tokenizers.codebook import Codebook, CodebookConfig
    >>> cb = Codebook(np.array([[0.0], [1.0]], np.float32), CodebookConfig(k=2))
    >>> seq = UnitTokenizer(cb, UnitsConfig(dedup=True)).encode(
    ...     np.array([[0], [0.1], [1], [0.9], [0]], np.float32))
    >>> seq.units.tolist(), seq.run_lengths.tolist()
    ([0, 1, 0], [2, 2, 1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .._registry import config_to_dict
from ..errors import ConfigError
from .audio_features import KaldiMfcc, MfccConfig
from .base import TOKENIZERS, provenance_of
from .codebook import Codebook

__all__ = [
    "UnitSequence",
    "UnitTokenizer",
    "UnitsConfig",
    "run_length_decode",
    "run_length_encode",
]


def run_length_encode(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse runs of equal values: ``(values, lengths)``, lengths ``int32``.

    >>> v, n = run_length_encode(np.array([3, 3, 1, 1, 1, 3]))
    >>> v.tolist(), n.tolist()
    ([3, 1, 3], [2, 3, 1])
    """
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ConfigError(f"run_length_encode takes a 1-D id array, got shape {a.shape}")
    if a.size == 0:
        return a.copy(), np.zeros(0, dtype=np.int32)
    starts = np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1])))
    lengths = np.diff(np.append(starts, a.size)).astype(np.int32)
    return a[starts], lengths


def run_length_decode(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inverse of :func:`run_length_encode`.

    >>> run_length_decode(np.array([3, 1]), np.array([2, 1])).tolist()
    [3, 3, 1]
    """
    v, n = np.asarray(values), np.asarray(lengths)
    if v.shape != n.shape or v.ndim != 1:
        raise ConfigError(
            f"values and lengths must be 1-D of equal length, got {v.shape}, {n.shape}"
        )
    if n.size and n.min() < 1:
        raise ConfigError(f"run lengths must be >= 1, got min {n.min()}")
    return np.repeat(v, n)


@dataclass(frozen=True)
class UnitSequence:
    """Units of one clip: ``units`` ids and their ``run_lengths`` (all 1 without dedup),
    both 1-D of equal length; ``run_lengths`` count reduced frames."""

    units: np.ndarray
    run_lengths: np.ndarray

    def expand(self) -> np.ndarray:
        """The per-reduced-frame id sequence (undoes dedup)."""
        return run_length_decode(self.units, self.run_lengths)


@dataclass(frozen=True, kw_only=True)
class UnitsConfig:
    """Unit tokenizer options.

    ``codebook_path`` is read by the registry factory (``build_tokenizer("units", ...)``);
    code that passes a ``Codebook`` object may leave it empty. ``mfcc`` configures the
    features computed from waveforms.

    >>> UnitsConfig(frame_rate_reduction=4, dedup=True).frame_rate_reduction
    4
    """

    codebook_path: str = ""
    frame_rate_reduction: int = 1
    dedup: bool = False
    mfcc: MfccConfig = field(default_factory=lambda: MfccConfig(delta_order=2))

    def __post_init__(self) -> None:
        r = self.frame_rate_reduction
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ConfigError(f"frame_rate_reduction must be an int >= 1, got {r!r}")
        if not isinstance(self.dedup, bool):
            raise ConfigError(f"dedup must be true or false, got {self.dedup!r}")
        if not isinstance(self.mfcc, MfccConfig):
            raise ConfigError(f"mfcc must be an MfccConfig, got {type(self.mfcc).__name__}")


class UnitTokenizer:
    """Feature frames or waveforms -> discrete unit ids with a fitted :class:`Codebook`.

    ``tok(waveform, sr)`` returns the unit ids (deduplicated when ``config.dedup``);
    ``tok.encode(frames)`` returns a :class:`UnitSequence` with run lengths.

    >>> from mmshard.tokenizers.codebook import CodebookConfig
    >>> cb = Codebook(np.zeros((2, 39), np.float32) + [[0], [1]], CodebookConfig(k=2))
    >>> tok = UnitTokenizer(cb, UnitsConfig(frame_rate_reduction=2))
    >>> tok(np.sin(np.arange(16000) / 5).astype(np.float32), 16000).shape
    (49,)
    """

    name: ClassVar[str] = "units"
    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = UnitsConfig

    def __init__(self, codebook: Codebook, config: UnitsConfig | None = None) -> None:
        if not isinstance(codebook, Codebook):
            raise ConfigError(f"codebook must be a Codebook, got {type(codebook).__name__}")
        self.codebook = codebook
        self.config = config or UnitsConfig()
        self.storage_dtype = np.dtype(np.int16 if codebook.k <= 32767 else np.int32)
        self._features = KaldiMfcc(self.config.mfcc)

    @classmethod
    def from_config(cls, config: UnitsConfig) -> UnitTokenizer:
        """Load ``config.codebook_path`` and build the tokenizer (the registry factory)."""
        if not config.codebook_path:
            raise ConfigError(
                "units tokenizer needs codebook_path (a .safetensors/.npz written by "
                "Codebook.save); fit one with Codebook.fit on UnitTokenizer.reduce(features)"
            )
        return cls(Codebook.load(config.codebook_path), config)

    @property
    def unit_duration_s(self) -> float:
        """Seconds per (reduced) unit frame for waveform input: frame_shift * reduction."""
        return self.config.mfcc.frame_shift / 1000.0 * self.config.frame_rate_reduction

    def reduce(self, frames: np.ndarray) -> np.ndarray:
        """Average groups of ``frame_rate_reduction`` frames: ``[T, D] -> [ceil(T/r), D]``.

        >>> from mmshard.tokenizers.codebook import CodebookConfig
        >>> cb = Codebook(np.zeros((1, 1), np.float32), CodebookConfig(k=1))
        >>> tok = UnitTokenizer(cb, UnitsConfig(frame_rate_reduction=2))
        >>> tok.reduce(np.array([[0], [2], [4]], np.float32)).ravel().tolist()
        [1.0, 4.0]
        """
        x = np.asarray(frames, dtype=np.float32)
        if x.ndim != 2:
            raise ConfigError(f"feature frames must be [T, D], got shape {x.shape}")
        r = self.config.frame_rate_reduction
        if r == 1 or x.shape[0] == 0:
            return np.ascontiguousarray(x)
        t, d = x.shape
        full = t // r
        out = np.empty((math.ceil(t / r), d), dtype=np.float32)
        out[:full] = x[: full * r].reshape(full, r, d).mean(axis=1, dtype=np.float64)
        if t % r:
            out[full] = x[full * r :].mean(axis=0, dtype=np.float64)
        return out

    def encode(self, frames: np.ndarray) -> UnitSequence:
        """Feature frames ``[T, D]`` -> :class:`UnitSequence` (reduced, optionally deduped)."""
        ids = self.codebook.encode(self.reduce(frames)).astype(self.storage_dtype)
        if self.config.dedup:
            units, lengths = run_length_encode(ids)
        else:
            units, lengths = ids, np.ones(ids.shape[0], dtype=np.int32)
        return UnitSequence(units=units, run_lengths=lengths)

    def features(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """The MFCC frames ``[T, D]`` a waveform is tokenized from (for fitting codebooks)."""
        return self._features(waveform, sample_rate)

    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        return self.encode(self.features(waveform, sample_rate)).units

    def provenance(self) -> dict[str, Any]:
        prov = provenance_of(self)
        cb = self.codebook
        prov["codebook"] = {
            "fingerprint": cb.fingerprint,
            "k": cb.k,
            "dim": cb.dim,
            "config": config_to_dict(cb.config),
            "provenance": dict(cb.provenance),
        }
        return prov


def _units_factory(config: UnitsConfig) -> UnitTokenizer:
    return UnitTokenizer.from_config(config)


_units_factory.config_class = UnitsConfig  # type: ignore[attr-defined]
TOKENIZERS.register("units")(_units_factory)
