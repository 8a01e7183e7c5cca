"""VQ-VAE: training reduces loss and keeps the codebook alive; determinism; safe checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mmshard import synth
from mmshard.errors import ConfigError, DataError, DependencyMissingError
from mmshard.tokenizers.base import TOKENIZERS, Tokenizer, build_tokenizer
from mmshard.tokenizers.vqvae import (
    VQVAE,
    VQVAEConfig,
    VQVAETokenizer,
    load_vqvae,
    save_vqvae,
    train_vqvae,
)

CFG = VQVAEConfig(codebook_size=64, code_dim=16, channels=(16, 32), batch_size=16,
                  restart_after=10)


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    return synth.smooth_image(rng, 32)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [smooth_image(rng) for _ in range(64)]


@pytest.fixture(scope="module")
def trained(images):
    return train_vqvae(images, CFG, steps=120, seed=0, device="cpu")


def test_training_reduces_loss_and_keeps_codes_in_use(trained, images):
    model, history = trained
    assert len(history) == 120
    first = np.mean([h["recon"] for h in history[:10]])
    last = np.mean([h["recon"] for h in history[-10:]])
    assert last < 0.7 * first
    assert {"loss", "recon", "commit", "perplexity", "used_codes", "restarts"} <= set(history[-1])
    tok = VQVAETokenizer(model)
    ids = tok.encode(images)
    assert ids.shape == (64, 8, 8) and ids.dtype == np.int16
    counts = np.bincount(ids.ravel(), minlength=64)
    assert (counts > 0).sum() >= 16  # >= 25 % of the 64 codes used
    p = counts / counts.sum()
    perplexity = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    assert perplexity > 8
    rec = tok.decode(ids).astype(np.float64)
    mse = ((rec - np.stack(images)) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 15


def test_dead_codes_are_restarted_from_batch_outputs(images):
    # a codebook much larger than the batch's vectors: most codes starve and get restarted
    cfg = VQVAEConfig(codebook_size=512, code_dim=8, channels=(8,), batch_size=2,
                      restart_after=2)
    _, hist = train_vqvae(images[:8], cfg, steps=6, seed=0, device="cpu")
    assert sum(h["restarts"] for h in hist) > 0
    cfg_off = VQVAEConfig(codebook_size=512, code_dim=8, channels=(8,), batch_size=2,
                          restart_after=0)
    _, hist = train_vqvae(images[:8], cfg_off, steps=6, seed=0, device="cpu")
    assert sum(h["restarts"] for h in hist) == 0


def test_same_seed_same_model_on_cpu(images):
    cfg = VQVAEConfig(codebook_size=16, code_dim=8, channels=(8, 16), batch_size=8)
    m1, h1 = train_vqvae(images[:16], cfg, steps=8, seed=5, device="cpu")
    m2, h2 = train_vqvae(images[:16], cfg, steps=8, seed=5, device="cpu")
    assert h1 == h2
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    m3, h3 = train_vqvae(images[:16], cfg, steps=8, seed=6, device="cpu")
    assert h3 != h1


def test_checkpoint_round_trip_gives_identical_outputs(trained, images, tmp_path):
    model, _ = trained
    path = tmp_path / "vq.safetensors"
    save_vqvae(model, path)
    loaded = load_vqvae(path, device="cpu")
    assert loaded.config == model.config
    x = torch.from_numpy(np.stack(images[:4]).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    ids = model.encode(x)
    assert torch.equal(loaded.encode(x), ids)
    assert torch.equal(loaded.decode(ids), model.decode(ids))
    # the EMA state comes back too, so training can resume from it
    assert torch.equal(loaded.codebook.cluster_size, model.codebook.cluster_size)
    tok = build_tokenizer("vqvae", {"path": str(path), "device": "cpu"})
    assert "vqvae" in TOKENIZERS and isinstance(tok, Tokenizer)
    assert tok.provenance()["config"]["codebook_size"] == 64
    assert np.array_equal(tok(images[0]), ids[0].numpy())


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch_save"])
def test_pickle_checkpoint_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = {"state": _Evil(str(marker))}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="pickle"):
        load_vqvae(path)
    assert not marker.exists()


def test_garbage_and_foreign_safetensors_are_refused(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(ConfigError, match="not a safetensors"):
        load_vqvae(bad)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not an mmshard VQ-VAE"):
        load_vqvae(tmp_path / "other.safetensors")


def test_optional_losses_need_their_modules(images):
    with pytest.raises(ConfigError, match="feature_extractor"):
        train_vqvae(images, VQVAEConfig(perceptual_weight=0.1), steps=1)
    with pytest.raises(ConfigError, match="discriminator"):
        train_vqvae(images, VQVAEConfig(adversarial_weight=0.1), steps=1)
    cfg = VQVAEConfig(codebook_size=16, code_dim=8, channels=(8,), batch_size=4,
                      perceptual_weight=0.1, adversarial_weight=0.1)
    feats = torch.nn.Conv2d(3, 4, 3, padding=1)
    disc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, stride=2), torch.nn.Flatten(),
                               torch.nn.LazyLinear(1))
    _, hist = train_vqvae(images[:8], cfg, steps=3, seed=0, device="cpu",
                          feature_extractor=feats, discriminator=disc)
    assert {"perceptual", "adv_g", "adv_d"} <= set(hist[-1])
    assert all(np.isfinite(h["loss"]) for h in hist)


def test_config_validation_and_input_errors(images):
    with pytest.raises(ConfigError, match="mse, l1"):
        VQVAEConfig(recon_loss="huber")
    with pytest.raises(ConfigError, match="decay"):
        VQVAEConfig(decay=1.0)
    model = VQVAE(VQVAEConfig(codebook_size=8, code_dim=4, channels=(8,)))
    with pytest.raises(DataError, match="multiples of 4"):
        model.encode(torch.rand(1, 3, 7, 8))
    with pytest.raises(DataError, match="ids must be in"):
        model.decode(torch.full((1, 2, 2), 8))
    mixed = [images[0], images[1][:16, :16]]
    with pytest.raises(DataError, match="one image size"):
        train_vqvae(mixed, VQVAEConfig(batch_size=2, channels=(8,)), steps=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_cuda_request_without_cuda_is_a_dependency_error(images):
    with pytest.raises(DependencyMissingError, match="no CUDA"):
        train_vqvae(images, VQVAEConfig(channels=(8,)), steps=1, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_and_encodes_on_cuda(images, tmp_path):
    cfg = VQVAEConfig(codebook_size=16, code_dim=8, channels=(8, 16), batch_size=8)
    model, hist = train_vqvae(images[:16], cfg, steps=5, seed=0, device="cuda")
    assert next(model.parameters()).is_cuda and len(hist) == 5
    save_vqvae(model, tmp_path / "m.safetensors")
    cpu = load_vqvae(tmp_path / "m.safetensors", device="cpu")
    tok_gpu, tok_cpu = VQVAETokenizer(model), VQVAETokenizer(cpu)
    # the same weights agree on most ids across devices (float rounding may flip ties)
    agree = (tok_gpu.encode(images[:4]) == tok_cpu.encode(images[:4])).mean()
    assert agree > 0.9


def test_one_shot_iterator_stops_early_with_warning(images):
    cfg = VQVAEConfig(codebook_size=8, code_dim=4, channels=(8,), batch_size=4)
    with pytest.warns(UserWarning, match="ran out after 2 of 5"):
        _, hist = train_vqvae(iter(images[:8]), cfg, steps=5, seed=0, device="cpu")
    assert len(hist) == 2


def test_config_round_trips_through_dict():
    from mmshard._registry import config_from_dict, config_to_dict

    cfg = VQVAEConfig(channels=(32, 64, 64), num_down=3, recon_loss="l1")
    assert config_from_dict(VQVAEConfig, config_to_dict(cfg)) == cfg
    assert cfg.factor == 8
    model = VQVAE(cfg)
    assert model.encode(torch.rand(2, 3, 16, 24)).shape == (2, 2, 3)
