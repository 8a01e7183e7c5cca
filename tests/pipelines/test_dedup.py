"""mmshard dedup: planted near duplicates (resized, re-encoded, cropped, exact copies) are
found, the keep rule is deterministic, outputs are the C4 contract, and the pHash search
equals brute force."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard import synth
from mmshard.cli.main import main
from mmshard.dataset import DatasetIndex, ShardInfo
from mmshard.errors import ConfigError
from mmshard.pipelines.curate import DedupConfig, dedup
from mmshard.pipelines.curate.semantic import VectorSource, semantic_duplicates
from mmshard.pipelines.executor import LocalExecutor, RayExecutor
from mmshard.tario import TarWriter
from mmshard.tokenizers.phash import dhash, hamming, near_pairs, phash
from tests.pipelines._curate_media import ingest_corpus, make_corpus


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("leaky"))
    corpus = make_corpus(root)
    return corpus, ingest_corpus(corpus, os.path.join(root, "ds"))


def _rows(ds: str) -> list[dict]:
    return pq.read_table(os.path.join(ds, "dedup", "dedup.parquet")).to_pylist()


def _keep(ds: str) -> list[str]:
    return pq.read_table(os.path.join(ds, "dedup", "keep.parquet")).column("key").to_pylist()


def _manifest_keys(ds: str) -> list[str]:
    return pq.read_table(os.path.join(ds, "manifest.parquet")).column("key").to_pylist()


# -- the hash module ---------------------------------------------------------------------

def test_phash_is_stable_under_resize_reencode_and_crop_but_separates_photos():
    from PIL import Image

    ims = [synth.photo_like(64, 48, seed=s) for s in range(12)]
    for fn in (phash, dhash):
        hs = np.array([fn(np.asarray(im)) for im in ims], dtype=np.uint64)
        d = hamming(hs[:, None], hs[None, :])
        assert d[np.triu_indices(len(ims), 1)].min() > 10  # distinct photos stay apart
        buf = io.BytesIO()
        ims[0].save(buf, "JPEG", quality=30)
        variants = [ims[0].resize((40, 30)), Image.open(buf), ims[0].crop((2, 2, 62, 46))]
        assert all(hamming(hs[0], fn(np.asarray(v))) <= 10 for v in variants)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), threshold=st.integers(0, 12), n=st.integers(1, 300))
def test_near_pairs_equals_brute_force(seed, threshold, n):
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    flips = rng.integers(0, 64, size=(n // 3, 6)).astype(np.uint64)  # plant near copies
    for k in range(n // 3):
        h[n - 1 - k] = h[k] ^ np.bitwise_or.reduce(np.uint64(1) << flips[k][: k % 7])
    i, j, d = near_pairs(h, threshold)
    full = hamming(h[:, None], h[None, :])
    bi, bj = np.nonzero(np.triu(full <= threshold, 1))
    assert list(zip(i.tolist(), j.tolist())) == list(zip(bi.tolist(), bj.tolist()))
    assert (d == full[i, j]).all()
    qi, rj, _ = near_pairs(h[: n // 2], threshold, ref=h)  # two-set mode
    assert set(zip(qi.tolist(), rj.tolist())) == set(zip(*np.nonzero(full[: n // 2] <= threshold)))


# -- the job -----------------------------------------------------------------------------

def test_phash_dedup_finds_every_planted_copy_and_keeps_the_larger(leaky):
    corpus, ds = leaky
    r = dedup(ds, DedupConfig(method="phash"), executor=LocalExecutor(2))
    rows = _rows(ds)
    found = {x["key"]: x["duplicate_of"] for x in rows if x["duplicate_of"]}
    # resized/re-encoded/cropped/small copies are smaller or equal: the original is kept;
    # the byte-identical copy ties on size, so the first key in sorting order is kept.
    expect = {copy: orig for copy, orig in corpus.planted.items()}
    exact = next(c for c, k in corpus.kinds.items() if k == "exact")
    expect.pop(exact)
    expect[corpus.planted[exact]] = exact  # "album1__copy" < "album5__p1"
    assert min(exact, corpus.planted[exact]) == exact
    assert found == expect
    assert r.stats["duplicates"] == len(expect) and r.stats["duplicate_sets"] == len(expect)
    methods = {x["key"]: x["method"] for x in rows if x["duplicate_of"]}
    assert methods[corpus.planted[exact]] == "exact"
    assert all(0.8 < x["similarity"] <= 1.0 for x in rows if x["duplicate_of"])
    kept_rows = [x for x in rows if x["duplicate_of"] is None]
    assert all(x["similarity"] is None for x in kept_rows) and len(kept_rows) == len(expect)
    assert sorted(x["cluster"] for x in kept_rows) == list(range(len(expect)))
    keep = _keep(ds)
    assert keep == [k for k in _manifest_keys(ds) if k not in found]  # dataset order
    assert not [n for n in os.listdir(os.path.join(ds, "dedup")) if n.startswith(".tmp")]


def test_exact_dedup_finds_only_the_byte_copy(leaky):
    corpus, ds = leaky
    r = dedup(ds, DedupConfig(method="exact"))
    dups = [x for x in _rows(ds) if x["duplicate_of"]]
    exact = next(c for c, k in corpus.kinds.items() if k == "exact")
    assert [(x["key"], x["duplicate_of"], x["method"]) for x in dups] == \
        [(corpus.planted[exact], exact, "exact")]
    assert r.stats["kept"] == len(_manifest_keys(ds)) - 1


def test_ray_executor_gives_the_same_result(leaky, ray_cluster):
    _, ds = leaky
    dedup(ds, DedupConfig(method="dhash"), executor=LocalExecutor(1))
    local = _rows(ds)
    ex = RayExecutor()
    try:
        dedup(ds, DedupConfig(method="dhash"), executor=ex)
    finally:
        ex.close()
    assert _rows(ds) == local


def test_other_config_is_refused_without_overwrite(leaky):
    _, ds = leaky
    dedup(ds, DedupConfig(method="phash", threshold=4))
    with pytest.raises(ConfigError, match="another config"):
        dedup(ds, DedupConfig(method="phash", threshold=6), overwrite=False)
    dedup(ds, DedupConfig(method="phash", threshold=4), overwrite=False)  # same: fine


@pytest.mark.parametrize("kwargs,msg", [({"method": "fuzzy"}, "allowed: exact, phash"),
                                        ({"threshold": 40}, r"\[0, 32\]"),
                                        ({"eps": 1.5}, r"\(0, 1\)")])
def test_bad_config_lists_allowed_values(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        DedupConfig(**kwargs)


# -- semantic ------------------------------------------------------------------------------

def _write_emb_sidecar(ds: str, vectors: dict[str, np.ndarray], name: str = "emb_jpg") -> None:
    idx = json.loads(open(os.path.join(ds, "index.json")).read())
    man = pq.read_table(os.path.join(ds, "manifest.parquet")).to_pydict()
    by_shard: dict[str, list[str]] = {}
    for k, s in zip(man["key"], man["shard"]):
        by_shard.setdefault(s, []).append(k)
    os.makedirs(os.path.join(ds, name), exist_ok=True)
    shards = []
    for s in idx["shardlist"]:
        stem = s["url"].rsplit("/", 1)[-1].removesuffix(".tar")
        path = os.path.join(ds, name, f"{stem}.tar")
        with TarWriter(path) as w:
            for k in by_shard.get(stem, []):
                buf = io.BytesIO()
                np.save(buf, vectors[k].astype(np.float32), allow_pickle=False)
                w.write({"__key__": k, f"{name}.npy": buf.getvalue()})
        shards.append(ShardInfo(url=f"{stem}.tar", split=s["split"], nsamples=len(
            by_shard.get(stem, [])), filesize=os.path.getsize(path), sha256="",
            base_sha256=s["sha256"]))  # C2 provenance: the base shard it belongs to
    with open(os.path.join(ds, name, "index.json"), "wb") as f:
        f.write(DatasetIndex(name="emb", shards=tuple(shards), field_set=name).to_json())


def test_semantic_dedup_on_an_embedding_sidecar(leaky):
    corpus, ds = leaky
    rng = np.random.default_rng(0)
    keys = _manifest_keys(ds)
    vec = {k: rng.normal(size=32) for k in keys}
    for copy, orig in corpus.planted.items():
        vec[copy] = vec[orig] + rng.normal(scale=0.02, size=32)  # cosine ~0.9998
    _write_emb_sidecar(ds, vec)
    r = dedup(ds, DedupConfig(method="semantic", eps=0.01, clusters=2))
    found = {x["key"]: x["duplicate_of"] for x in _rows(ds) if x["duplicate_of"]}
    assert set(found) | set(found.values()) == set(corpus.planted) | set(corpus.planted.values())
    assert all(x["method"] == "semantic" and x["similarity"] >= 0.99
               for x in _rows(ds) if x["duplicate_of"])
    assert r.stats["vectors"] == len(keys) and r.stats["largest_cluster"] < len(keys)


def test_semdedup_memory_is_per_cluster_and_matches_brute_force(tmp_path):
    rng = np.random.default_rng(1)
    n, d = 3000, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[2500:] = x[:500] + rng.normal(scale=0.01, size=(500, d)).astype(np.float32)
    keys = [f"k{i:05d}" for i in range(n)]
    src = VectorSource.from_arrays(keys, x, chunk=700)
    g = semantic_duplicates(src, eps=0.001, clusters=8, seed=0, spill_bytes=50_000,
                            keep_order=lambda ks: np.argsort(ks, kind="stable"),
                            block=64, tmpdir=str(tmp_path))
    found = set(zip(g.dup.tolist(), g.kept.tolist()))
    planted = {(i + 2500, i) for i in range(500)}
    same_cluster = {(a, b) for a, b in planted if g.cluster[a] == g.cluster[b]}
    # SemDeDup's guarantee: every pair inside one k-means cluster, no false positives
    assert same_cluster <= found <= planted and len(same_cluster) > 450
    assert g.largest_cluster < n  # only one cluster's vectors were ever loaded together
    assert not os.listdir(tmp_path)  # spill files removed


def test_cli_dedup_and_help(leaky, capsys):
    _, ds = leaky
    assert main(["dedup", ds, "--method", "exact", "--executor", "local", "--no-progress"]) == 0
    assert "duplicates" in capsys.readouterr().out
    for cmd in ("dedup", "audit", "report"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and f"mmshard {cmd}" in out
    assert main(["dedup", ds, "--method", "semantic", "--field-set", "nope",
                 "--executor", "local"]) == 2
    assert "no field set 'nope'" in capsys.readouterr().err


def test_videos_are_matched_on_their_keyframes_sidecar(tmp_path):
    """Two encodes of one video (different bytes, near-identical keyframes) are one set;
    a video with other keyframes is not; a video without keyframes is counted."""
    from PIL import Image

    ds = tmp_path / "ds"
    (ds / "shards").mkdir(parents=True)
    (ds / "keyframes").mkdir()
    scenes = [synth.photo_like(64, 48, seed=s) for s in (1, 2, 3, 4)]

    def jpg(im: Image.Image, size=(64, 48), q=90) -> bytes:
        buf = io.BytesIO()
        im.resize(size).save(buf, "JPEG", quality=q)
        return buf.getvalue()

    videos = {"v_orig": (scenes[:2], (64, 48), 90, 640),
              "v_small": (scenes[:2], (48, 36), 40, 320),
              "v_other": (scenes[2:], (64, 48), 90, 640), "v_nokf": (None, None, None, 640)}
    with TarWriter(str(ds / "shards" / "train-000000.tar")) as w, \
            TarWriter(str(ds / "keyframes" / "train-000000.tar")) as kw:
        for key, (ims, size, q, width) in videos.items():
            meta = {"width": width, "height": width * 3 // 4}
            w.write({"__key__": key, "mp4": key.encode() * 50, "json": json.dumps(meta)})
            if ims is not None:
                kw.write({"__key__": key, "kf.json": "{}", **{
                    f"kf.{j:03d}.jpg": jpg(im, size, q) for j, im in enumerate(ims)}})
    for folder, fs in ((ds, "shards"), (ds / "keyframes", "keyframes")):
        url = "shards/train-000000.tar" if fs == "shards" else "train-000000.tar"
        (folder / "index.json").write_bytes(DatasetIndex(name="v", field_set=fs, shards=(
            ShardInfo(url=url, split="train", nsamples=4 if fs == "shards" else 3,
                      filesize=0, sha256=""),)).to_json())
    pq.write_table(pa.table({"key": list(videos), "split": ["train"] * 4}),
                   str(ds / "manifest.parquet"))
    r = dedup(str(ds), DedupConfig(method="phash"))
    assert [(x["key"], x["duplicate_of"]) for x in _rows(str(ds))] == [
        ("v_orig", None), ("v_small", "v_orig")]  # the larger video is kept
    assert r.stats["not_hashed"] == {"no_keyframes": 1}


def test_an_undecodable_image_is_counted_and_kept(tmp_path):
    from tests._shards import make_dataset

    info = make_dataset(tmp_path / "ds", shard_sizes={"train": (3,)}, image=True,
                        corrupt=["train_00001"])
    r = dedup(info.root, DedupConfig(method="phash"))
    assert r.stats["not_hashed"] == {"undecodable_image": 1}
    assert "train_00001" in _keep(info.root)  # not hashed means not removed


def test_loader_filter_dedup_streams_exactly_the_keep_list(leaky):
    """C4 end to end: the Loader's filter="dedup" reads keep.parquet written here."""
    import mmshard

    _, ds = leaky
    dedup(ds, DedupConfig(method="phash"))
    keep = set(_keep(ds))
    man = pq.read_table(os.path.join(ds, "manifest.parquet")).to_pydict()
    for split in ("train", "val"):
        loader = mmshard.Loader(ds, split=split, batch_size=4, seed=0, filter="dedup",
                                shuffle=False, rank=0, world_size=1, num_workers=0)
        got = [k for b in loader for k, pad in zip(b["__key__"], b["__pad__"].tolist())
               if not pad]
        assert sorted(got) == sorted(k for k, s in zip(man["key"], man["split"])
                                     if s == split and k in keep)
