"""Discrete units: frame-rate reduction, dedup with recoverable durations, waveform path."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmshard.errors import ConfigError
from mmshard.tokenizers import units as units_module
from mmshard.tokenizers.base import build_tokenizer
from mmshard.tokenizers.codebook import Codebook, CodebookConfig
from mmshard.tokenizers.units import (
    UnitsConfig,
    UnitTokenizer,
    run_length_decode,
    run_length_encode,
)

SR = 16000


def line_codebook(k: int = 5, dim: int = 1) -> Codebook:
    """Centroids at 0, 1, ..., k-1 on the first axis: a frame's id is its rounded value."""
    c = np.zeros((k, dim), np.float32)
    c[:, 0] = np.arange(k)
    return Codebook(c, CodebookConfig(k=k))


def test_reduce_averages_groups_and_keeps_the_tail() -> None:
    tok = UnitTokenizer(line_codebook(), UnitsConfig(frame_rate_reduction=4))
    frames = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_allclose(tok.reduce(frames)[:, 0], [1.5, 5.5, 8.5])
    assert tok.reduce(np.zeros((0, 1), np.float32)).shape == (0, 1)


def test_encode_with_reduction_assigns_averaged_frames() -> None:
    tok = UnitTokenizer(line_codebook(), UnitsConfig(frame_rate_reduction=2))
    frames = np.array([[0], [0.2], [3.9], [4.0], [1.1]], np.float32)
    seq = tok.encode(frames)
    assert seq.units.tolist() == [0, 4, 1]
    assert seq.run_lengths.tolist() == [1, 1, 1]


@settings(max_examples=40, deadline=None)
@given(
    frames=hnp.arrays(np.float32, st.tuples(st.integers(0, 60), st.just(1)),
                      elements=st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0])),
    r=st.integers(1, 5),
)
def test_dedup_then_expand_equals_plain_ids(frames: np.ndarray, r: int) -> None:
    cb = line_codebook()
    plain = UnitTokenizer(cb, UnitsConfig(frame_rate_reduction=r)).encode(frames)
    dedup = UnitTokenizer(cb, UnitsConfig(frame_rate_reduction=r, dedup=True)).encode(frames)
    assert len(plain.units) == math.ceil(len(frames) / r)
    np.testing.assert_array_equal(dedup.expand(), plain.units)
    np.testing.assert_array_equal(run_length_decode(dedup.units, dedup.run_lengths), plain.units)
    assert int(dedup.run_lengths.sum()) == len(plain.units)
    assert np.all(dedup.units[1:] != dedup.units[:-1])  # no two equal neighbours
    assert dedup.units.dtype == plain.units.dtype == np.int16


@settings(max_examples=40, deadline=None)
@given(ids=hnp.arrays(np.int32, st.integers(0, 80), elements=st.integers(0, 3)))
def test_run_length_round_trip(ids: np.ndarray) -> None:
    values, lengths = run_length_encode(ids)
    np.testing.assert_array_equal(run_length_decode(values, lengths), ids)
    assert lengths.dtype == np.int32 and (lengths >= 1).all()


def test_id_dtype_follows_codebook_size() -> None:
    assert UnitTokenizer(line_codebook(k=32767)).storage_dtype == np.int16
    big = UnitTokenizer(line_codebook(k=32768))
    assert big.storage_dtype == np.int32
    assert big.encode(np.array([[40000.0]], np.float32)).units.tolist() == [32767]


def _two_sound_clip() -> np.ndarray:
    t = np.arange(SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 300 * t)
    hiss = 0.05 * np.random.default_rng(0).standard_normal(SR)
    return np.concatenate([tone, hiss]).astype(np.float32)


def test_waveform_units_separate_two_sounds(tmp_path: Path) -> None:
    clip = _two_sound_clip()
    probe = UnitTokenizer(line_codebook(dim=39), UnitsConfig(frame_rate_reduction=4))
    feats = probe.features(clip, SR)
    assert feats.shape == (1 + (2 * SR - 400) // 160, 39)  # HuBERT iter-0 MFCC + deltas
    cb = Codebook.fit(probe.reduce(feats), k=2, seed=0, nredo=3)
    path = cb.save(tmp_path / "units.safetensors")
    tok = build_tokenizer(
        "units", {"codebook_path": str(path), "frame_rate_reduction": 4, "dedup": False}
    )
    ids = tok(clip, SR)
    assert ids.dtype == np.int16 and len(ids) == math.ceil(len(feats) / 4)
    first, second = ids[2:20], ids[-20:-2]  # away from the boundary and clip edges
    assert len(set(first.tolist())) == 1 and len(set(second.tolist())) == 1
    assert first[0] != second[0]
    assert tok.unit_duration_s == pytest.approx(0.04)
    # 44.1 kHz input is resampled to the MFCC rate first
    resampled = tok(np.interp(np.arange(0, len(clip), 16000 / 44100), np.arange(len(clip)), clip)
                    .astype(np.float32), 44100)
    assert abs(len(resampled) - len(ids)) <= 1
    prov = tok.provenance()
    assert prov["tokenizer"] == "units" and prov["version"] == "1"
    assert prov["config"]["frame_rate_reduction"] == 4
    assert prov["config"]["mfcc"]["delta_order"] == 2
    assert prov["codebook"]["fingerprint"] == cb.fingerprint
    assert prov["codebook"]["provenance"]["fit_shape"] == [math.ceil(len(feats) / 4), 39]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="frame_rate_reduction"):
        UnitsConfig(frame_rate_reduction=0)
    with pytest.raises(ConfigError, match="codebook_path"):
        build_tokenizer("units", {})
    with pytest.raises(ConfigError, match="dimension"):
        UnitTokenizer(line_codebook(dim=2)).encode(np.zeros((3, 5), np.float32))
    with pytest.raises(ConfigError, match=r"\[T, D\]"):
        UnitTokenizer(line_codebook()).encode(np.zeros(3, np.float32))


def test_docstring_examples_run() -> None:
    assert doctest.testmod(units_module, raise_on_error=False).failed == 0
