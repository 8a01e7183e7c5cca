"""Audio features: Whisper log-mel, Kaldi fbank / MFCC, per-frame spectral features.

Each feature has a frozen config and a tokenizer registered in ``TOKENIZERS``
(``whisper_mel``, ``fbank``, ``mfcc``, ``spectral``) with one call shape::

    tok(waveform, sample_rate) -> np.ndarray   # float32; store as tok.storage_dtype

``waveform`` is a numpy array or torch tensor, ``[T]`` mono or ``[C, T]`` channels first
(channels are averaged), float in ``[-1, 1]``. It is resampled with
``torchaudio.functional.resample`` when ``sample_rate`` differs from the config's rate.

Whisper log-mel (``log_mel_spectrogram``) equals ``whisper.log_mel_spectrogram``
(16 kHz, n_fft 400, hop 160, Slaney mel filters, log10, 8.0 dynamic-range clamp per clip,
``(x + 4) / 4``) within 1e-5 on CPU (2.4e-7 measured over 200 real and synthetic
clips; about 2.5x faster, one thread), takes ``[T]`` or ``[B, T]`` (the clamp is per
clip), keeps the input's device (CUDA in, CUDA out) and builds its filterbank with
librosa's maths instead of loading whisper's assets. Frames: ``T // 160`` (100 per second); with
``pad_or_trim=True`` always 3000 (audio padded/trimmed to 30 s first).

Storage cost of float16 log-mel (2 bytes x bins x 100 frames/s x 3600 s, before tar and
.npy headers): 80 bins = 57.6 MB per hour of audio, 128 bins = 92.2 MB per hour (16-bit
16 kHz mono PCM is 115.2 MB per hour). With ``pad_or_trim=True`` every clip costs a full
30 s window: 480 kB (80 bins) or 768 kB (128 bins) whatever its length.

    >>> import numpy as np
    >>> tok = WhisperMel(WhisperMelConfig(n_mels=80))
    >>> tok(np.zeros(16000, np.float32), 16000).shape
    (80, 100)
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import TOKENIZERS, provenance_of, storage_dtype

__all__ = [
    "FbankConfig",
    "KaldiFbank",
    "KaldiMfcc",
    "MfccConfig",
    "SPECTRAL_FEATURE_NAMES",
    "SpectralConfig",
    "SpectralFeatures",
    "WhisperMel",
    "WhisperMelConfig",
    "as_mono_waveform",
    "kaldi_fbank",
    "kaldi_mfcc",
    "log_mel_batch",
    "log_mel_spectrogram",
    "mel_filterbank",
    "spectral_features",
]

WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP_LENGTH = 160
WHISPER_N_SAMPLES = 30 * WHISPER_SAMPLE_RATE  # 480000 samples: one 30 s window
WHISPER_N_FRAMES = WHISPER_N_SAMPLES // WHISPER_HOP_LENGTH  # 3000


# --------------------------------------------------------------------------- waveforms


def _from_numpy(a: Any) -> torch.Tensor:
    # C-contiguous and writable, so torch.from_numpy neither fails (negative strides) nor
    # warns (read-only buffers, e.g. decoded from bytes); copies only when needed.
    return torch.from_numpy(np.require(np.asarray(a), requirements=["C", "W"]))


def as_mono_waveform(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, target_rate: int
) -> torch.Tensor:
    """Float32 mono ``[T]`` tensor at ``target_rate`` from ``[T]`` or ``[C, T]`` input.

    Channels are averaged; the device of a tensor input is kept.

    >>> as_mono_waveform(np.zeros((2, 44100), np.float32), 44100, 16000).shape
    torch.Size([16000])
    """
    x = waveform if torch.is_tensor(waveform) else _from_numpy(waveform)
    if not (x.is_floating_point()):
        raise DataError(
            "bad_waveform",
            f"waveform must be float samples in [-1, 1], got dtype {x.dtype}; "
            "convert PCM integers first (e.g. int16 / 32768)",
        )
    if x.ndim == 2:
        x = x.mean(dim=0)
    elif x.ndim != 1:
        raise DataError(
            "bad_waveform", f"waveform must be [T] or [C, T], got shape {tuple(x.shape)}"
        )
    x = x.to(torch.float32)
    if x.numel() == 0:
        raise DataError("empty_audio", "waveform has no samples")
    if not bool(torch.isfinite(x).all()):
        raise DataError("non_finite_audio", "waveform contains NaN or infinite samples")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if int(sample_rate) != target_rate:
        import torchaudio.functional as AF

        x = AF.resample(x, int(sample_rate), target_rate)
    return x


# --------------------------------------------------------------------------- whisper mel


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    log_t = f >= min_log_hz
    mels[log_t] = min_log_mel + np.log(f[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    log_t = m >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_mels: int, *, sample_rate: int = 16000, n_fft: int = 400) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank ``[n_mels, n_fft // 2 + 1]`` float32.

    The maths of ``librosa.filters.mel`` (float64, cast to float32), which is what
    whisper's ``mel_filters.npz`` holds. Cached; the returned array is read-only.

    >>> mel_filterbank(80).shape
    (80, 201)
    """
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_pts = np.linspace(
        _hz_to_mel_slaney(np.array([0.0]))[0],
        _hz_to_mel_slaney(np.array([sample_rate / 2.0]))[0],
        n_mels + 2,
    )
    mel_f = _mel_to_hz_slaney(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, fftfreqs.size), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=32)
