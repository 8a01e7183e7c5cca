"""``train_vq`` / ``mmshard train-vq``: a VQ-VAE trained from a dataset's shards, then used
by the transform job."""

from __future__ import annotations

import argparse
import io
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmshard.pipelines.transform.vision_fields  # noqa: F401  (registers the vqvae field set)
from mmshard import synth
from mmshard.cli import vq_cmd
from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError, DataError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.train.vqvae import TrainVQConfig, summary_path, train_vq
from mmshard.pipelines.transform.job import tokenize
from mmshard.tokenizers.vqvae import VQVAETokenizer, load_vqvae
from tests._shards import make_dataset

MODEL = {"code_dim": 16, "channels": [16, 32]}


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    return synth.smooth_image(rng, 32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Ingested: 24 PNG images 32x32 in 3 shards, plus one speech clip (no image)."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("vqds")
    src = tmp / "src"
    (src / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(smooth_image(rng)).save(src / "img" / f"p{i:02d}.png")
    (src / "speech").mkdir()
    synth.write_audio(str(src / "speech" / "u.wav"), synth.speech_like(0.2, 16000), 16000)
    out = tmp / "ds"
    ingest([str(src)], str(out), IngestConfig(max_samples=9, name="vq"),
           executor=LocalExecutor(1))
    return out


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vq") / "vq32.safetensors")
    summary = train_vq(str(dataset), out=out, k=32, steps=30, image_size=32, batch_size=8,
                       seed=0, device="cpu", model=MODEL).stats
    return out, summary


def test_training_lowers_the_loss_and_writes_a_summary(trained):
    out, summary = trained
    recon = [h["recon"] for h in summary["history"]]
    assert len(recon) == 30 and summary["steps"] == 30
    assert np.mean(recon[-5:]) < 0.9 * np.mean(recon[:5])
    assert {"loss", "commit", "perplexity", "used_codes", "restarts"} <= set(
        summary["history"][-1])
    # the speech clip is never planned: only the 24 images are read, none skipped
    assert summary["skipped"] == 0 and summary["usage"]["images"] == 24
    assert 1 <= summary["usage"]["used_codes"] <= 32
    with open(summary_path(out), encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert summary["config"]["k"] == 32 and summary["config"]["model"]["code_dim"] == 16


def test_checkpoint_loads_weights_only_and_tokenizes_every_image(trained, dataset):
    out, _ = trained
    model = load_vqvae(out, device="cpu")
    assert model.config.codebook_size == 32 and model.config.factor == 4
    r = tokenize(str(dataset), {"vqvae": {"path": out, "image_size": 32}},
                 executor=LocalExecutor(1))
    st_ = r.stats["vqvae"]
    assert st_["ok"] == 24 and st_["skipped"] == 1 and st_["failed"] == 0
    ds = open_dataset(str(dataset))
    tok = VQVAETokenizer(model)
    from PIL import Image

    n = 0
    for sh in ds.index.shards:
        base = {s["__key__"]: s for s in ds.iter_shard(sh)}
        for s in ds.iter_shard(sh, "vqvae"):
            ids = np.load(io.BytesIO(s["vqvae.npy"]), allow_pickle=False)
            assert ids.shape == (8, 8) and ids.dtype == np.int16
            img = np.asarray(Image.open(io.BytesIO(base[s["__key__"]]["png"])).convert("RGB"))
            np.testing.assert_array_equal(ids, tok(img))
            n += 1
    assert n == 24


def test_pickle_checkpoints_are_refused(tmp_path, dataset):
    import torch

    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(ConfigError, match="pickle"):
        load_vqvae(pt)
    with pytest.raises(ConfigError, match="pickle"):
        tokenize(str(dataset), {"vqvae": {"path": str(pt)}}, executor=LocalExecutor(1))
    with pytest.raises(ConfigError, match=".safetensors"):  # never written either
        train_vq(str(dataset), k=8, steps=1, out=str(tmp_path / "vq.pt"), image_size=32)


def test_same_seed_gives_the_same_checkpoint(dataset, tmp_path):
    from safetensors.torch import load_file

    outs = []
    for name in ("a", "b"):
        out = str(tmp_path / f"{name}.safetensors")
        train_vq(str(dataset), k=8, steps=3, out=out, image_size=16, batch_size=4, seed=5,
                 model={"code_dim": 4, "channels": [4]}, usage_images=0)
        outs.append(load_file(out))
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:
        assert np.array_equal(outs[0][k].numpy(), outs[1][k].numpy()), k


def test_bad_settings_fail_before_reading_shards(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match="multiple of"):
        train_vq(missing, k=8, steps=1, out=str(tmp_path / "x.safetensors"), image_size=30)
    with pytest.raises(ConfigError, match="set by train_vq"):
        TrainVQConfig(k=8, steps=1, model={"codebook_size": 4})
    with pytest.raises(ConfigError, match="allowed"):
        TrainVQConfig(k=8, steps=1, model={"widths": [4]})
    with pytest.raises(ConfigError, match="steps"):
        TrainVQConfig(k=8, steps=0)


def test_a_dataset_without_images_is_a_clear_error(tmp_path):
    info = make_dataset(tmp_path / "text", shard_sizes={"train": (3,)})
    with pytest.raises(DataError, match="no decodable image"):
        train_vq(info.root, k=8, steps=2, out=str(tmp_path / "t.safetensors"), image_size=16)


@settings(max_examples=20, deadline=None)
@given(num_down=st.integers(1, 4), size=st.integers(1, 300))
def test_image_size_is_accepted_exactly_when_the_grid_divides_it(num_down, size):
    ok = size % (2 ** num_down) == 0
    try:
        TrainVQConfig(k=8, steps=1, image_size=size, model={"num_down": num_down})
    except ConfigError:
        assert not ok
    else:
        assert ok


def test_cli_trains_and_prints_a_summary(dataset, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="mmshard")
    vq_cmd.add_parser(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "cli.safetensors")
    args = parser.parse_args(["train-vq", str(dataset), "--k", "16", "--steps", "4",
                              "--out", out, "--image-size", "16", "--batch-size", "4",
                              "--channels", "8", "--code-dim", "4", "--seed", "1",
                              "--no-progress"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 4 and printed["checkpoint"] == out
    assert os.path.exists(out) and os.path.exists(printed["summary"])
    assert load_vqvae(out, device="cpu").config.code_dim == 4
    help_text = parser._subparsers._group_actions[0].choices["train-vq"].format_help()
    assert "mmshard train-vq data/photos --k 1024" in help_text
