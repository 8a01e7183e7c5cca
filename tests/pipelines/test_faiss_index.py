"""FAISS index choice, exactness, approximate recall, save/load and staleness."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mmshard.errors import ConfigError, DependencyMissingError, ShardError
from mmshard.pipelines.mine.faiss_index import (
    IndexConfig,
    build_index,
    choose_index_kind,
    fingerprint_array,
    index_meta,
    load_index,
    save_index,
    search,
)


def clustered(n: int, d: int, seed: int = 0, spread: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((max(8, n // 200), d)).astype(np.float32)
    x = cent[rng.integers(0, len(cent), n)] + spread * rng.standard_normal((n, d)).astype(
        np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(q: np.ndarray, x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T if metric == "ip" else -((q[:, None, :] - x[None]) ** 2).sum(-1)
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_search_equals_numpy_topk(metric: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((700, 16)).astype(np.float32)
    q = rng.standard_normal((45, 16)).astype(np.float32)
    built = build_index(x, metric=metric, config=IndexConfig(kind="flat"), block_rows=128)
    s, i = search(built, q, 10, metric=metric, chunk_rows=7)  # several query chunks
    bs, bi = brute(q, x, 10, metric)
    np.testing.assert_allclose(s, bs, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(i, bi)  # continuous random data: no ties


def test_short_corpus_pads_with_minus_one() -> None:
    x = np.eye(3, dtype=np.float32)
    built = build_index(x, metric="ip", config=IndexConfig(kind="flat"))
    s, i = search(built, x, 5, metric="ip")
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    assert sorted(i[0, :3].tolist()) == [0, 1, 2]


def test_auto_choice_by_size_and_budget() -> None:
    assert choose_index_kind(50_000, 384, memory_budget=8 << 30) == "flat"
    assert choose_index_kind(1_000_000, 512, memory_budget=24 << 30) == "ivf_flat"
    assert choose_index_kind(1_000_000, 512, memory_budget=1 << 30) == "ivf_pq"
    assert choose_index_kind(10, 4, memory_budget=1,
                             config=IndexConfig(kind="hnsw")) == "hnsw"


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "hnsw"])
def test_default_settings_reach_recall_095(kind: str) -> None:
    x = clustered(6000, 32)
    q = x[:200]
    _, exact = brute(q, x, 20, "ip")
    built = build_index(x, metric="ip", config=IndexConfig(kind=kind))
    s, got = search(built, q, 20, metric="ip", refine_vectors=x)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(got, exact, strict=True)])
    assert recall >= 0.95, (kind, built.params, recall)
    if kind == "ivf_pq":  # re-ranked: scores are exact inner products
        valid = got >= 0
        exact_s = np.einsum("qd,qkd->qk", q, x[np.maximum(got, 0)])
        np.testing.assert_allclose(s[valid], exact_s[valid], rtol=1e-4, atol=1e-5)


def test_save_load_and_stale_index_refused(tmp_path) -> None:
    x = clustered(500, 8)
    fp = fingerprint_array(x, extra={"metric": "ip"})
    meta = index_meta(fingerprint=fp, n=500, d=8, metric="ip", config=IndexConfig())
    built = build_index(x, metric="ip", config=IndexConfig(kind="ivf_flat", nlist=8))
    path = str(tmp_path / "c.index")
    save_index(built, path, meta=meta)
    assert os.path.exists(path + ".json") and not [p for p in os.listdir(tmp_path)
                                                   if ".tmp" in p]
    loaded = load_index(path, expect=meta)
    assert loaded.kind == "ivf_flat" and loaded.params["nlist"] == 8
    a = search(built, x[:5], 4, metric="ip")
    b = search(loaded, x[:5], 4, metric="ip")
    np.testing.assert_array_equal(a[1], b[1])
    y = x.copy()
    y[0, 0] += 1
    stale = dict(meta, fingerprint=fingerprint_array(y, extra={"metric": "ip"}))
    with pytest.raises(ShardError, match="stale index"):
        load_index(path, expect=stale)
    with pytest.raises(ShardError, match="no saved index"):
        load_index(str(tmp_path / "missing.index"))


def test_gpu_always_without_gpu_is_a_clear_error() -> None:
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    built = build_index(np.eye(4, dtype=np.float32), metric="ip",
                        config=IndexConfig(kind="flat"))
    with pytest.raises(DependencyMissingError, match="faiss-gpu"):
        search(built, np.eye(4, dtype=np.float32), 2, metric="ip", gpu="always")


def test_bad_index_config() -> None:
    with pytest.raises(ConfigError, match="allowed: auto, flat"):
        IndexConfig(kind="lsh")
    with pytest.raises(ConfigError, match="gpu must be"):
        IndexConfig(gpu="yes")
    with pytest.raises(ConfigError, match="empty corpus"):
        build_index(np.zeros((0, 4), np.float32), metric="ip")