def _filters_on(n_mels: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(mel_filterbank(n_mels).copy()).to(device)


@functools.lru_cache(maxsize=32)
def _hann_on(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, device=device)


@functools.lru_cache(maxsize=8)
def _filter_bands(n_mels: int, n_bands: int = 8) -> tuple[tuple[int, int, int, int, np.ndarray],
                                                           ...]:
    # Each mel filter is a triangle over a few FFT bins (391 of the 80 x 201 weights are
    # nonzero), so the filters are cut into bands of rows that multiply only their nonzero
    # bin range: ~8x fewer multiply-adds than whisper's dense matmul, and the zeros it
    # skips added nothing to the sums. Rows i0:i1 of the result take bins c0:c1 through
    # the [i1 - i0, c1 - c0] block ``w``.
    fb = mel_filterbank(n_mels)
    bounds = np.linspace(0, n_mels, n_bands + 1).astype(int)
    bands = []
    for i0, i1 in zip(bounds[:-1], bounds[1:]):
        nz = np.flatnonzero(fb[i0:i1].any(axis=0))
        c0, c1 = int(nz[0]), int(nz[-1]) + 1
        bands.append((int(i0), int(i1), c0, c1, np.ascontiguousarray(fb[i0:i1, c0:c1])))
    return tuple(bands)


# Frames per FFT call on CPU: the windowed frames, their spectrum and power stay in small
# reused buffers near the core (1024 x 400 float32 = 1.6 MB) instead of whole-clip
# temporaries. Measured on real speech: 512 and 1024 alike, 256 and 2048 ~20 % slower.
_CHUNK_FRAMES = 1024
_SCRATCH_MAX = 1 << 22  # float32 elements a thread keeps per buffer between calls (16 MB)
_scratch_tls = threading.local()


def _scratch(name: str, n: int) -> np.ndarray:
    # A per-thread float32 work buffer of ``n`` elements, reused across calls: fresh large
    # allocations cost a page fault per 4 kB, about as much as the arithmetic done on them.
    if n > _SCRATCH_MAX:
        return np.empty(n, np.float32)
    buf = getattr(_scratch_tls, name, None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1 << 16), np.float32)
        setattr(_scratch_tls, name, buf)
    return buf[:n]


@functools.lru_cache(maxsize=1)
def _hann_cpu() -> torch.Tensor:
    return torch.hann_window(WHISPER_N_FFT)


