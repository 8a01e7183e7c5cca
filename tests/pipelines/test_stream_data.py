"""Loader over real-world datasets: embedding sidecars joined by key, mixed captioned /
uncaptioned datasets (C6), label names (C5), stale sidecars (C2), damaged shards and
unsafe member names (C3), filters (C4) and the stream audit."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError, ShardError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.stream.decode import DecodeConfig, FixedResize, ImageDecode
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.source import DatasetSource
from mmshard.pipelines.transform.job import tokenize
from mmshard.samplers.batching import GroupAwareBatching
from mmshard.tario import TarWriter
from tests.conftest import write_image, write_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shards import make_dataset  # noqa: E402


def keys_of(batches):
    return [list(b["__key__"]) for b in batches]


def real_keys(batches):
    return [k for b in batches for k, p in zip(b["__key__"], b["__pad__"].tolist()) if not p]


def sidecar_vectors(root, name):
    ds = open_dataset(str(root))
    return {s["__key__"]: np.load(io.BytesIO(s[f"{name}.npy"]), allow_pickle=False)
            for sh in ds.index.shards for s in ds.iter_shard(sh, name)}


def test_embed_outputs_join_by_key_and_uncaptioned_samples_are_masked(tmp_path):
    src = tmp_path / "src"
    for i in range(5):
        write_image(str(src / f"p{i}.jpg"), 40, 32, seed=i)
        write_text(str(src / f"p{i}.txt"), f"photo {i} of a red {'car' if i % 2 else 'boat'}")
    write_image(str(src / "nocap.jpg"), 40, 32, seed=9)
    ds = tmp_path / "ds"
    ingest([str(src)], str(ds), IngestConfig(max_samples=3), executor=LocalExecutor(1))
    tokenize(str(ds), {"emb_txt": {"kind": "emb", "encoder": "hashing", "field": "txt"},
                       "emb_jpg": {"kind": "emb", "encoder": "pixels", "field": "jpg"}},
             executor=LocalExecutor(1))
    txt, img = sidecar_vectors(ds, "emb_txt"), sidecar_vectors(ds, "emb_jpg")
    assert "nocap" in img and "nocap" not in txt
    ld = Loader(str(ds), batch_size=6, seed=0, shuffle=False,
                decode=DecodeConfig(image=ImageDecode(resize=FixedResize(size=(8, 8)))))
    (batch,) = list(ld)
    keys = batch["__key__"]
    assert sorted(keys) == sorted(img)
    assert batch["emb_jpg"].shape == (6, 256) and batch["emb_txt"].shape == (6, 512)
    for i, k in enumerate(keys):
        assert torch.equal(batch["emb_jpg"][i], torch.from_numpy(img[k]))
        assert bool(batch["__has__emb_txt"][i]) == (k in txt)
        assert bool(batch["__has__txt"][i]) == (k in txt)
        if k in txt:
            assert torch.equal(batch["emb_txt"][i], torch.from_numpy(txt[k]))
        else:
            assert batch["txt"][i] is None and not batch["emb_txt"][i].any()


def test_mixing_captioned_and_uncaptioned_datasets(tmp_path):
    make_dataset(tmp_path / "a", shard_sizes={"train": (24,)}, name="a")
    b = make_dataset(tmp_path / "b", shard_sizes={"train": (8,)}, name="b")
    for url in ("shards/train-000000.tar",):  # b: the same samples without captions
        path = tmp_path / "b" / url
        samples = list(open_dataset(str(tmp_path / "b")).iter_shard(
            open_dataset(str(tmp_path / "b")).index.shards[0]))
        with TarWriter(str(path)) as w:
            for s in samples:
                w.write({"__key__": s["__key__"], "cls": s["cls"], "json": s["json"]})
    for p, fields in ((tmp_path / "a", ["cls", "json", "txt"]), (tmp_path / "b", ["cls", "json"])):
        idx = json.loads((p / "index.json").read_text())
        idx["fields"] = fields
        (p / "index.json").write_text(json.dumps(idx))
    ld = Loader([str(tmp_path / "a"), str(tmp_path / "b")], weights=[.75, .25], batch_size=4,
                seed=0)
    batches = list(ld)
    assert batches
    for x in batches:  # every batch carries the mask, even one drawn only from b
        has, src = x["__has__txt"], x["__source__"]
        assert torch.equal(has, src == 0)
        assert [t is None for t in x["txt"]] == (src == 1).tolist()
        assert "__has__cls" not in x and x["cls"].shape == (len(x["__key__"]),)
    assert any(bool((x["__source__"] == 1).any()) for x in batches)
    assert {k for x in batches for k, s in zip(x["__key__"], x["__source__"].tolist())
            if s == 1} <= set(b.keys["train"])


def test_label_names_from_labels_json(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (3, 3)})
    with pytest.raises(ConfigError, match="labels.json"):
        Loader(str(tmp_path), batch_size=2, seed=0, label_names=True)
    (tmp_path / "labels.json").write_text(json.dumps({"names": [f"n{i}" for i in range(6)]}))
    ld = Loader(str(tmp_path), batch_size=2, seed=0, label_names=True)
    for b in ld:
        assert b["cls"].dtype == torch.int64
        assert b["label_name"] == [f"n{i}" for i in b["cls"].tolist()]
    (tmp_path / "labels.json").write_text(json.dumps({"names": ["only"]}))
    with pytest.raises(Exception, match="bad_label"):
        list(Loader(str(tmp_path), batch_size=2, seed=0, label_names=True))


def _set_sidecar_base(root: Path, name: str, value: str | None) -> None:
    idx = json.loads((root / name / "index.json").read_text())
    base = {s["url"].rsplit("/", 1)[-1]: s["sha256"]
            for s in json.loads((root / "index.json").read_text())["shardlist"]}
    for s in idx["shardlist"]:
        s.pop("base_sha256", None)
        if value is not None:
            s["base_sha256"] = base[s["url"]] if value == "same" else value
    (root / name / "index.json").write_text(json.dumps(idx))


def test_stale_sidecar_is_refused_naming_field_set_and_shard(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (2, 2)}, mel=True)
    idx = json.loads((tmp_path / "index.json").read_text())
    for s in idx["shardlist"]:
        s["sha256"] = "ab" * 32
    (tmp_path / "index.json").write_text(json.dumps(idx))
    _set_sidecar_base(tmp_path, "mel", "same")
    assert len(list(Loader(str(tmp_path), batch_size=2, seed=0))) == 2
    _set_sidecar_base(tmp_path, "mel", "cd" * 32)
    with pytest.raises(ShardError, match=r"'mel'.*stale for shard shards/train-000000.tar"):
        Loader(str(tmp_path), batch_size=2, seed=0)
    _set_sidecar_base(tmp_path, "mel", None)
    with pytest.warns(UserWarning, match="no base_sha256"):
        Loader(DatasetSource(root=str(tmp_path), field_sets=("mel",)), batch_size=2, seed=0)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("world", [1, 2])
def test_truncated_shard_skip_serves_readable_samples_and_counts_per_shard(tmp_path, world):
    info = make_dataset(tmp_path, shard_sizes={"train": (6, 10, 5)}, image=True)
    bad = tmp_path / "shards/train-000001.tar"
    _truncate(bad, 0.5)
    readable = [s["__key__"] for s in _readable(bad)]
    assert 0 < len(readable) < 10
    kw = dict(batch_size=3, seed=0, shuffle=False, world_size=world,
              decode=DecodeConfig(image=ImageDecode(resize=FixedResize(size=(8, 8)))))
    runs = []
    for r in range(world):
        ld = Loader(str(tmp_path), rank=r, on_error="skip", **kw)
        runs.append((ld, list(ld)))
    assert len({len(b) for _, b in runs}) == 1 and all(len(b) == len(ld) for ld, b in runs)
    got = sorted(k for _, b in runs for k in real_keys(b))
    lost = sorted(set(info.keys["train"][6:16]) - set(readable))
    assert got == sorted(set(info.keys["train"]) - set(lost))
    skipped = sum(ld.stats["skipped"] for ld, _ in runs)
    assert skipped == len(lost)
    per_shard = {}
    for ld, _ in runs:
        for url, c in ld.stats["shards"].items():
            per_shard[url] = per_shard.get(url, 0) + c["unreadable_shard"]
    assert per_shard == {str(bad): len(lost)}
    with pytest.raises(ShardError, match=rf"{bad.name}.*damaged.*key '{lost[0]}'"):
        list(Loader(str(tmp_path), rank=0, **{**kw, "world_size": 1}))


def _readable(path: Path):
    out = []
    try:
        with tarfile.open(str(path)) as t:
            cur = None
            for m in t:
                k = m.name.split(".")[0]
                if m.offset_data + m.size > path.stat().st_size:
                    break
                if k != cur:
                    out.append({"__key__": k})
                    cur = k
    except tarfile.TarError:
        pass
    # a sample whose last member was cut short is not readable
    return out[:-1] if out and _cut_inside(path, out[-1]["__key__"]) else out


def _cut_inside(path: Path, key: str) -> bool:
    try:
        with tarfile.open(str(path)) as t:
            for m in t:
                if m.name.startswith(key + ".") and m.offset_data + m.size > path.stat().st_size:
                    return True
    except tarfile.TarError:
        return True
    return False


def test_a_wholly_unreadable_batch_is_stood_in_under_skip(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (4, 4)})
    (tmp_path / "shards/train-000001.tar").write_bytes(b"\0" * 100)
    ld = Loader(str(tmp_path), batch_size=4, seed=0, shuffle=False, on_error="skip")
    first, second = list(ld)
    assert not first["__pad__"].any() and second["__pad__"].all()
    assert ld.stats["skipped"] == 4 and ld.audit[0]["skipped"] == 4


def test_unsafe_member_names_are_refused_or_counted(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (3,)})
    path = tmp_path / "shards/train-000000.tar"
    with tarfile.open(str(path), "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in (("train_00000.txt", b"zero"), ("../../train_00000.json", b"{}"),
                           ("train_00001.txt", b"one"), ("train_00002.txt", b"two")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"train-000000.tar.*refused"):
        list(Loader(str(tmp_path), batch_size=3, seed=0, shuffle=False))
    ld = Loader(str(tmp_path), batch_size=3, seed=0, shuffle=False, on_error="skip")
    (b,) = list(ld)
    assert real_keys([b]) == ["train_00001", "train_00002"]
    assert ld.stats["errors"] == {"unsafe_member": 1}
    assert ld.stats["shards"] == {str(path): {"unsafe_member": 1}}


def _keep_list(tmp_path, keys, kind):
    if kind == "txt":
        p = tmp_path / "keep.txt"
        p.write_text("\n".join(keys) + "\n")
    else:
        p = tmp_path / "keep.parquet"
        pq.write_table(pa.table({"key": keys}), str(p))
    return str(p)


def test_filters_dedup_keep_lists_and_manifest_predicate(tmp_path):
    info = make_dataset(tmp_path / "ds", shard_sizes={"train": (5, 4, 3)})
    root = tmp_path / "ds"
    keys = info.keys["train"]
    keep = keys[::2]
    (root / "dedup").mkdir()
    pq.write_table(pa.table({"key": keep}), str(root / "dedup/keep.parquet"))
    specs = ["dedup", _keep_list(tmp_path, keep, "txt"), _keep_list(tmp_path, keep, "parquet"),
             lambda row: int(row["key"].split("_")[1]) % 2 == 0]
    for spec in specs:
        runs = [list(Loader(str(root), batch_size=2, seed=1, rank=r, world_size=2,
                            shuffle=False, filter=spec)) for r in range(2)]
        assert len(runs[0]) == len(runs[1])
        assert sorted(real_keys(runs[0]) + real_keys(runs[1])) == sorted(keep)
    other = make_dataset(tmp_path / "other", shard_sizes={"train": (2,)}).root
    # mixed with another dataset, the keep-list applies to each of them by key
    mixed = Loader([str(root), other], weights=[1, 1], batch_size=2, seed=0,
                   filter=_keep_list(tmp_path, keep, "txt"))
    assert set(real_keys(list(mixed))) <= set(keep)
    with pytest.raises(ConfigError, match="mmshard dedup"):
        Loader(other, batch_size=2, seed=0, filter="dedup")
    # a checkpoint taken under one filter does not resume under another
    state = Loader(str(root), batch_size=2, seed=0, filter="dedup").state_dict()
    with pytest.raises(ConfigError, match="filter"):
        Loader(str(root), batch_size=2, seed=0,
               filter=_keep_list(tmp_path, keys[:3], "txt")).load_state_dict(state)


@settings(max_examples=12, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4), world=st.integers(1, 3),
       k=st.integers(0, 5), seed=st.integers(0, 20), mod=st.integers(2, 3))
def test_resume_with_a_filter_is_exact(sizes, world, k, seed, mod):
    with tempfile.TemporaryDirectory() as d:
        info = make_dataset(d, shard_sizes={"train": sizes}, group_size=2)
        keep = [x for i, x in enumerate(info.keys["train"]) if i % mod]
        if not keep:
            return
        path = str(Path(d) / "keep.txt")
        Path(path).write_text("\n".join(keep))
        seen = []
        for rank in range(world):
            kw = dict(batch_size=2, seed=seed, rank=rank, world_size=world, shuffle_buffer=3,
                      batching=GroupAwareBatching(), filter=path)
            full = keys_of(Loader(d, **kw))
            first = Loader(d, **kw)
            it = iter(first)
            head = [next(it) for _ in range(min(k, len(full)))]
            second = Loader(d, **kw)
            second.load_state_dict(first.state_dict())
            rest = keys_of(second) if len(head) < len(full) else []
            assert keys_of(head) + rest == full
            seen += real_keys(Loader(d, **kw))
        assert sorted(seen) == sorted(keep)


def test_audit_counts_hash_and_single_rank_check(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (5, 4)})
    ld = Loader(str(tmp_path), batch_size=4, seed=0)
    list(ld)
    (rec,) = ld.audit
    assert rec == {**rec, "epoch": 0, "rank": 0, "batches": 3, "delivered": 9, "padded": 0,
                   "skipped": 0, "duplicates": 0, "start_batch": 0}
    again = Loader(str(tmp_path), batch_size=4, seed=0)
    list(again)
    assert again.audit[0]["order_hash"] == rec["order_hash"]
    other = Loader(str(tmp_path), batch_size=4, seed=1)
    list(other)
    assert other.audit[0]["order_hash"] != rec["order_hash"]
    check = ld.audit_check()
    assert check["ok"] and check["missing"] == 0 and check["overlap"] == 0
    # a resumed loader checks the whole epoch: batches before the resume come from the plan
    first = Loader(str(tmp_path), batch_size=4, seed=0)
    it = iter(first)
    next(it)
    resumed = Loader(str(tmp_path), batch_size=4, seed=0)
    resumed.load_state_dict(first.state_dict())
    list(resumed)
    assert resumed.audit[0]["start_batch"] == 1 and resumed.audit_check()["ok"]
    with pytest.raises(ConfigError, match="torch.distributed"):
        two = Loader(str(tmp_path), batch_size=4, seed=0, rank=0, world_size=2)
        list(two)
        two.audit_check()


def test_a_truncated_sidecar_is_a_counted_skip_not_a_silently_missing_field(tmp_path):
    make_dataset(tmp_path, shard_sizes={"train": (8,)}, mel=True)
    side = tmp_path / "mel/train-000000.tar"
    _truncate(side, 0.5)
    with pytest.raises(ShardError, match=r"sidecar shard .*train-000000.tar is damaged"):
        list(Loader(str(tmp_path), batch_size=8, seed=0, shuffle=False))
    ld = Loader(str(tmp_path), batch_size=8, seed=0, shuffle=False, on_error="skip")
    (b,) = list(ld)
    real = real_keys([b])
    assert 0 < len(real) < 8 and ld.stats["skipped"] == 8 - len(real)
    assert ld.stats["shards"] == {str(side): {"unreadable_shard": 8 - len(real)}}
    assert "__has__mel" not in b  # every served sample has its mel


def test_train_clip_example_logs_the_stream_audit(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "train_clip.py"
    spec = importlib.util.spec_from_file_location("train_clip_audit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    make_dataset(tmp_path / "ds", shard_sizes={"train": (5, 3)}, image=True)
    out = mod.main([str(tmp_path / "ds"), "--batch-size", "4", "--image-size", "16",
                    "--steps", "2", "--out", str(tmp_path / "run")])
    (rec,) = out["audit"]
    assert rec["batches"] == 2 and rec["delivered"] == 8 and rec["duplicates"] == 0
    assert f"audit epoch 0 rank 0: delivered 8 padded 0 skipped 0 duplicates 0 order " \
           f"{rec['order_hash']}" in capsys.readouterr().out
