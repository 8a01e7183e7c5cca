"""Patch codebook tokenizer: shapes, dtypes, determinism, PSNR floor, safe files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmshard import synth
from mmshard.errors import ConfigError, DataError
from mmshard.tokenizers.base import TOKENIZERS, Tokenizer, build_tokenizer
from mmshard.tokenizers.patch_vq import PatchVQConfig, PatchVQTokenizer, extract_patches


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    return synth.smooth_image(rng, 64)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [smooth_image(rng) for _ in range(32)]


@pytest.fixture(scope="module")
def tok(images) -> PatchVQTokenizer:
    return PatchVQTokenizer.fit(images, patch=8, k=64, pca_dim=16, seed=0)


def test_encode_decode_shapes_and_dtypes(tok, images):
    grid = tok(images[0])
    assert grid.shape == (8, 8) and grid.dtype == np.int16
    assert grid.min() >= 0 and grid.max() < 64
    out = tok.decode(grid)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # non-multiple sizes drop the bottom/right remainder; PIL images are accepted
    odd = Image.fromarray(images[1][:50, :61])
    assert tok.encode(odd).shape == (6, 7)
    grids = tok.encode_batch([images[2], images[3][:32, :48]])
    assert [g.shape for g in grids] == [(8, 8), (4, 6)]
    assert np.array_equal(grids[0], tok(images[2]))
    assert isinstance(tok, Tokenizer) and tok.storage_dtype == np.int16


def test_psnr_floor_on_smooth_images(tok, images):
    # measured about 28.6 dB on held-out images (k=64, patch 8, PCA 16); floor with margin
    held_out = [smooth_image(np.random.default_rng(100 + i)) for i in range(8)]
    assert tok.reconstruction_psnr(held_out) > 24.0
    usage = tok.usage()
    assert usage["used"] >= 48 and usage["dead_codes"] == 64 - usage["used"]
    held_usage = tok.usage(tok.encode_batch(held_out))
    assert held_usage["count"] == 8 * 64 and held_usage["perplexity"] > 8


def test_same_seed_same_codebook(images):
    a = PatchVQTokenizer.fit(images[:16], patch=8, k=32, seed=3)
    b = PatchVQTokenizer.fit(images[:16], patch=8, k=32, seed=3)
    assert np.array_equal(a.codebook.centroids, b.codebook.centroids)
    assert a.provenance() == b.provenance()
    assert a.provenance()["codebook"]["fingerprint"] == a.codebook.fingerprint


def test_save_load_round_trip_and_registry(tok, images, tmp_path):
    path = tok.save(tmp_path / "vq.safetensors")
    loaded = PatchVQTokenizer.load(path)
    assert loaded.config == tok.config
    assert loaded.provenance() == tok.provenance()
    for img in images[:4]:
        assert np.array_equal(loaded(img), tok(img))
    assert np.array_equal(loaded.decode(tok(images[0])), tok.decode(tok(images[0])))
    assert loaded.usage() == tok.usage()
    built = build_tokenizer("vq", {"path": str(path)})
    assert "vq" in TOKENIZERS and np.array_equal(built(images[0]), tok(images[0]))


def test_pickles_and_foreign_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "vq.safetensors"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ConfigError, match="pickle"):
        PatchVQTokenizer.load(bad)
    assert not marker.exists()
    from mmshard.tokenizers.codebook import Codebook, CodebookConfig

    cb = Codebook(np.eye(4, dtype=np.float32), CodebookConfig(k=4))
    cb_path = cb.save(tmp_path / "cb.safetensors")
    with pytest.raises(ConfigError, match="Codebook.load"):
        PatchVQTokenizer.load(cb_path)


def test_resolution_policy_in_config_is_applied(images):
    cfg = PatchVQConfig(patch=8, k=16, resolution={"policy": "fixed", "height": 32,
                                                    "width": 48, "patch": 8})
    tok = PatchVQTokenizer.fit(images[:8], config=cfg)
    assert tok(images[0]).shape == (4, 6)
    assert tok(images[0][:20, :20]).shape == (4, 6)


def test_config_errors_name_the_allowed_values(images):
    with pytest.raises(ConfigError, match="imagenet, unit"):
        PatchVQConfig(normalize="zscore")
    with pytest.raises(ConfigError, match="pca_dim"):
        PatchVQConfig(patch=4, pca_dim=48)
    with pytest.raises(ConfigError, match="known"):
        PatchVQConfig(resolution={"policy": "nope"})
    with pytest.raises(ConfigError, match="at least 4096 patches"):
        PatchVQTokenizer.fit(images[:2], patch=8, k=4096)
    with pytest.raises(ConfigError, match="path"):
        build_tokenizer("vq")


def test_bad_inputs_are_data_errors(tok):
    with pytest.raises(DataError, match="smaller than one"):
        tok(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        tok(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(DataError):
        tok.decode(np.full((2, 2), 64))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), p=st.integers(1, 9))
def test_extract_patches_round_trips_the_cropped_image(h, w, p):
    img = np.random.default_rng(h * 100 + w).integers(0, 255, (h, w, 3), np.uint8)
    if h < p or w < p:
        with pytest.raises(DataError):
            extract_patches(img, p)
        return
    patches, (rows, cols) = extract_patches(img, p)
    assert (rows, cols) == (h // p, w // p)
    assert patches.shape == (rows * cols, p * p * 3)
    # row-major order: patch (r, c) is the block at rows r*p.., cols c*p..
    r, c = rows - 1, cols - 1
    block = img[r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1)
    assert np.array_equal(patches[r * cols + c], block)