def _frame_pieces(x: np.ndarray, n_frames: int) -> list[torch.Tensor]:
    # The first ``n_frames`` frames torch.stft(center=True, pad_mode="reflect") takes from
    # ``x``, as [k, 400] views whose rows, piece after piece, are frames 0, 1, 2, ...
    # Frames 2 .. j1 - 1 lie inside the clip and are views of ``x`` itself; only the two
    # head frames and the tail frames read a reflected copy of the clip's ends.
    n, half, hop = x.shape[0], WHISPER_N_FFT // 2, WHISPER_HOP_LENGTH
    j0, j1 = 2, min(n_frames, (n - half) // hop + 1)
    if j1 - j0 < 512:  # up to ~5 s a padded copy costs less than three pieces
        xp = np.concatenate([x[1:half + 1][::-1], x, x[n - half - 1:n - 1][::-1]])
        return [torch.from_numpy(xp).unfold(0, WHISPER_N_FFT, hop)[:n_frames]]
    head = np.concatenate([x[1:half + 1][::-1], x[:hop * (j0 - 1) + half]])
    pieces = [torch.from_numpy(head).unfold(0, WHISPER_N_FFT, hop),
              torch.from_numpy(x[hop * j0 - half:]).unfold(0, WHISPER_N_FFT, hop)[:j1 - j0]]
    if j1 < n_frames:
        tail = np.concatenate([x[hop * j1 - half:], x[n - half - 1:n - 1][::-1]])
        pieces.append(torch.from_numpy(tail).unfold(0, WHISPER_N_FFT, hop)[:n_frames - j1])
    return pieces


def _log_mel_cpu(x: np.ndarray, n_mels: int) -> np.ndarray:
    # Whisper's log-mel of one 1-D float32 clip (longer than 200 samples), chunk by chunk
    # of _CHUNK_FRAMES frames: the frames windowed into a reused buffer, torch's real FFT
    # (the one torch.stft runs, so the spectrum is bit-for-bit whisper's), re^2 + im^2 in
    # place (no sqrt), the banded filters into the chunk's columns of the result; then
    # log10 and the 8.0 clamp on the clip's maximum. Chunks start at the clip's own frame
    # 0, so the result never depends on what was computed before it.
    n_frames = x.shape[0] // WHISPER_HOP_LENGTH
    n_bins = WHISPER_N_FFT // 2 + 1
    mel = np.empty((n_mels, n_frames), np.float32)
    window, bands, size = _hann_cpu(), _filter_bands(n_mels), _CHUNK_FRAMES
    chunk = torch.from_numpy(_scratch("frames", size * WHISPER_N_FFT)).view(size, -1)
    power = _scratch("power", size * n_bins).reshape(size, n_bins)
    power_t = torch.from_numpy(power)
    start = filled = 0

    def flush() -> None:
        ri = torch.view_as_real(torch.fft.rfft(chunk[:filled])).square_()  # [filled, 201, 2]
        torch.add(ri[..., 0], ri[..., 1], out=power_t[:filled])
        rows = power[:filled]
        for i0, i1, c0, c1, w in bands:  # [k, c] @ [c, filled]: BLAS reads rows transposed
            np.matmul(w, rows[:, c0:c1].T, out=mel[i0:i1, start:start + filled])

    for frames in _frame_pieces(x, n_frames):
        j, k = 0, frames.shape[0]
        while j < k:
            take = min(k - j, size - filled)
            torch.mul(frames[j:j + take], window, out=chunk[filled:filled + take])
            filled, j = filled + take, j + take
            if filled == size:
                flush()
                start, filled = start + size, 0
    if filled:
        flush()
    np.maximum(mel, 1e-10, out=mel)
    np.log10(mel, out=mel)
    np.maximum(mel, mel.max() - 8.0, out=mel)
    mel += 4.0
    mel *= 0.25  # == / 4.0 exactly (a power of two)
    return mel


def _as_cpu_clip(c: np.ndarray | torch.Tensor) -> np.ndarray:
    a = c.detach().cpu().numpy() if torch.is_tensor(c) else np.asarray(c)
    return np.ascontiguousarray(a, dtype=np.float32)


def _pad_or_trim(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] >= WHISPER_N_SAMPLES:
        return x[..., :WHISPER_N_SAMPLES]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, WHISPER_N_SAMPLES - x.shape[-1])]
    return np.pad(x, pad)


def _check_n_mels(n_mels: int) -> None:
    if n_mels not in (80, 128):
        raise ConfigError(f"n_mels must be 80 or 128 (whisper's filterbanks), got {n_mels!r}")


def _too_short(n: int) -> DataError:
    return DataError(
        "too_short",
        f"audio has {n} samples; whisper log-mel needs more than {WHISPER_N_FFT // 2} "
        "(use pad_or_trim=True to pad short clips to 30 s)",
    )


