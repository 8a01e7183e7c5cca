"""Codebook: deterministic fit, encode/decode, usage, safe save/load."""

from __future__ import annotations

import doctest
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from mmshard.errors import ConfigError, DependencyMissingError
from mmshard.tokenizers import codebook as codebook_module
from mmshard.tokenizers.codebook import Codebook, CodebookConfig


def blobs(
    n_per: int = 100, k: int = 4, dim: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim)) * 20
    labels = np.repeat(np.arange(k), n_per)
    x = centers[labels] + rng.standard_normal((k * n_per, dim))
    return x.astype(np.float32), labels


def test_fit_is_deterministic_per_seed() -> None:
    x, _ = blobs(n_per=200, k=8, dim=16)
    a = Codebook.fit(x, k=16, seed=3, niter=10)
    b = Codebook.fit(x, k=16, seed=3, niter=10)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.fingerprint == b.fingerprint
    c = Codebook.fit(x, k=16, seed=4, niter=10)
    assert c.fingerprint != a.fingerprint


def test_encode_decode_round_trip_and_blobs() -> None:
    x, labels = blobs()
    cb = Codebook.fit(x, k=4, seed=0, nredo=5, created_from="blobs test")
    ids = cb.encode(x)
    assert ids.dtype == np.int32 and ids.shape == (400,)
    # every blob maps to one code, distinct blobs to distinct codes
    per_blob = [set(ids[labels == i].tolist()) for i in range(4)]
    assert all(len(s) == 1 for s in per_blob)
    assert len(set().union(*per_blob)) == 4
    np.testing.assert_array_equal(cb.encode(cb.centroids), np.arange(4))
    np.testing.assert_array_equal(cb.decode(cb.encode(cb.centroids)), cb.centroids)
    assert cb.decode(ids.reshape(20, 20)).shape == (20, 20, 6)
    usage = cb.usage(ids)
    assert usage["used"] == 4 and usage["dead_codes"] == 0 and usage["count"] == 400
    assert usage["perplexity"] == pytest.approx(4.0)
    assert cb.provenance["fit_shape"] == [400, 6]
    assert cb.provenance["created_from"] == "blobs test"
    assert cb.provenance["seed"] == 0 and "faiss_version" in cb.provenance


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=300),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_encode_is_exact_nearest_centroid(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cb = Codebook(rng.standard_normal((7, 5)).astype(np.float32), CodebookConfig(k=7))
    x = rng.standard_normal((n, 5)).astype(np.float32)
    ids = cb.encode(x)
    assert ids.shape == (n,) and ids.dtype == np.int32
    d = ((x[:, None, :].astype(np.float64) - cb.centroids[None].astype(np.float64)) ** 2).sum(-1)
    # equal to brute force up to float ties
    chosen = d[np.arange(n), ids]
    assert np.all(chosen <= d.min(axis=1) + 1e-4)


def test_usage_counts_dead_codes() -> None:
    cb = Codebook(np.eye(5, dtype=np.float32), CodebookConfig(k=5))
    u = cb.usage(np.array([0, 0, 0, 0]))
    assert u == {"perplexity": 1.0, "used": 1, "dead_codes": 4, "k": 5, "count": 4}
    assert cb.usage(np.zeros(0, np.int32))["perplexity"] == 0.0
    with pytest.raises(ConfigError, match=r"\[0, 5\)"):
        cb.decode(np.array([5]))


def test_spherical_codebook_has_unit_centroids() -> None:
    x, _ = blobs(dim=8)
    cb = Codebook.fit(x, k=4, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(cb.centroids, axis=1), 1.0, rtol=1e-5)
    # inner-product assignment: scaling a vector does not change its code
    np.testing.assert_array_equal(cb.encode(x), cb.encode(3.0 * x))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    x, _ = blobs()
    cb = Codebook.fit(x, k=4, seed=1, niter=5, created_from="unit test")
    path = cb.save(tmp_path / f"sub/cb{suffix}")
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    back = Codebook.load(path)
    np.testing.assert_array_equal(back.centroids, cb.centroids)
    assert back.config == cb.config
    assert back.provenance == cb.provenance
    assert back.fingerprint == cb.fingerprint
    np.testing.assert_array_equal(back.encode(x), cb.encode(x))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["cb.safetensors", "cb.npz", "cb.pkl"])
def test_pickle_payload_is_refused_unexecuted(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(ConfigError, match="pickle"):
        Codebook.load(path)
    assert not marker.exists()


def test_npz_with_pickled_object_array_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "cb.npz"
    np.savez(path, centroids=np.array([_Evil(marker)], dtype=object), metadata=np.array("{}"))
    with pytest.raises(ConfigError):
        Codebook.load(path)
    assert not marker.exists()


def test_invalid_files_are_config_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a codebook at all" * 10)
    with pytest.raises(ConfigError, match="not a codebook"):
        Codebook.load(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, str(other))
    with pytest.raises(ConfigError, match="centroids"):
        Codebook.load(other)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"centroids": np.zeros((2, 2), np.float32)}, str(foreign), metadata={"format": "x"})
    with pytest.raises(ConfigError, match="mmshard.codebook"):
        Codebook.load(foreign)
    good = Codebook(np.eye(3, dtype=np.float32), CodebookConfig(k=3))
    good = good.save(tmp_path / "g.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(ConfigError):
        Codebook.load(truncated)
    with pytest.raises(ConfigError, match="cannot read"):
        Codebook.load(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        Codebook(np.eye(2, dtype=np.float32), CodebookConfig(k=2)).save(tmp_path / "cb.pt")


def test_fit_argument_errors() -> None:
    x, _ = blobs(n_per=2, k=2)
    with pytest.raises(ConfigError, match="at least k=10"):
        Codebook.fit(x, k=10)
    with pytest.raises(ConfigError, match="2-D"):
        Codebook.fit(x[0], k=1)
    with pytest.raises(ConfigError, match="k"):
        Codebook.fit(x, k=0)
    with pytest.raises(ConfigError, match="dimension"):
        cb = Codebook(np.eye(2, dtype=np.float32), CodebookConfig(k=2))
        cb.encode(np.zeros((1, 3), np.float32))


def test_gpu_true_without_gpu_says_how_to_fix() -> None:
    import faiss

    if faiss.get_num_gpus() > 0:  # pragma: no cover - GPU machines only
        pytest.skip("faiss sees a GPU")
    x, _ = blobs()
    with pytest.raises(DependencyMissingError, match="faiss-gpu"):
        Codebook.fit(x, k=4, gpu=True)


def test_codebook_pickles_for_workers() -> None:
    x, _ = blobs()
    cb = Codebook.fit(x, k=4)
    cb.encode(x[:3])  # builds the faiss index, which must not travel
    back = pickle.loads(pickle.dumps(cb))
    np.testing.assert_array_equal(back.encode(x), cb.encode(x))


def test_docstring_examples_run() -> None:
    assert doctest.testmod(codebook_module, raise_on_error=False).failed == 0
