"""Sample decoding: images through resize policies, audio, stored mel, corrupt policy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmshard.errors import DataError
from mmshard.pipelines.stream.decode import (
    AudioDecode,
    DecodeConfig,
    FixedResize,
    ImageDecode,
    MelDecode,
    ShortestSideCrop,
    collate,
    decode_sample,
)
from mmshard.pipelines.stream.loader import Loader
from mmshard.samplers.batching import BucketBatching

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shards import flac_bytes, image_bytes, make_dataset  # noqa: E402


def test_image_resize_policies_and_dtypes():
    raw = {"__key__": "k", "__url__": "u", "png": image_bytes(77, 40, 20, "PNG")}
    fixed = decode_sample(raw, DecodeConfig(image=ImageDecode(resize=FixedResize(size=(6, 9)))))
    assert fixed["image"].shape == (3, 6, 9) and fixed["image"].dtype == torch.float32
    assert torch.allclose(fixed["image"], torch.full_like(fixed["image"], 77 / 255), atol=1e-6)
    crop = decode_sample(raw, DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=10),
                                                             dtype="uint8")))
    assert crop["image"].shape == (3, 10, 10) and crop["image"].dtype == torch.uint8
    assert int(crop["image"][0, 5, 5]) == 77
    hinted = decode_sample(raw, DecodeConfig(image=ImageDecode()), size_hint=(16, 32))
    assert hinted["image"].shape == (3, 16, 32)


def test_audio_waveform_crop_pad_and_resample():
    raw = {"__key__": "k", "__url__": "u", "flac": flac_bytes(0, sr=8000, seconds=0.05)}
    a = decode_sample(raw, DecodeConfig(audio=AudioDecode(sample_rate=8000, num_samples=1000)))
    assert a["audio"].shape == (1000,)
    assert float(a["audio"][:400].abs().max()) > 0.2 and float(a["audio"][400:].abs().max()) == 0
    r = decode_sample(raw, DecodeConfig(audio=AudioDecode(sample_rate=16000, num_samples=100)))
    assert r["audio"].shape == (100,)


def test_text_label_and_collate():
    out = [decode_sample({"__key__": str(i), "__url__": "u", "txt": f"t{i}".encode(),
                          "cls": str(i).encode()}, DecodeConfig()) for i in range(3)]
    b = collate(out)
    assert b["txt"] == ["t0", "t1", "t2"] and b["cls"].tolist() == [0, 1, 2]


def test_corrupt_image_raises_with_shard_and_key():
    raw = {"__key__": "bad", "__url__": "s.tar", "jpg": b"garbage"}
    with pytest.raises(DataError) as ei:
        decode_sample(raw, DecodeConfig(image=ImageDecode()))
    assert ei.value.reason == "corrupt_image" and ei.value.key == "bad"
    assert ei.value.shard == "s.tar"
    with pytest.raises(DataError, match="missing_field"):
        decode_sample({"__key__": "k", "__url__": "u"}, DecodeConfig(image=ImageDecode()))


def test_loader_skip_counts_and_keeps_batch_shape(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (4, 3)}, image=True,
                 corrupt=["train_00002", "train_00005"])
    cfg = DecodeConfig(image=ImageDecode(resize=FixedResize(size=(8, 8))))
    ld = Loader(str(tmp_path), batch_size=7, seed=0, decode=cfg, on_error="skip",
                shuffle=False)
    (b,) = list(ld)
    assert b["image"].shape == (7, 3, 8, 8)
    assert ld.stats["skipped"] == 2 and ld.stats["errors"] == {"corrupt_image": 2}
    assert b["__pad__"].sum() == 2
    assert "train_00002" not in b["__key__"]
    with pytest.raises(DataError, match="train_00002"):
        list(Loader(str(tmp_path), batch_size=7, seed=0, decode=cfg, shuffle=False))


def test_mel_sidecar_is_joined_by_key(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (3, 2)}, mel=True)
    ld = Loader(str(tmp_path), batch_size=5, seed=0, shuffle=False,
                decode=DecodeConfig(mel=MelDecode(frames=7)))
    (b,) = list(ld)
    assert b["mel"].shape == (5, 4, 7)
    for i, k in enumerate(b["__key__"]):
        n = int(k.split("_")[1])
        assert float(b["mel"][i, 0, 0]) == n
        assert float(b["mel"][i, 0, 6]) == (n if 6 + n % 3 > 6 else 0.0)


def test_bucket_batches_decode_to_their_bucket_size(tmp_path):
    info = make_dataset(tmp_path, shard_sizes={"train": (6, 6)}, image=True)
    bb = BucketBatching(ratios=(0.5, 1.0, 2.0), area=16 * 16, multiple=8)
    ld = Loader(str(tmp_path), batch_size=2, seed=0, batching=bb,
                decode=DecodeConfig(image=ImageDecode()))
    sizes = dict(zip(bb.ratios, bb.bucket_sizes()))
    for b in ld:
        ratios = {bb.ratios[int(bb.assign(np.array([info.size[k][0]]),
                                          np.array([info.size[k][1]]))[0])]
                  for k in b["__key__"]}
        assert len(ratios) == 1
        assert tuple(b["image"].shape[2:]) == sizes[ratios.pop()]


def test_video_frames_via_video_reader_and_frame_sampler(tmp_path):
    vm = pytest.importorskip("_video_media")
    data = vm.write_cfr(tmp_path / "c.mp4", 10, w=64, h=48).read_bytes()
    raw = {"__key__": "v", "__url__": "u", "mp4": data}
    from mmshard.pipelines.stream.decode import VideoDecode

    out = decode_sample(raw, DecodeConfig(video=VideoDecode(num_frames=3, size=(48, 64),
                                                            backend="pyav")))
    v = out["video"]
    assert v.shape == (3, 3, 48, 64) and v.dtype == torch.uint8
    got = [vm.read_index(f.permute(1, 2, 0).numpy()) for f in v]
    assert got == [0, 4, 9]
    frames = pytest.importorskip("mmshard.samplers.frames")
    sampler = frames.UniformSampler(frames.UniformConfig(num_frames=2))
    out = decode_sample(raw, DecodeConfig(video=VideoDecode(num_frames=2, size=(48, 64),
                                                            sampler=sampler, backend="pyav")))
    expect = sampler.sample(10, 25.0, key="v").indices.tolist()
    assert [vm.read_index(f.permute(1, 2, 0).numpy()) for f in out["video"]] == expect