def log_mel_spectrogram(
    audio: np.ndarray | torch.Tensor, n_mels: int = 80, *, pad_or_trim: bool = False
) -> torch.Tensor:
    """Whisper's log-mel spectrogram: ``[T] -> [n_mels, T // 160]``, ``[B, T] -> [B, ...]``.

    Input is 16 kHz float audio (numpy or a tensor on any device; the result stays on that
    device). In a batch the 8.0 dynamic-range clamp uses each clip's own maximum, so each
    row equals the single-clip result. ``pad_or_trim=True`` pads/trims to 30 s first
    (3000 frames), like ``whisper.log_mel_spectrogram(whisper.pad_or_trim(audio))``.

    >>> log_mel_spectrogram(np.zeros((2, 8000), np.float32), 128).shape
    torch.Size([2, 128, 50])
    """
    _check_n_mels(n_mels)
    if torch.is_tensor(audio) and audio.device.type != "cpu":
        return _log_mel_torch(audio, n_mels, pad_or_trim=pad_or_trim)
    x = _as_cpu_clip(audio)
    if x.ndim not in (1, 2):
        raise DataError("bad_waveform", f"audio must be [T] or [B, T], got {tuple(x.shape)}")
    if pad_or_trim:
        x = _pad_or_trim(x)
    if x.shape[-1] <= WHISPER_N_FFT // 2:
        raise _too_short(x.shape[-1])
    if x.ndim == 1:
        return torch.from_numpy(_log_mel_cpu(x, n_mels))
    return torch.from_numpy(np.stack([_log_mel_cpu(row, n_mels) for row in x]))


def _log_mel_torch(x: torch.Tensor, n_mels: int, *, pad_or_trim: bool) -> torch.Tensor:
    # The accelerator path: torch.stft and one dense filter matmul on the tensor's device.
    if x.ndim not in (1, 2):
        raise DataError("bad_waveform", f"audio must be [T] or [B, T], got {tuple(x.shape)}")
    x = x.to(torch.float32)
    if pad_or_trim:
        n = x.shape[-1]
        if n > WHISPER_N_SAMPLES:
            x = x[..., :WHISPER_N_SAMPLES]
        elif n < WHISPER_N_SAMPLES:
            x = torch.nn.functional.pad(x, (0, WHISPER_N_SAMPLES - n))
    if x.shape[-1] <= WHISPER_N_FFT // 2:
        raise _too_short(x.shape[-1])
    stft = torch.stft(
        x, WHISPER_N_FFT, WHISPER_HOP_LENGTH, window=_hann_on(WHISPER_N_FFT, x.device),
        return_complex=True,
    )
    ri = torch.view_as_real(stft[..., :-1])
    power = ri[..., 0].square().add_(ri[..., 1].square())
    log_spec = torch.matmul(_filters_on(n_mels, x.device), power)
    log_spec = log_spec.clamp_(min=1e-10).log10_()
    floor = log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0
    log_spec = torch.maximum(log_spec, floor)
    return log_spec.add_(4.0).div_(4.0)


def log_mel_batch(clips: list[np.ndarray | torch.Tensor], n_mels: int = 80, *,
                  pad_or_trim: bool = False, device: str | torch.device | None = None
                  ) -> list[torch.Tensor]:
    """Log-mel of clips of different lengths (one ragged batch on an accelerator).

    On CPU (``device`` None or "cpu") every result is bit-for-bit
    ``log_mel_spectrogram(clip)`` (clip after clip: sharing FFT calls between clips was
    measured slower than one clip at a time, whose buffers stay in cache). On an
    accelerator it is one ragged batched STFT: each row is the clip, then the 200-sample
    reflection ``torch.stft(center=True)`` would add at its end, then zeros; frames and
    the 8-dB clamp are taken per clip, so each result equals the single-clip one within
    float rounding.

    >>> a, b = np.ones(4000, np.float32), np.ones(6400, np.float32)
    >>> [m.shape[-1] for m in log_mel_batch([a, b])]
    [25, 40]
    """
    _check_n_mels(n_mels)
    if device is not None and torch.device(device).type != "cpu":
        return _log_mel_batch_torch(clips, n_mels, pad_or_trim=pad_or_trim, device=device)
    half = WHISPER_N_FFT // 2
    xs = [_as_cpu_clip(c) for c in clips]
    if pad_or_trim:
        xs = [_pad_or_trim(c) for c in xs]
    for c in xs:
        if c.ndim != 1 or c.shape[0] <= half:
            raise DataError("too_short", f"every clip must be 1-D with more than {half} "
                            f"samples, got {tuple(c.shape)}")
    return [torch.from_numpy(_log_mel_cpu(c, n_mels)) for c in xs]


