"""Shared fixtures: one local Ray cluster per session, and small generated corpora."""

from __future__ import annotations

import os

import pytest

from mmshard import synth


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster (2 CPUs), started once for the whole session."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False,
                 _temp_dir=str(tmp_path_factory.mktemp("ray")) if len(
                     str(tmp_path_factory.getbasetemp())) < 60 else None)
    yield ray
    ray.shutdown()


def write_image(path: str, w: int = 96, h: int = 64, seed: int = 0, fmt: str = "JPEG",
                **kw) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(synth.encode_image(synth.photo_like(w, h, seed=seed), fmt=fmt, **kw))
    return path


def write_text(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


@pytest.fixture
def mixed_corpus(tmp_path):
    """A folder with captioned images in two albums, audio, a video and every bad input.

    Returns (root, expected reasons by relative stem of the broken files).
    """
    root = tmp_path / "corpus"
    for i in range(6):
        album = f"album{i % 2}"
        write_image(str(root / album / f"img{i}.jpg"), 120 + 10 * i, 80, seed=i)
        write_text(str(root / album / f"img{i}.txt"), f"caption {i}")
    write_text(str(root / "album0" / "img0.cls"), "7")
    write_text(str(root / "album0" / "img1.json"), '{"photographer": "ada"}')
    os.makedirs(root / "speech", exist_ok=True)
    synth.write_audio(str(root / "speech" / "utt.wav"), synth.speech_like(0.5, 22050), 22050)
    os.makedirs(root / "video", exist_ok=True)
    synth.write_video(str(root / "video" / "clip.mp4"), frames=20, fps=10, cuts=(10,))
    broken = synth.write_broken_files(str(root / "broken"))
    return root, {f"broken__{name.rsplit('.', 1)[0]}": reason for name, reason in broken.items()}
