"""Audio features: whisper parity, Kaldi equality, spectral known answers, tokenizer API."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
import torchaudio
import whisper
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError, DataError
from mmshard.tokenizers import audio_features as af
from mmshard.tokenizers import base, units  # noqa: F401  (importing registers "units")
from mmshard.tokenizers.audio_features import (
    FbankConfig,
    KaldiFbank,
    KaldiMfcc,
    MfccConfig,
    SpectralConfig,
    SpectralFeatures,
    WhisperMel,
    WhisperMelConfig,
    kaldi_fbank,
    kaldi_mfcc,
    log_mel_spectrogram,
    mel_filterbank,
    spectral_features,
)
from mmshard.tokenizers.base import TOKENIZERS, Tokenizer, build_tokenizer

SR = 16000
PARITY_TOL = 1e-5  # max abs difference to whisper.log_mel_spectrogram (float32)


# ------------------------------------------------------------------ whisper log-mel parity


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filterbank_matches_whisper_assets(n_mels: int) -> None:
    ref = whisper.audio.mel_filters("cpu", n_mels).numpy()
    np.testing.assert_allclose(mel_filterbank(n_mels), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("n_samples", [3 * 16000, 3 * 16000 + 77, 12345])
def test_log_mel_equals_whisper(signal_kind: str, n_mels: int, n_samples: int, synth) -> None:
    x = synth.signals[signal_kind](n_samples)
    ours = log_mel_spectrogram(x, n_mels)
    ref = whisper.log_mel_spectrogram(x, n_mels=n_mels)
    assert ours.shape == ref.shape == (n_mels, n_samples // 160)
    assert (ours - ref).abs().max().item() <= PARITY_TOL


@pytest.mark.parametrize("n_samples", [16000, 31 * 16000 + 5])
def test_pad_or_trim_equals_whisper(n_samples: int, synth) -> None:
    x = synth.speech_like(n_samples)
    ours = log_mel_spectrogram(x, 80, pad_or_trim=True)
    ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(x), n_mels=80)
    assert ours.shape == (80, 3000)
    assert (ours - ref).abs().max().item() <= PARITY_TOL


@pytest.mark.parametrize("n_mels", [80, 128])
def test_batch_rows_equal_single_clips_with_per_clip_clamp(n_mels: int, synth) -> None:
    n = 2 * 16000 + 50
    loud = synth.music(n)
    quiet = synth.noise(n, seed=3) * 1e-3  # 60 dB quieter: a batch-wide clamp would flatten it
    batch = log_mel_spectrogram(np.stack([loud, quiet, synth.speech_like(n)]), n_mels)
    assert batch.shape == (3, n_mels, n // 160)
    for row, clip in zip(batch, (loud, quiet, synth.speech_like(n))):
        single = log_mel_spectrogram(clip, n_mels)
        assert (row - single).abs().max().item() <= 1e-5
        ref = whisper.log_mel_spectrogram(clip, n_mels=n_mels)
        assert (row - ref).abs().max().item() <= PARITY_TOL


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(min_value=201, max_value=8000),
    amp=st.floats(min_value=1e-4, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_log_mel_bounds_and_determinism(n: int, amp: float, seed: int) -> None:
    x = (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
    a = log_mel_spectrogram(x, 80)
    assert a.shape == (80, n // 160)
    assert torch.isfinite(a).all()
    if a.numel():
        # the dynamic-range clamp keeps every value within 8 log10 units (2.0 after /4)
        assert (a.max() - a.min()).item() <= 2.0 + 1e-6
    assert torch.equal(a, log_mel_spectrogram(x, 80))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_stays_on_cuda(synth) -> None:  # pragma: no cover - GPU machines only
    x = torch.from_numpy(synth.speech_like(16000)).cuda()
    out = log_mel_spectrogram(x, 80)
    assert out.device.type == "cuda"
    ref = whisper.log_mel_spectrogram(x.cpu(), n_mels=80)
    assert (out.cpu() - ref).abs().max().item() <= 1e-3


def test_log_mel_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="80 or 128"):
        log_mel_spectrogram(np.zeros(16000, np.float32), 64)
    with pytest.raises(DataError, match="too_short"):
        log_mel_spectrogram(np.zeros(100, np.float32), 80)
    assert log_mel_spectrogram(np.zeros(100, np.float32), 80, pad_or_trim=True).shape == (80, 3000)


# ------------------------------------------------------------------ whisper tokenizer


def test_whisper_tokenizer_call_resamples_and_mixes(synth) -> None:
    tok = WhisperMel(WhisperMelConfig(n_mels=128))
    x44 = synth.sine(440.0, 44100)
    out = tok(np.stack([x44, x44]), 44100)  # stereo at 44.1 kHz
    assert out.dtype == np.float32 and out.shape == (128, 100)
    expected = log_mel_spectrogram(
        torchaudio.functional.resample(torch.from_numpy(x44), 44100, SR), 128
    ).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert tok.storage_dtype == np.float16
    assert tok.provenance() == {
        "tokenizer": "whisper_mel",
        "version": "1",
        "config": {"n_mels": 128, "pad_or_trim": False, "storage_dtype": "float16"},
    }


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(16000, np.int16),
        np.zeros((2, 2, 100), np.float32),
        np.array([0.0, np.nan] * 500, np.float32),
        np.zeros(0, np.float32),
    ],
)
def test_tokenizer_bad_waveform_is_data_error(bad: np.ndarray) -> None:
    with pytest.raises(DataError):
        WhisperMel()(bad, SR)


def test_configs_validate_with_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"\[80, 128\]"):
        WhisperMelConfig(n_mels=40)
    with pytest.raises(ConfigError, match="float16"):
        WhisperMelConfig(storage_dtype="int8")
    with pytest.raises(ConfigError, match="povey"):
        FbankConfig(window_type="kaiser")
    with pytest.raises(ConfigError, match="dither"):
        FbankConfig(dither=-1.0)
    with pytest.raises(ConfigError, match="delta_order"):
        MfccConfig(delta_order=3)
    with pytest.raises(ConfigError, match="rolloff_percent"):
        SpectralConfig(rolloff_percent=1.5)
    with pytest.raises(TypeError):
        WhisperMelConfig(80)  # type: ignore[misc]  # keyword-only


# ------------------------------------------------------------------ kaldi


def test_fbank_equals_torchaudio(synth) -> None:
    x = synth.speech_like(16000 + 123)
    cfg = FbankConfig(num_mel_bins=64)
    ours = KaldiFbank(cfg)(x, SR)
    ref = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(x)[None], num_mel_bins=64, dither=0.0, sample_frequency=16000.0
    ).numpy()
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (1 + (16123 - 400) // 160, 64)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(ours, KaldiFbank(cfg)(x, SR))  # dither 0: deterministic


def test_mfcc_equals_torchaudio_with_deltas(synth) -> None:
    x = synth.music(16000)
    plain = KaldiMfcc()(x, SR)
    ref = torchaudio.compliance.kaldi.mfcc(torch.from_numpy(x)[None], dither=0.0)
    np.testing.assert_array_equal(plain, ref.numpy())
    hubert = kaldi_mfcc(x, SR, MfccConfig(delta_order=2))
    d1 = torchaudio.functional.compute_deltas(ref.T)
    d2 = torchaudio.functional.compute_deltas(d1)
    assert hubert.shape == (ref.shape[0], 39)
    torch.testing.assert_close(hubert, torch.cat([ref.T, d1, d2]).T, rtol=0, atol=0)


def test_kaldi_short_clip_gives_zero_frames() -> None:
    assert kaldi_fbank(np.ones(100, np.float32) * 0.1, SR).shape == (0, 80)
    short = np.ones(100, np.float32) * 0.1
    assert kaldi_mfcc(short, SR, MfccConfig(delta_order=1)).shape == (0, 26)


# ------------------------------------------------------------------ spectral


def test_sine_centroid_and_zcr(synth) -> None:
    f = 1000.0
    feats = spectral_features(synth.sine(f, SR), SR)
    mid = slice(5, -5)  # away from the zero-padded edges
    assert np.allclose(feats["centroid"][mid], f, rtol=0.02)
    assert np.allclose(feats["zcr"][mid], 2 * f / SR, rtol=0.05)
    np.testing.assert_allclose(feats["rms"][mid], 0.5 / np.sqrt(2), rtol=0.01)
    np.testing.assert_allclose(feats["energy"][mid], 400 * 0.125, rtol=0.01)


def test_silence_is_zero_not_nan() -> None:
    feats = spectral_features(np.zeros(4000, np.float32), SR)
    assert len(feats["zcr"]) == 1 + 4000 // 160
    for name, v in feats.items():
        assert np.all(v == 0.0), name


def test_rolloff_of_lowpassed_noise_is_below_cutoff(synth) -> None:
    x = synth.noise(SR, seed=7)
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(x.size, 1 / SR) > 1000.0] = 0  # brick-wall low-pass at 1 kHz
    low = np.fft.irfft(spec, n=x.size).astype(np.float32)
    r_low = np.median(spectral_features(low, SR)["rolloff"])
    r_white = np.median(spectral_features(x, SR)["rolloff"])
    assert r_low < 1000.0 < r_white


def test_centroid_rolloff_rms_match_librosa(synth) -> None:
    librosa = pytest.importorskip("librosa")
    x = synth.speech_like(8000)
    feats = spectral_features(x, SR)
    kw = dict(n_fft=400, hop_length=160, center=True, pad_mode="constant")
    np.testing.assert_allclose(
        feats["centroid"], librosa.feature.spectral_centroid(y=x, sr=SR, **kw)[0], rtol=1e-3
    )
    np.testing.assert_allclose(
        feats["rolloff"], librosa.feature.spectral_rolloff(y=x, sr=SR, **kw)[0], rtol=1e-3
    )
    rms = librosa.feature.rms(
        y=x, frame_length=400, hop_length=160, center=True, pad_mode="constant"
    )[0]
    np.testing.assert_allclose(feats["rms"], rms, rtol=1e-3)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=1, max_value=5000), seed=st.integers(min_value=0, max_value=999))
def test_spectral_tokenizer_shape_and_bounds(n: int, seed: int) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    out = SpectralFeatures()(x, SR)
    assert out.shape == (1 + n // 160, 5) and out.dtype == np.float32
    zcr, energy, rms, centroid, rolloff = out.T
    assert np.isfinite(out).all()
    assert ((zcr >= 0) & (zcr <= 1)).all() and (energy >= 0).all() and (rms >= 0).all()
    assert ((centroid >= 0) & (centroid <= SR / 2)).all()
    assert ((rolloff >= 0) & (rolloff <= SR / 2)).all()


# ------------------------------------------------------------------ registry / protocol


def test_registry_builds_each_audio_tokenizer_from_dicts() -> None:
    for name in ("whisper_mel", "fbank", "mfcc", "spectral", "units"):
        assert name in TOKENIZERS
    tok = build_tokenizer("mfcc", {"num_ceps": 20, "num_mel_bins": 40, "delta_order": 1})
    assert isinstance(tok, Tokenizer)
    assert tok(np.ones(16000, np.float32) * 0.1, SR).shape == (98, 40)
    assert tok.provenance()["config"]["num_ceps"] == 20
    with pytest.raises(ConfigError, match="allowed"):
        build_tokenizer("fbank", {"num_bins": 3})
    with pytest.raises(ConfigError, match="known"):
        build_tokenizer("nope")


def test_module_docstring_examples_run() -> None:
    for mod in (af, base):
        assert doctest.testmod(mod, raise_on_error=False).failed == 0


def test_read_only_and_strided_numpy_input(synth) -> None:
    x = synth.speech_like(8000)
    frozen = np.frombuffer(x.tobytes(), np.float32)  # read-only, as decoded from bytes
    assert not frozen.flags.writeable
    np.testing.assert_array_equal(WhisperMel()(frozen, SR), WhisperMel()(x, SR))
    rev = log_mel_spectrogram(x[::-1], 80)  # negative strides
    assert (rev - log_mel_spectrogram(x[::-1].copy(), 80)).abs().max().item() == 0.0


@pytest.mark.parametrize("n_mels", [80, 128])
def test_ragged_batch_equals_single_clips(n_mels):
    from mmshard.synth import speech_like
    from mmshard.tokenizers.audio_features import log_mel_batch

    rng = np.random.default_rng(3)
    clips = [speech_like(n / SR, SR, seed=i) for i, n in enumerate((401, 1600, 16_161, 5_003))]
    clips[1] = clips[1] * 0.01 + 0.3 * rng.standard_normal(1600).astype(np.float32)
    for clip, mel in zip(clips, log_mel_batch(clips, n_mels), strict=True):
        ref = log_mel_spectrogram(clip, n_mels)
        assert mel.shape == ref.shape
        assert torch.equal(mel, ref)  # on CPU: bit-for-bit
    padded = log_mel_batch(clips[:2], n_mels, pad_or_trim=True)
    assert [m.shape[-1] for m in padded] == [3000, 3000]
    for clip, mel in zip(clips[:2], padded, strict=True):
        assert torch.equal(mel, log_mel_spectrogram(clip, n_mels, pad_or_trim=True))


# ------------------------------------------------------------------ CPU path internals


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=201, max_value=120_000), seed=st.integers(0, 2**16))
def test_frame_pieces_are_torch_stft_reflect_frames(n: int, seed: int) -> None:
    # the CPU path reads interior frames straight from the clip and pads only its ends;
    # together the pieces must be the frames torch.stft(center=True) takes, minus the last
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    ref = torch.from_numpy(np.pad(x, 200, mode="reflect")).unfold(0, 400, 160)[: n // 160]
    assert torch.equal(torch.cat(af._frame_pieces(x, n // 160)), ref)


@settings(max_examples=10, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=201, max_value=100_000), min_size=1, max_size=4),
    chunk=st.sampled_from([7, 64, 1024]),
    seed=st.integers(0, 2**16),
)
def test_batch_is_bitwise_single_whatever_the_chunking(lengths, chunk, seed) -> None:
    # clips split across FFT chunks: batched results are the one-clip ones, bit for bit,
    # the order of clips does not matter, and every result stays within 1e-5 of whisper
    rng = np.random.default_rng(seed)
    clips = [(rng.uniform(1e-3, 1) * rng.standard_normal(n)).astype(np.float32)
             for n in lengths]
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(af, "_CHUNK_FRAMES", chunk)
        singles = [log_mel_spectrogram(c, 80) for c in clips]
        batch = af.log_mel_batch(clips, 80)
        backwards = af.log_mel_batch(clips[::-1], 80)[::-1]
    finally:
        mp.undo()
    for clip, one, many, rev in zip(clips, singles, batch, backwards, strict=True):
        assert torch.equal(one, many) and torch.equal(one, rev)
        ref = whisper.log_mel_spectrogram(torch.from_numpy(clip), n_mels=80)
        assert (one - ref).abs().max().item() <= PARITY_TOL


@pytest.mark.parametrize("n_mels", [80, 128])
def test_long_clip_across_chunks_equals_whisper(n_mels: int, synth) -> None:
    x = synth.speech_like(16000 * 35 + 123)  # 3500 frames: four FFT chunks
    ref = whisper.log_mel_spectrogram(torch.from_numpy(x), n_mels=n_mels)
    ours = log_mel_spectrogram(x, n_mels)
    assert ours.shape == ref.shape and ours.is_contiguous()
    assert (ours - ref).abs().max().item() <= PARITY_TOL


def test_results_do_not_share_the_scratch_buffers(synth) -> None:
    a_in, b_in = synth.speech_like(24000), synth.noise(40000, seed=1)
    a = log_mel_spectrogram(a_in, 80)
    a_copy = a.clone()
    b = log_mel_spectrogram(b_in, 80)  # reuses every per-thread work buffer
    assert torch.equal(a, a_copy)
    assert torch.equal(b, log_mel_spectrogram(b_in.copy(), 80))


def test_threads_get_the_same_results(synth) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clips = [synth.noise(8000 + 977 * i, seed=i) * (0.1 + 0.1 * i) for i in range(8)]
    serial = [log_mel_spectrogram(c, 128) for c in clips]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            threaded = list(pool.map(lambda c: log_mel_spectrogram(c, 128), clips))
            assert all(torch.equal(s, t) for s, t in zip(serial, threaded, strict=True))


@pytest.mark.parametrize("n_mels", [80, 128])
def test_torch_path_on_cpu_equals_whisper(n_mels: int, synth) -> None:
    # the accelerator path (torch.stft, dense filters), run here on the CPU
    clips = [synth.speech_like(n) for n in (401, 16_161, 48_000)]
    single = af._log_mel_torch(torch.from_numpy(clips[1]), n_mels, pad_or_trim=False)
    ref = whisper.log_mel_spectrogram(torch.from_numpy(clips[1]), n_mels=n_mels)
    assert (single - ref).abs().max().item() <= PARITY_TOL
    for clip, mel in zip(clips, af._log_mel_batch_torch(clips, n_mels, pad_or_trim=False,
                                                         device="cpu"), strict=True):
        ref = whisper.log_mel_spectrogram(torch.from_numpy(clip), n_mels=n_mels)
        assert mel.shape == ref.shape
        assert (mel - ref).abs().max().item() <= PARITY_TOL