def _log_mel_batch_torch(clips: list[np.ndarray | torch.Tensor], n_mels: int, *,
                         pad_or_trim: bool, device: str | torch.device) -> list[torch.Tensor]:
    # One ragged batched torch.stft on ``device`` (the GPU path; runs on CPU too).
    if pad_or_trim:  # every clip becomes 30 s: one rectangular batch, exactly whisper's
        rows = [torch.as_tensor(c, dtype=torch.float32)[:WHISPER_N_SAMPLES] for c in clips]
        x = torch.stack([torch.nn.functional.pad(r, (0, WHISPER_N_SAMPLES - r.shape[0]))
                         for r in rows])
        return list(_log_mel_torch(x.to(device), n_mels, pad_or_trim=False).unbind(0))
    half = WHISPER_N_FFT // 2
    xs = [torch.as_tensor(c, dtype=torch.float32).to(device) for c in clips]
    for c in xs:
        if c.ndim != 1 or c.shape[0] <= half:
            raise DataError("too_short", f"every clip must be 1-D with more than {half} "
                            f"samples, got {tuple(c.shape)}")
    width = max(c.shape[0] for c in xs) + half
    rows = torch.zeros((len(xs), width), dtype=torch.float32, device=xs[0].device)
    for i, c in enumerate(xs):
        n = c.shape[0]
        rows[i, :n] = c
        rows[i, n:n + half] = c[n - half - 1:n - 1].flip(0)  # what center=True reflects
    stft = torch.stft(rows, WHISPER_N_FFT, WHISPER_HOP_LENGTH,
                      window=_hann_on(WHISPER_N_FFT, rows.device), return_complex=True)
    ri = torch.view_as_real(stft)
    power = ri[..., 0].square().add_(ri[..., 1].square())
    log_spec = torch.matmul(_filters_on(n_mels, rows.device), power)
    log_spec = log_spec.clamp_(min=1e-10).log10_()
    out = []
    for i, c in enumerate(xs):
        m = log_spec[i, :, : c.shape[0] // WHISPER_HOP_LENGTH]
        m = torch.maximum(m, m.amax() - 8.0)
        out.append(m.add(4.0).div(4.0))
    return out


@dataclass(frozen=True, kw_only=True)
class WhisperMelConfig:
    """Whisper log-mel options.

    >>> WhisperMelConfig(n_mels=128, pad_or_trim=True).n_mels
    128
    """

    n_mels: int = 80
    pad_or_trim: bool = False
    storage_dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.n_mels not in (80, 128):
            raise ConfigError(f"n_mels must be one of [80, 128], got {self.n_mels!r}")
        if not isinstance(self.pad_or_trim, bool):
            raise ConfigError(f"pad_or_trim must be true or false, got {self.pad_or_trim!r}")
        storage_dtype(self.storage_dtype)


@TOKENIZERS.register("whisper_mel")
class WhisperMel:
    """Whisper log-mel tokenizer: ``tok(waveform, sr) -> float32 [n_mels, frames]``.

    >>> tok = WhisperMel(WhisperMelConfig(pad_or_trim=True))
    >>> tok(np.zeros(16000, np.float32), 16000).shape
    (80, 3000)
    """

    name: ClassVar[str] = "whisper_mel"
    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = WhisperMelConfig
    sample_rate: ClassVar[int] = WHISPER_SAMPLE_RATE

    def __init__(self, config: WhisperMelConfig | None = None) -> None:
        self.config = config or WhisperMelConfig()
        self.storage_dtype = storage_dtype(self.config.storage_dtype)

    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        x = as_mono_waveform(waveform, sample_rate, self.sample_rate)
        mel = log_mel_spectrogram(x, self.config.n_mels, pad_or_trim=self.config.pad_or_trim)
        return mel.cpu().numpy()

    def provenance(self) -> dict[str, Any]:
        return provenance_of(self)


# --------------------------------------------------------------------------- kaldi


_WINDOWS = ("blackman", "hamming", "hanning", "povey", "rectangular")


def _check_kaldi_common(cfg: Any) -> None:
    if cfg.sample_frequency <= 0:
        raise ConfigError(f"sample_frequency must be > 0 Hz, got {cfg.sample_frequency!r}")
    if cfg.num_mel_bins < 3:
        raise ConfigError(f"num_mel_bins must be >= 3, got {cfg.num_mel_bins!r}")
    if cfg.frame_length <= 0 or cfg.frame_shift <= 0:
        raise ConfigError(
            f"frame_length and frame_shift are milliseconds > 0, got "
            f"{cfg.frame_length!r} and {cfg.frame_shift!r}"
        )
    if cfg.dither < 0:
        raise ConfigError(f"dither must be >= 0 (0.0 = deterministic), got {cfg.dither!r}")
    if cfg.window_type not in _WINDOWS:
        raise ConfigError(f"window_type must be one of {list(_WINDOWS)}, got {cfg.window_type!r}")
    nyquist = cfg.sample_frequency / 2
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    if not (0 <= cfg.low_freq < high <= nyquist):
        raise ConfigError(
            f"need 0 <= low_freq < high_freq <= {nyquist} Hz (high_freq <= 0 is an offset from "
            f"Nyquist), got low_freq={cfg.low_freq!r}, high_freq={cfg.high_freq!r}"
        )
    storage_dtype(cfg.storage_dtype)


@dataclass(frozen=True, kw_only=True)
class FbankConfig:
    """Kaldi-compatible log mel filterbank options (``torchaudio.compliance.kaldi.fbank``).

    Times are in milliseconds. ``dither`` defaults to 0.0 so features are deterministic.
    Input samples are used as given (floats in [-1, 1]; Kaldi itself reads int16 scale,
    which only shifts log energies by a constant).

    >>> FbankConfig(num_mel_bins=80).frame_shift
    10.0
    """

    sample_frequency: int = 16000
    num_mel_bins: int = 80
    frame_length: float = 25.0
    frame_shift: float = 10.0
    dither: float = 0.0
    preemphasis_coefficient: float = 0.97
    window_type: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0
    use_energy: bool = False
    snip_edges: bool = True
    storage_dtype: str = "float16"

    def __post_init__(self) -> None:
        _check_kaldi_common(self)


@dataclass(frozen=True, kw_only=True)
class MfccConfig:
    """Kaldi-compatible MFCC options (``torchaudio.compliance.kaldi.mfcc``).

    ``delta_order`` 1 or 2 appends deltas (and delta-deltas) computed with
    ``torchaudio.functional.compute_deltas``: 13 ceps with ``delta_order=2`` gives the
    39-dim features of HuBERT's iteration-0 k-means.

    >>> MfccConfig(delta_order=2).num_ceps
    13
    """

    sample_frequency: int = 16000
    num_ceps: int = 13
    num_mel_bins: int = 23
    frame_length: float = 25.0
    frame_shift: float = 10.0
    dither: float = 0.0
    preemphasis_coefficient: float = 0.97
    window_type: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0
    use_energy: bool = False
    cepstral_lifter: float = 22.0
    snip_edges: bool = True
    delta_order: int = 0
    storage_dtype: str = "float16"

    def __post_init__(self) -> None:
        _check_kaldi_common(self)
        if not (1 <= self.num_ceps <= self.num_mel_bins):
            raise ConfigError(
                f"num_ceps must be in [1, num_mel_bins={self.num_mel_bins}], got {self.num_ceps!r}"
            )
        if self.delta_order not in (0, 1, 2):
            raise ConfigError(f"delta_order must be one of [0, 1, 2], got {self.delta_order!r}")


def _kaldi_kwargs(cfg: Any) -> dict[str, Any]:
    return {
        "sample_frequency": float(cfg.sample_frequency),
        "num_mel_bins": cfg.num_mel_bins,
        "frame_length": float(cfg.frame_length),
        "frame_shift": float(cfg.frame_shift),
        "dither": float(cfg.dither),
        "preemphasis_coefficient": float(cfg.preemphasis_coefficient),
        "window_type": cfg.window_type,
        "low_freq": float(cfg.low_freq),
        "high_freq": float(cfg.high_freq),
        "use_energy": cfg.use_energy,
        "snip_edges": cfg.snip_edges,
    }


def _kaldi_input(waveform: np.ndarray | torch.Tensor, sample_rate: int, rate: int) -> torch.Tensor:
    return as_mono_waveform(waveform, sample_rate, rate).unsqueeze(0)


def kaldi_fbank(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, config: FbankConfig | None = None
) -> torch.Tensor:
    """Kaldi log mel filterbank ``[frames, num_mel_bins]`` float32 of a ``[T]``/``[C, T]`` clip.

    A clip shorter than one frame gives ``[0, num_mel_bins]``.

    >>> kaldi_fbank(np.zeros(16000, np.float32) + 0.01, 16000).shape
    torch.Size([98, 80])
    """
    import torchaudio.compliance.kaldi as kaldi

    cfg = config or FbankConfig()
    x = _kaldi_input(waveform, sample_rate, cfg.sample_frequency)
    if x.shape[-1] < round(cfg.sample_frequency * cfg.frame_length / 1000) and cfg.snip_edges:
        return torch.zeros((0, cfg.num_mel_bins), dtype=torch.float32)
    return kaldi.fbank(x, **_kaldi_kwargs(cfg))


def kaldi_mfcc(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, config: MfccConfig | None = None
) -> torch.Tensor:
    """Kaldi MFCC ``[frames, num_ceps * (1 + delta_order)]`` float32 (deltas appended).

    >>> kaldi_mfcc(np.zeros(16000, np.float32) + 0.01, 16000, MfccConfig(delta_order=2)).shape
    torch.Size([98, 39])
    """
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF

    cfg = config or MfccConfig()
    dim = cfg.num_ceps * (1 + cfg.delta_order)
    x = _kaldi_input(waveform, sample_rate, cfg.sample_frequency)
    if x.shape[-1] < round(cfg.sample_frequency * cfg.frame_length / 1000) and cfg.snip_edges:
        return torch.zeros((0, dim), dtype=torch.float32)
    feats = kaldi.mfcc(
        x, num_ceps=cfg.num_ceps, cepstral_lifter=float(cfg.cepstral_lifter), **_kaldi_kwargs(cfg)
    )
    if cfg.delta_order:
        parts = [feats.T]
        for _ in range(cfg.delta_order):
            parts.append(AF.compute_deltas(parts[-1]))
        feats = torch.cat(parts, dim=0).T.contiguous()
    return feats


class _KaldiTokenizer:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    config_class: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        self.config = config or self.config_class()
        self.storage_dtype = storage_dtype(self.config.storage_dtype)

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_frequency)

    def provenance(self) -> dict[str, Any]:
        return provenance_of(self)


