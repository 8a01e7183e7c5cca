"""Datasets mmshard writes are read, with each reader's defaults, by WebDataset, Ray Data
and Hugging Face datasets: images, audio, video, and a mixed-modality dataset (read one
layout at a time by the readers that need one field set: see README "Reading with other
tools")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings

import pytest

from mmshard import IngestConfig, ingest, make_executor, synth
from tests.conftest import write_image, write_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _corpus(root, kinds: set[str]) -> None:
    if "image" in kinds:
        for i, lab in enumerate(("town", "animals", "town")):
            write_image(str(root / f"img{i}.jpg"), 40 + 4 * i, 32, seed=i)
            write_text(str(root / f"img{i}.txt"), f"a photo {i}")
            write_text(str(root / f"img{i}.cls"), lab)
        write_image(str(root / "logo.png"), 24, 24, seed=9, fmt="PNG")  # no caption, no label
    if "audio" in kinds:
        os.makedirs(root, exist_ok=True)
        for i in range(2):
            synth.write_audio(str(root / f"utt{i}.flac"), synth.speech_like(0.2, 8000, seed=i),
                              8000)
        write_text(str(root / "utt0.txt"), "hello")
        write_text(str(root / "utt1.txt"), "world")
    if "video" in kinds:
        os.makedirs(root, exist_ok=True)
        synth.write_video(str(root / "clip.mp4"), frames=6, fps=6, size=(32, 24))
        if shutil.which("ffmpeg"):  # MPEG-PS, stored as .vob (PIL claims .mpg for images)
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            "testsrc=size=32x24:rate=25", "-frames:v", "5",
                            str(root / "film.mpg")], check=True)


@pytest.fixture(scope="module")
def datasets_by_kind(tmp_path_factory):
    base = tmp_path_factory.mktemp("interop")
    out = {}
    for name, kinds in (("image", {"image"}), ("audio", {"audio"}), ("video", {"video"}),
                        ("mixed", {"image", "audio", "video"})):
        _corpus(base / f"src_{name}", kinds)
        ingest([str(base / f"src_{name}")], str(base / name), IngestConfig(),
               executor=make_executor("local", workers=1))
        out[name] = str(base / name)
    return out


def _layouts(folder: str) -> dict[str, list[str]]:
    with open(os.path.join(folder, "index.json")) as f:
        lay = json.load(f)["provenance"]["layouts"]
    return {k: [os.path.join(folder, u) for u in v] for k, v in lay.items()}


def _all_shards(folder: str) -> list[str]:
    return sorted(u for us in _layouts(folder).values() for u in us)


@pytest.mark.parametrize("decoder", ["pil", "torchrgb"])
def test_webdataset_reads_every_dataset_with_default_decoders(datasets_by_kind, decoder):
    import numpy as np
    import torch
    import webdataset as wds
    from PIL import Image

    for name, folder in datasets_by_kind.items():
        samples = list(wds.WebDataset(_all_shards(folder), shardshuffle=False,
                                      empty_check=False).decode(decoder))
        with open(os.path.join(folder, "stats.json")) as f:
            assert len(samples) == json.load(f)["ok"], name
        for s in samples:
            meta = s["json"]
            assert meta["key"] == s["__key__"]
            if "jpg" in s:
                img = s["jpg"]
                if decoder == "pil":
                    assert isinstance(img, Image.Image) and img.size == (meta["width"],
                                                                          meta["height"])
                else:
                    assert isinstance(img, torch.Tensor)
                    assert tuple(img.shape) == (3, meta["height"], meta["width"])
            if "cls" in s:  # an integer id; the name is in json and labels.json
                names = json.load(open(os.path.join(folder, "labels.json")))["names"]
                assert isinstance(s["cls"], int) and names[s["cls"]] == meta["label"]
            for f in ("flac", "mp4", "vob"):
                if f in s:
                    assert isinstance(s[f], bytes) and s[f]
            if "png" in s:
                assert np.asarray(s["png"]).size > 0


def test_ray_data_reads_every_layout_with_defaults(ray_cluster, datasets_by_kind):
    import numpy as np

    ray = ray_cluster
    for name, folder in datasets_by_kind.items():
        layouts = _layouts(folder)
        if len(layouts) == 1:  # one field set: the folder reads as it is
            groups = {next(iter(layouts)): [os.path.join(folder, "shards")]}
        else:
            groups = layouts
        n = 0
        for lay, paths in groups.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = ray.data.read_webdataset(paths).take_all()
            n += len(rows)
            for r in rows:
                assert set(lay.split(",")) <= set(r), (name, lay)
                if "jpg" in r:
                    assert np.asarray(r["jpg"]).shape == (r["json"]["height"],
                                                          r["json"]["width"], 3)
                if "cls" in r:
                    assert int(r["cls"]) == r["json"]["label_id"]
                if "flac" in r or "mp4" in r:
                    assert isinstance(r.get("flac", r.get("mp4")), bytes)
        with open(os.path.join(folder, "stats.json")) as f:
            assert n == json.load(f)["ok"], name


def test_huggingface_datasets_reads_every_layout(datasets_by_kind, tmp_path):
    hf = pytest.importorskip("datasets")
    from PIL import Image

    hf.disable_progress_bars()
    for name, folder in datasets_by_kind.items():
        n = 0
        for lay, paths in _layouts(folder).items():
            d = hf.load_dataset("webdataset", data_files={"train": paths}, split="train",
                                cache_dir=str(tmp_path / "hf" / name))
            n += len(d)
            fields = set(lay.split(","))
            assert fields <= set(d.features), (name, lay)
            if "jpg" in fields or "png" in fields:
                img = d[0]["jpg" if "jpg" in fields else "png"]
                assert isinstance(img, Image.Image)
            if "flac" in fields:
                assert isinstance(d.features["flac"], hf.Audio)
                raw = d.cast_column("flac", hf.Audio(decode=False))[0]["flac"]
                assert raw["bytes"][:4] == b"fLaC"
            if "mp4" in fields:
                assert isinstance(d.features["mp4"], hf.Video)
            if "cls" in fields:
                assert all(isinstance(c, int) for c in d["cls"])
        with open(os.path.join(folder, "stats.json")) as f:
            assert n == json.load(f)["ok"], name


def test_every_shard_holds_one_field_set(datasets_by_kind):
    import tarfile

    for name, folder in datasets_by_kind.items():
        for lay, paths in _layouts(folder).items():
            for p in paths:
                with tarfile.open(p) as tf:
                    by_key: dict[str, set[str]] = {}
                    for m in tf.getmembers():
                        k, _, f = m.name.partition(".")
                        by_key.setdefault(k, set()).add(f)
                assert all(",".join(sorted(v)) == lay for v in by_key.values()), (name, p)
