"""Field sets ``vqvae`` (VQ-VAE checkpoints) and ``tokenizer`` (user plug-ins) in the
transform job, on real shards."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmshard.pipelines.transform.vision_fields  # noqa: F401  (registers the field sets)
from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError, DataError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.transform.fields import FIELD_SETS, build_field_set
from mmshard.pipelines.transform.job import tokenize
from mmshard.pipelines.transform.vision_fields import crop_to_square
from mmshard.tokenizers.vqvae import (
    VQVAE,
    VQVAEConfig,
    VQVAETokenizer,
    load_vqvae,
    save_vqvae,
)
from tests._shards import make_dataset

PLUGIN = "mmshard_test_vision_plug"


def sidecar(root, field_set):
    ds = open_dataset(str(root))
    return {s["__key__"]: s for sh in ds.index.shards for s in ds.iter_shard(sh, field_set)}


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An (untrained) VQ-VAE checkpoint: 40 codes, factor 4."""
    path = tmp_path_factory.mktemp("ckpt") / "vq.safetensors"
    save_vqvae(VQVAE(VQVAEConfig(codebook_size=40, code_dim=8, channels=(8,), num_down=2),
                     seed=3), path)
    return str(path)


@pytest.fixture
def images_ds(tmp_path):
    """5 samples in 2 shards; image sides are multiples of 4; pixels all equal i."""
    return make_dataset(tmp_path / "ds", shard_sizes={"train": (3, 2)}, image=True)