@TOKENIZERS.register("fbank")
class KaldiFbank(_KaldiTokenizer):
    """Kaldi fbank tokenizer: ``tok(waveform, sr) -> float32 [frames, num_mel_bins]``.

    >>> KaldiFbank(FbankConfig(num_mel_bins=40))(np.ones(8000, np.float32) * .1, 8000).shape
    (98, 40)
    """

    name: ClassVar[str] = "fbank"
    config_class: ClassVar[type] = FbankConfig

    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        return kaldi_fbank(waveform, sample_rate, self.config).cpu().numpy()


@TOKENIZERS.register("mfcc")
class KaldiMfcc(_KaldiTokenizer):
    """Kaldi MFCC tokenizer: ``tok(waveform, sr) -> float32 [frames, num_ceps*(1+deltas)]``.

    >>> KaldiMfcc()(np.ones(16000, np.float32) * .1, 16000).shape
    (98, 13)
    """

    name: ClassVar[str] = "mfcc"
    config_class: ClassVar[type] = MfccConfig

    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        return kaldi_mfcc(waveform, sample_rate, self.config).cpu().numpy()


# --------------------------------------------------------------------------- spectral

SPECTRAL_FEATURE_NAMES = ("zcr", "energy", "rms", "centroid", "rolloff")


@dataclass(frozen=True, kw_only=True)
class SpectralConfig:
    """Per-frame spectral feature options (frame and hop in samples).

    Frames follow librosa's ``center=True``: the clip is zero-padded by
    ``frame_length // 2`` on both sides, giving ``1 + T // hop_length`` frames.

    >>> SpectralConfig(rolloff_percent=0.9).frame_length
    400
    """

    sample_rate: int = 16000
    frame_length: int = 400
    hop_length: int = 160
    rolloff_percent: float = 0.85
    center: bool = True
    storage_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be > 0 Hz, got {self.sample_rate!r}")
        if self.frame_length < 2 or self.hop_length < 1:
            raise ConfigError(
                f"need frame_length >= 2 and hop_length >= 1 samples, got "
                f"{self.frame_length!r} and {self.hop_length!r}"
            )
        if not (0.0 < self.rolloff_percent < 1.0):
            raise ConfigError(f"rolloff_percent must be in (0, 1), got {self.rolloff_percent!r}")
        storage_dtype(self.storage_dtype)


