"""Resolution policies in the Loader: packed patch sequences, per-epoch schedule, buckets."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmshard.errors import ConfigError, DataError
from mmshard.media.resize import FixedResize, Longest
from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.packing import PatchPacking
from mmshard.samplers.batching import BucketBatching
from mmshard.samplers.resolution_schedule import (
    CurriculumStage,
    MultiScaleConfig,
    MultiScaleSchedule,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shards import make_dataset  # noqa: E402

PACK = PatchPacking(patch=4, max_tokens=24)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("packds") / "ds"
    make_dataset(root, shard_sizes={"train": (6, 5)}, image=True)
    return str(root)


def _loader(ds: str, decode: DecodeConfig, **kw) -> Loader:
    return Loader(ds, batch_size=4, seed=3, decode=decode, **kw)


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
               for k in a)


def _unpatchify(tokens: torch.Tensor, rows: int, cols: int, p: int) -> torch.Tensor:
    x = tokens.reshape(rows, cols, 3, p, p).permute(2, 0, 3, 1, 4)
    return x.reshape(3, rows * p, cols * p)


def test_packed_batches_are_consistent(ds):
    loader = _loader(ds, DecodeConfig(image=ImageDecode(), packing=PACK))
    batches = list(loader)
    assert sum(len(b["__key__"]) for b in batches) == 11
    for batch in batches:
        seg, pos, mask = batch["segment_ids"], batch["positions"], batch["attention_mask"]
        s, length = seg.shape
        assert length == PACK.max_tokens and batch["patches"].shape == (s, length, 48)
        assert "image" not in batch
        assert torch.equal(mask, (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0))
        assert ((pos == -1).all(-1) == (seg == 0)).all()
        assert (batch["patches"][seg == 0] == 0).all()
        for b, (rows, cols) in enumerate(batch["grid"].tolist()):
            sq, off = int(batch["sequence"][b]), int(batch["offset"][b])
            n = rows * cols
            assert 1 <= n <= PACK.max_tokens
            where = (seg[sq] == b + 1).nonzero().flatten()
            assert where.tolist() == list(range(off, off + n))  # contiguous, one sequence
            assert int((seg == b + 1).sum()) == n
            rr, cc = np.divmod(np.arange(n), cols)
            assert pos[sq, off:off + n].tolist() == np.stack([rr, cc], 1).tolist()
            # the tokens are the image's own pixels, resized by the packing's policy
            img = _unpatchify(batch["patches"][sq, off:off + n], rows, cols, 4)
            value = int(batch["cls"][b]) % 256 / 255.0
            assert torch.allclose(img, torch.full_like(img, value), atol=2 / 255)


def test_packed_batches_are_deterministic_and_resume_exactly(ds):
    dec = DecodeConfig(image=ImageDecode(), packing=PACK)
    full = [b for e in range(2) for b in _epoch(_loader(ds, dec), e)]
    again = [b for e in range(2) for b in _epoch(_loader(ds, dec), e)]
    assert all(_same(a, b) for a, b in zip(full, again, strict=True))
    first = _loader(ds, dec)
    first.set_epoch(1)
    it = iter(first)
    head = [next(it)]
    state = first.state_dict()
    resumed = _loader(ds, dec)
    resumed.load_state_dict(state)
    tail = list(resumed)
    n0 = len(full) // 2
    assert all(_same(a, b) for a, b in zip(head + tail, full[n0:], strict=True))


def _epoch(loader: Loader, epoch: int) -> list[dict]:
    loader.set_epoch(epoch)
    return list(loader)


def test_an_oversized_policy_is_bounded_by_max_tokens():
    pk = PatchPacking(patch=16, max_tokens=64, resize=Longest(size=1024))
    out = pk.resize_image(Image.new("RGB", (2560, 1600)))
    assert (out.height // 16) * (out.width // 16) <= 64
    assert PatchPacking(patch=16, max_tokens=64).resize_image(
        Image.new("RGB", (2560, 1600))).size == (160, 96)  # Pix2Struct: 10 x 6 = 60 patches


def _schedule() -> MultiScaleSchedule:
    return MultiScaleSchedule(MultiScaleConfig(stages=(
        CurriculumStage(start_step=0, resolutions=(8,), weights=(1.0,)),
        CurriculumStage(start_step=1, resolutions=(12,), weights=(1.0,)),
        CurriculumStage(start_step=2, resolutions=(8, 16), weights=(0.5, 0.5)),
    )), seed=5)


def test_a_multiscale_schedule_drives_the_resolution_per_epoch(ds):
    sched = _schedule()
    dec = DecodeConfig(image=ImageDecode(resize=FixedResize(size=(20, 20))), resolution=sched)
    loader = _loader(ds, dec)
    for epoch in range(5):
        r = sched.resolution_at(epoch)
        shapes = {tuple(b["image"].shape[2:]) for b in _epoch(loader, epoch)}
        assert shapes == {(r, r)}
    # resume mid-epoch: the resumed loader draws the same resolution for that epoch
    loader.set_epoch(1)
    it = iter(loader)
    next(it)
    again = _loader(ds, dec)
    again.load_state_dict(loader.state_dict())
    assert {tuple(b["image"].shape[2:]) for b in again} == {(12, 12)}
    # packed: the schedule rescales the packing's policy (max patches = (r // p) ** 2)
    packed = _loader(ds, DecodeConfig(image=ImageDecode(), packing=PACK, resolution=sched))
    for epoch in (0, 1):
        r = sched.resolution_at(epoch)
        grids = torch.cat([b["grid"] for b in _epoch(packed, epoch)])
        assert int(grids.prod(1).max()) <= (r // 4) ** 2
    with pytest.raises(ConfigError, match="resolution"):
        DecodeConfig(resolution=sched)


def test_resolution_buckets_follow_the_schedule(ds):
    sched = _schedule()
    batching = BucketBatching(ratios=(0.5, 1.0, 2.0), area=16 * 16, multiple=4,
                              schedule=sched)
    loader = _loader(ds, DecodeConfig(image=ImageDecode()), batching=batching)
    for epoch in range(3):
        sizes = set(batching.bucket_sizes(epoch))
        for b in _epoch(loader, epoch):
            assert tuple(b["image"].shape[2:]) in sizes
    assert batching.bucket_sizes(1) != batching.bucket_sizes(0)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(4, 40), st.integers(4, 40)), min_size=1,
                      max_size=8),
       max_tokens=st.integers(100, 240), algorithm=st.sampled_from(["ffd", "greedy"]))
def test_pack_places_every_image_once_with_its_pixels(sizes, max_tokens, algorithm):
    pk = PatchPacking(patch=4, max_tokens=max_tokens, algorithm=algorithm)
    rng = np.random.default_rng(len(sizes))
    images = [torch.from_numpy(rng.random((3, h, w), np.float32)) for h, w in sizes]
    out = pk.pack(images)
    seg = out["segment_ids"]
    for b, im in enumerate(images):
        rows, cols = out["grid"][b].tolist()
        sq, off = int(out["sequence"][b]), int(out["offset"][b])
        got = _unpatchify(out["patches"][sq, off:off + rows * cols], rows, cols, 4)
        assert torch.equal(got, im[:, :rows * 4, :cols * 4])
        assert int((seg == b + 1).sum()) == rows * cols
    assert (seg.bool().sum(1) <= max_tokens).all()


def test_an_image_over_the_budget_is_a_clear_error():
    with pytest.raises(DataError, match="too_many_patches|seq_len"):
        PatchPacking(patch=4, max_tokens=8).pack([torch.zeros(3, 16, 16)])


def test_packed_example_image_bytes_round_trip():
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (10, 20, 30)).save(buf, "PNG")
    from mmshard.pipelines.stream.decode import decode_sample

    out = decode_sample({"__key__": "k", "__url__": "u", "png": buf.getvalue()},
                        DecodeConfig(image=ImageDecode(), packing=PACK))
    h, w = out["image"].shape[1:]
    assert (h // 4) * (w // 4) <= PACK.max_tokens and h % 4 == 0 and w % 4 == 0
