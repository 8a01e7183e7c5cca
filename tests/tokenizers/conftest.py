"""Tiny synthetic audio for tokenizer tests (made in memory, 16 kHz float32)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

SR = 16000


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """Harmonic voice: f0 glide (FM) with formant-like amplitude modulation of harmonics."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)  # vibrato / intonation
    phase = 2 * np.pi * np.cumsum(f0) / SR
    out = np.zeros(n)
    for h in range(1, 30):
        fh = h * 120
        formant = sum(np.exp(-((fh - fc) ** 2) / (2 * 120.0**2)) for fc in (500, 1500, 2500))
        am = 1 + 0.5 * np.sin(2 * np.pi * 4 * t + h)  # syllable-rate envelope
        out += formant * am * np.sin(h * phase)
    out += 0.01 * rng.standard_normal(n)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def music(n: int, seed: int = 0) -> np.ndarray:
    """Two chords (C major, A minor) of decaying harmonic notes."""
    t = np.arange(n) / SR
    out = np.zeros(n)
    half = n // 2
    for i, chord in enumerate(((261.6, 329.6, 392.0), (220.0, 261.6, 329.6))):
        sl = slice(0, half) if i == 0 else slice(half, n)
        tt = t[sl] - t[sl][0] if t[sl].size else t[sl]
        for f in chord:
            for h in (1, 2, 3):
                out[sl] += np.exp(-2 * tt) * np.sin(2 * np.pi * f * h * tt) / h
    return (0.2 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def sine(freq: float, n: int, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


SIGNALS: dict[str, Callable[..., np.ndarray]] = {
    "speech": speech_like,
    "music": music,
    "noise": noise,
}


@pytest.fixture(params=sorted(SIGNALS))
def signal_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def synth() -> object:
    """The generators above, as a fixture (test modules do not import conftest)."""
    import types

    return types.SimpleNamespace(
        SR=SR, speech_like=speech_like, music=music, noise=noise, sine=sine, signals=SIGNALS
    )