def _frame(x: torch.Tensor, cfg: SpectralConfig) -> torch.Tensor:
    if cfg.center:
        pad = cfg.frame_length // 2
        x = torch.nn.functional.pad(x, (pad, pad))
    if x.shape[-1] < cfg.frame_length:
        return x.new_zeros((0, cfg.frame_length))
    return x.unfold(0, cfg.frame_length, cfg.hop_length)


def spectral_features(
    waveform: np.ndarray | torch.Tensor, sample_rate: int, config: SpectralConfig | None = None
) -> dict[str, np.ndarray]:
    """Per-frame ``zcr``, ``energy``, ``rms``, ``centroid`` (Hz), ``rolloff`` (Hz) arrays.

    - ``zcr``: fraction of adjacent sample pairs whose sign differs (``x >= 0`` is
      positive); a sine of ``f`` Hz gives about ``2 f / sr``.
    - ``energy``: sum of squared samples in the frame; ``rms``: sqrt of their mean.
    - ``centroid``: magnitude-weighted mean frequency of the Hann-windowed frame;
      ``rolloff``: lowest frequency below which ``rolloff_percent`` of the magnitude sum
      lies (librosa's definitions). Both are 0.0 for a silent frame (never NaN).

    >>> f = spectral_features(np.zeros(1600, np.float32), 16000)
    >>> sorted(f), f["centroid"].shape
    (['centroid', 'energy', 'rms', 'rolloff', 'zcr'], (11,))
    """
    cfg = config or SpectralConfig()
    x = as_mono_waveform(waveform, sample_rate, cfg.sample_rate).to(torch.float64)
    frames = _frame(x, cfg)
    n = cfg.frame_length
    sign = frames >= 0
    zcr = (sign[:, 1:] != sign[:, :-1]).sum(dim=1).to(torch.float64) / (n - 1)
    energy = frames.square().sum(dim=1)
    rms = (energy / n).sqrt()
    window = torch.hann_window(n, dtype=torch.float64, device=frames.device)
    mag = torch.fft.rfft(frames * window, dim=1).abs()
    freqs = torch.fft.rfftfreq(n, d=1.0 / cfg.sample_rate, dtype=torch.float64)
    freqs = freqs.to(frames.device)
    total = mag.sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    centroid = torch.where(total > 0, (mag * freqs).sum(dim=1) / safe, torch.zeros_like(total))
    cum = mag.cumsum(dim=1)
    idx = (cum < cfg.rolloff_percent * total[:, None]).sum(dim=1).clamp_(max=freqs.numel() - 1)
    rolloff = torch.where(total > 0, freqs[idx], torch.zeros_like(total))
    out = {"zcr": zcr, "energy": energy, "rms": rms, "centroid": centroid, "rolloff": rolloff}
    return {k: v.cpu().numpy().astype(np.float32) for k, v in out.items()}


@TOKENIZERS.register("spectral")
class SpectralFeatures:
    """Spectral feature tokenizer: ``tok(waveform, sr) -> float32 [frames, 5]``.

    Columns are ``feature_names`` = ``("zcr", "energy", "rms", "centroid", "rolloff")``.

    >>> SpectralFeatures()(np.zeros(16000, np.float32), 16000).shape
    (101, 5)
    """

    name: ClassVar[str] = "spectral"
    version: ClassVar[str] = "1"
    config_class: ClassVar[type] = SpectralConfig
    feature_names: ClassVar[tuple[str, ...]] = SPECTRAL_FEATURE_NAMES

    def __init__(self, config: SpectralConfig | None = None) -> None:
        self.config = config or SpectralConfig()
        self.storage_dtype = storage_dtype(self.config.storage_dtype)

    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        feats = spectral_features(waveform, sample_rate, self.config)
        return np.stack([feats[k] for k in self.feature_names], axis=1)

    def provenance(self) -> dict[str, Any]:
        return provenance_of(self)