def test_vqvae_field_set_writes_id_grids_matching_the_tokenizer(images_ds, ckpt):
    r = tokenize(images_ds.root, {"vqvae": {"path": ckpt}}, executor=LocalExecutor(1))
    assert r.stats["vqvae"]["ok"] == 5 and r.stats["vqvae"]["failed"] == 0
    side = sidecar(images_ds.root, "vqvae")
    assert sorted(side) == images_ds.keys["train"]
    ds = open_dataset(images_ds.root)
    base = {s["__key__"]: s for sh in ds.index.shards for s in ds.iter_shard(sh)}
    tok = VQVAETokenizer(load_vqvae(ckpt, device="cpu"))
    from PIL import Image

    for key, s in side.items():
        ids = load_npy(s["vqvae.npy"])
        w, h = images_ds.size[key]
        assert ids.shape == (h // 4, w // 4) and ids.dtype == np.int16
        assert 0 <= ids.min() and ids.max() < 40
        fld = "png" if "png" in base[key] else "jpg"
        img = np.asarray(Image.open(io.BytesIO(base[key][fld])).convert("RGB"))
        np.testing.assert_array_equal(ids, tok(img))
    idx = json.loads((Path(images_ds.root) / "vqvae" / "index.json").read_text())
    prov = idx["provenance"]
    assert prov["tokenizer"] == "vqvae" and prov["config"]["codebook_size"] == 40
    with open(ckpt, "rb") as f:
        assert prov["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert idx["fields"] == ["vqvae.npy"]


def test_vqvae_image_size_resizes_every_image_to_one_grid(images_ds, ckpt):
    r = tokenize(images_ds.root, {"vq16": {"kind": "vqvae", "path": ckpt, "image_size": 16}},
                 executor=LocalExecutor(1))
    assert r.stats["vq16"]["ok"] == 5
    grids = [load_npy(s["vq16.npy"]) for s in sidecar(images_ds.root, "vq16").values()]
    assert {g.shape for g in grids} == {(4, 4)}


def test_vqvae_refuses_bad_options_and_pickled_checkpoints(images_ds, ckpt, tmp_path):
    import torch

    with pytest.raises(ConfigError, match="needs a checkpoint"):
        tokenize(images_ds.root, {"vqvae": {}}, executor=LocalExecutor(1))
    with pytest.raises(ConfigError, match="multiple of"):
        build_field_set("vqvae", {"path": ckpt, "image_size": 18})
    with pytest.raises(ConfigError, match="unknown vqvae option"):
        build_field_set("vqvae", {"path": ckpt, "size": 16})
    pt = tmp_path / "evil.safetensors"
    torch.save({"w": torch.zeros(2)}, pt)
    with pytest.raises(ConfigError, match="pickle"):
        tokenize(images_ds.root, {"vqvae": {"path": str(pt)}}, executor=LocalExecutor(1))
    raw = tmp_path / "evil.pt"
    raw.write_bytes(pickle.dumps({"w": [0.0]}))
    with pytest.raises(ConfigError, match="pickle"):
        build_field_set("vqvae", {"path": str(raw)})
    assert not (Path(images_ds.root) / "vqvae").exists()  # refused before any work


def test_vqvae_image_with_odd_size_is_a_bad_shape_row(ckpt):
    fs = build_field_set("vqvae", {"path": ckpt})
    with pytest.raises(DataError, match="image_size") as e:
        fs.compute(np.zeros((18, 30, 3), np.uint8))
    assert e.value.reason == "bad_shape"


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), size=st.sampled_from([4, 8, 16]))
def test_crop_to_square_and_grid_shape_for_any_image(ckpt, h, w, size):
    img = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), np.uint8)
    out = crop_to_square(img, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    fs = build_field_set("vqvae", {"path": ckpt, "image_size": size})
    ids = load_npy(fs.compute(img)["vqvae.npy"])
    assert ids.shape == (size // 4, size // 4)
    np.testing.assert_array_equal(ids, load_npy(fs.compute(img)["vqvae.npy"]))  # deterministic


# ----------------------------------------------------------------------------- plug-ins

@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / f"{PLUGIN}.py").write_text(textwrap.dedent("""
        import numpy as np

        class MeanColour:
            '''One id per image: its mean pixel value // (256 // bins), per channel.'''
            version = "2"

            def __init__(self, bins, device):
                self.bins, self.device = bins, device

            def encode(self, batch):
                step = 256 // self.bins
                return np.stack([(np.asarray(im).mean(axis=(0, 1)) // step).astype(np.int64)
                                 for im in batch])

        def build(bins=4, device="cpu"):
            return MeanColour(bins, device)

        class Floats:
            def encode(self, batch):
                return [np.asarray(im, np.float32).mean(axis=(0, 1)) / 255 for im in batch]

        def floats():
            return Floats()

        class Bytes:
            storage_dtype = "uint8"
            def encode(self, batch):
                return [list(t.encode("utf-8")) for t in batch]

        def text_bytes():
            return Bytes()

        class Wide:
            def encode(self, batch):
                return [[70000, 1] for _ in batch]

        def wide():
            return Wide()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return PLUGIN


def test_plugin_ids_land_in_a_sidecar_with_provenance(images_ds, plugin):
    spec = f"{plugin}:build"
    r = tokenize(images_ds.root, {"colour": {"kind": "tokenizer", "factory": spec,
                                             "field": "jpg", "bins": 256}},
                 executor=LocalExecutor(1))
    assert r.stats["colour"]["ok"] == 5
    side = sidecar(images_ds.root, "colour")
    for i, key in enumerate(images_ds.keys["train"]):
        ids = load_npy(side[key]["colour.npy"])
        # pixels all equal i (JPEG keeps a flat image within 1 level); 256 bins: id = mean
        assert ids.dtype.kind == "i" and ids.shape == (3,)
        assert np.abs(ids - i).max() <= 1
    prov = json.loads((Path(images_ds.root) / "colour" / "index.json").read_text())[
        "provenance"]
    assert prov["plugin"] == spec and prov["version"] == "2"
    assert prov["config"] == {"bins": 256}  # the device is passed but is not provenance
    assert prov["field"] == "jpg"


def test_plugin_float_output_is_refused_unless_allowed(images_ds, plugin):
    r = tokenize(images_ds.root, {"f": {"kind": "tokenizer", "factory": f"{plugin}:floats"}},
                 executor=LocalExecutor(1))
    assert r.stats["f"]["ok"] == 0 and r.stats["f"]["failures_by_reason"] == {"float_output": 5}
    ledger = pq.read_table(Path(images_ds.root) / "f" / "ledger.parquet").to_pylist()
    assert all("allow_float" in row["detail"] for row in ledger)
    r = tokenize(images_ds.root, {"f": {"kind": "tokenizer", "factory": f"{plugin}:floats",
                                        "allow_float": True}},
                 executor=LocalExecutor(1), overwrite=True)
    assert r.stats["f"]["ok"] == 5
    v = load_npy(sidecar(images_ds.root, "f")[images_ds.keys["train"][0]]["f.npy"])
    assert v.dtype == np.float32 and v.shape == (3,)


def test_plugin_text_field_and_declared_storage_dtype(images_ds, plugin):
    tokenize(images_ds.root, {"tb": {"kind": "tokenizer", "factory": f"{plugin}:text_bytes",
                                     "field": "txt"}}, executor=LocalExecutor(1))
    side = sidecar(images_ds.root, "tb")
    ids = load_npy(side[images_ds.keys["train"][3]]["tb.npy"])
    assert ids.dtype == np.uint8 and bytes(ids.tolist()) == b"caption 3"


def test_plugin_ids_that_do_not_fit_store_dtype_are_refused(images_ds, plugin):
    fs = build_field_set("w", {"kind": "tokenizer", "factory": f"{plugin}:wide",
                               "store_dtype": "int16"})
    with pytest.raises(DataError) as e:
        fs.compute(np.zeros((4, 4, 3), np.uint8))
    assert e.value.reason == "ids_overflow"
    ok = build_field_set("w32", {"kind": "tokenizer", "factory": f"{plugin}:wide",
                                 "store_dtype": "int32"})
    np.testing.assert_array_equal(load_npy(ok.compute(np.zeros((4, 4, 3), np.uint8))
                                           ["w32.npy"]), [70000, 1])


def test_plugin_config_errors_fail_before_work(images_ds, plugin):
    with pytest.raises(ConfigError, match="factory"):
        tokenize(images_ds.root, {"tokenizer": {}}, executor=LocalExecutor(1))
    with pytest.raises(ConfigError, match="cannot import"):
        build_field_set("tokenizer", {"factory": "no_such_module_xyz:build"})
    with pytest.raises(ConfigError, match="rejected arguments"):
        build_field_set("tokenizer", {"factory": f"{plugin}:build", "colour": 1})
    with pytest.raises(ConfigError, match="field"):
        build_field_set("tokenizer", {"factory": f"{plugin}:build", "field": "caption"})
    with pytest.raises(ConfigError, match="integer dtype"):
        build_field_set("tokenizer", {"factory": f"{plugin}:build", "store_dtype": "float32"})
    assert {"tokenizer", "vqvae"} <= set(FIELD_SETS.names())


@settings(max_examples=25, deadline=None)
@given(arr=st.lists(st.integers(-2**31, 2**31 - 1), min_size=0, max_size=20))
def test_integer_ids_round_trip_unchanged(arr):
    from mmshard.pipelines.transform.vision_fields import _as_ids

    a = np.asarray(arr, np.int64)
    out = _as_ids([a], "p:f", False, None)
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.int64


# ------------------------------------------------------------------ vq with a resize policy

@pytest.fixture(scope="module")
def vq_file(tmp_path_factory):
    from mmshard.synth import smooth_image
    from mmshard.tokenizers.patch_vq import PatchVQTokenizer

    rng = np.random.default_rng(0)
    tok = PatchVQTokenizer.fit([smooth_image(rng, 64) for _ in range(4)], patch=16, k=8,
                               seed=0)
    path = tmp_path_factory.mktemp("vq") / "vq.safetensors"
    tok.save(path)
    return str(path)


def test_vq_bounds_a_big_photo_by_default_and_takes_a_resize_policy(vq_file):
    photo = np.zeros((1600, 2560, 3), np.uint8)  # a 2560x1600 photo
    default = build_field_set("vq", {"codebook_path": vq_file})
    assert load_npy(default.compute(photo)["vq.npy"]).shape == (20, 32)  # longest 512
    assert default.provenance["resize"]["policy"] == "longest"
    assert default.provenance["resize"]["size"] == 512
    small = np.zeros((64, 48, 3), np.uint8)  # never upscaled by the default
    assert load_npy(default.compute(small)["vq.npy"]).shape == (4, 3)
    asked = build_field_set("vq", {"codebook_path": vq_file, "resize": "max_patches",
                                   "max_patches": 60})
    grid = load_npy(asked.compute(photo)["vq.npy"])
    assert grid.size <= 60 and asked.provenance["resize"]["max_patches"] == 60
    size = build_field_set("vq", {"codebook_path": vq_file, "size": 256})  # default's class
    assert load_npy(size.compute(photo)["vq.npy"]).shape == (10, 16)
    full = build_field_set("vq", {"codebook_path": vq_file, "resize": "none"})
    assert load_npy(full.compute(photo)["vq.npy"]).shape == (100, 160)  # 16,000 tokens
    with pytest.raises(ConfigError, match="allowed: .*codebook_path.*resize.*size"):
        build_field_set("vq", {"codebook_path": vq_file, "sise": 3})
    with pytest.raises(ConfigError, match="resize policy"):
        build_field_set("vq", {"codebook_path": vq_file, "resize": "bogus"})


def test_vqvae_takes_a_resize_policy(ckpt):
    fs = build_field_set("vqvae", {"path": ckpt, "resize": "pad_multiple", "size": 30})
    grid = load_npy(fs.compute(np.zeros((50, 70, 3), np.uint8))["vqvae.npy"])
    assert grid.shape == (6, 8)  # 21x30 padded to multiples of the factor 4: 24x32
    assert fs.provenance["resize"]["policy"] == "pad_multiple"
    with pytest.raises(ConfigError, match="not both"):
        build_field_set("vqvae", {"path": ckpt, "resize": "longest", "image_size": 8})


def test_tokenize_cli_takes_the_vq_resize_policy(images_ds, vq_file, capsys):
    from mmshard.cli.main import main

    root = images_ds.root
    assert main(["tokenize", root, "--fields", "vq", "--codebook", vq_file,
                 "--option", "vq.resize=fixed", "--option", "vq.size=[32,48]",
                 "--executor", "local", "--no-progress"]) == 0
    grids = {load_npy(s["vq.npy"]).shape for s in sidecar(root, "vq").values()}
    assert grids == {(2, 3)}
    index = json.loads((Path(root) / "vq" / "index.json").read_text())
    assert '"policy": "fixed"' in json.dumps(index, sort_keys=True)
    assert main(["tokenize", root, "--fields", "vq", "--codebook", vq_file, "--overwrite",
                 "--option", "vq.sise=3", "--executor", "local", "--no-progress"]) == 2
    assert "allowed" in capsys.readouterr().err
