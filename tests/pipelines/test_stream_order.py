"""Cache-aware order: through a shard cache smaller than the data, the Loader's block
shuffle downloads every shard once per epoch (the shuffle buffer fetches them again),
with the same batches for any ``num_workers`` and exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmshard.errors import ConfigError
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.source import DatasetSource
from tests.pipelines.test_cluster_s3 import s3  # noqa: F401  (the moto server fixture)
from tests.pipelines.test_stream_cache import ROOT, journal, upload, write_dataset


def _keys(ld: Loader, stop: int | None = None) -> list[list[str]]:
    out = []
    for b in ld:
        out.append(list(b["__key__"]))
        if stop is not None and len(out) == stop:
            break
    return out


def test_block_order_downloads_each_shard_once_per_epoch(s3, tmp_path):  # noqa: F811
    local = tmp_path / "ds"
    write_dataset(local, shards=12, per_shard=6, pad=3000)
    url = upload(s3, local, "blockorder")
    total = sum(p.stat().st_size for p in (local / "shards").iterdir())
    src = DatasetSource(root=url, split="train", storage_options=s3)
    limit = total // 2  # room for a few windows, not for the data

    def loader(cache: str, workers: int = 0, **kw) -> Loader:
        return Loader(src, batch_size=4, seed=5, num_workers=workers, cache_dir=cache,
                      cache_limit=limit, **kw)

    ld = loader(str(tmp_path / "c0"))
    assert ld.shuffle_window == 2  # a third of the limit holds 2 of these shards
    epochs, seen = [], 0
    for epoch in range(3):
        ld.set_epoch(epoch)
        epochs.append(_keys(ld))
        fetched = [u for e, u in journal(tmp_path / "c0") if e == "fetch"][seen:]
        seen += len(fetched)
        assert len(fetched) == len(set(fetched))  # no shard downloaded twice in an epoch
        if epoch == 0:
            assert len(fetched) == 12  # every shard exactly once
    assert any(e == "evict" for e, _ in journal(tmp_path / "c0"))  # the cache was too small
    assert epochs[0] != epochs[1]
    keys = sorted(k for b in epochs[0] for k in b)
    assert keys == sorted(k for b in epochs[1] for k in b) and len(keys) == 72
    # same batches with workers and from the local folder (order does not depend on the
    # cache, only the window does); the window is pinned in the state: exact resume
    ld2 = loader(str(tmp_path / "c1"), workers=2)
    assert _keys(ld2) == epochs[0]
    assert len({u for e, u in journal(tmp_path / "c1") if e == "fetch"}) == 12
    assert len([u for e, u in journal(tmp_path / "c1") if e == "fetch"]) == 12
    plain = Loader(str(local), batch_size=4, seed=5, shuffle_window=2)
    assert _keys(plain) == epochs[0]
    part = loader(str(tmp_path / "c1"), workers=2)
    head = _keys(part, stop=7)
    rest = loader(str(tmp_path / "c1"), workers=0)
    rest.load_state_dict(part.state_dict())
    assert head + _keys(rest) == epochs[0]
    other = Loader(str(local), batch_size=4, seed=5)  # local default: the shuffle buffer
    with pytest.raises(ConfigError, match="shuffle_window=2"):
        other.load_state_dict(part.state_dict())
    # the old order through the same small cache fetches shards again
    buf = loader(str(tmp_path / "c2"), shuffle_window=None)
    _keys(buf)
    assert len([u for e, u in journal(tmp_path / "c2") if e == "fetch"]) > 12


def test_loader_passes_cache_verify_and_checks_window(s3, tmp_path):  # noqa: F811
    local = tmp_path / "ds"
    write_dataset(local, shards=2, per_shard=3)
    url = upload(s3, local, "verifyopt")
    src = DatasetSource(root=url, split="train", storage_options=s3)
    ld = Loader(src, batch_size=3, seed=0, cache_dir=str(tmp_path / "c"),
                cache_verify="sha256")
    assert all(s.cache.config.verify == "sha256" for s in ld.sources)
    assert sorted(k for b in _keys(ld) for k in b) == sorted(
        f"s{n:03d}_{j:03d}" for n in range(2) for j in range(3))
    with pytest.raises(ConfigError, match="verify"):
        Loader(src, batch_size=3, seed=0, cache_dir=str(tmp_path / "c"), cache_verify="md5")
    with pytest.raises(ConfigError, match="shuffle_window"):
        Loader(str(local), batch_size=3, seed=0, shuffle_window=0)
    assert Loader(str(local), batch_size=3, seed=0).shuffle_window is None


def test_block_order_with_mixing_filter_and_ranks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, shards=6, per_shard=5)
    write_dataset(b, shards=3, per_shard=5)

    def run(rank: int, workers: int) -> list[list[str]]:
        ld = Loader([str(a), str(b)], weights=[0.6, 0.4], batch_size=3, seed=2, rank=rank,
                    world_size=2, num_workers=workers, shuffle_window=2,
                    filter=lambda row: not row["key"].endswith("_000"))
        return _keys(ld)

    per = [run(r, 0) for r in range(2)]
    assert len(per[0]) == len(per[1]) > 0  # equal batches per rank
    assert run(1, 2) == per[1]  # same batches with workers
    keys = [k for p in per for bt in p for k in bt]
    assert keys and not [k for k in keys if k.endswith("_000")]  # the filter holds


def rank_child(url: str, opts_json: str, rank: str, cache: str, limit: str, out: str) -> None:
    """A rank process (``python -c``) of a 2-rank node sharing one cache."""
    src = DatasetSource(root=url, split="train", storage_options=json.loads(opts_json))
    ld = Loader(src, batch_size=4, seed=5, rank=int(rank), world_size=2, num_workers=0,
                cache_dir=cache, cache_limit=int(limit))
    Path(out).write_text(json.dumps({"keys": _keys(ld), "window": ld.shuffle_window}))


def test_two_ranks_on_a_node_download_each_shard_once(s3, tmp_path):  # noqa: F811
    local = tmp_path / "ds"
    write_dataset(local, shards=12, per_shard=6, pad=3000)
    url = upload(s3, local, "blockranks")
    limit = sum(p.stat().st_size for p in (local / "shards").iterdir()) // 2
    cache = tmp_path / "cache"
    env = {**os.environ, "LOCAL_WORLD_SIZE": "2"}  # as torchrun sets it
    procs = []
    for r in (0, 1):
        args = (url, json.dumps(s3), str(r), str(cache), str(limit), str(tmp_path / f"r{r}"))
        call = f"from tests.pipelines.test_stream_order import rank_child; rank_child(*{args!r})"
        procs.append(subprocess.Popen([sys.executable, "-c", call], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()[-3000:]
    got = [json.loads((tmp_path / f"r{r}").read_text()) for r in (0, 1)]
    assert [g["window"] for g in got] == [1, 1]  # the node's cache is shared by 2 ranks
    want = [_keys(Loader(str(local), batch_size=4, seed=5, rank=r, world_size=2,
                         shuffle_window=1)) for r in (0, 1)]
    assert [g["keys"] for g in got] == want
    fetched = [u for e, u in journal(cache) if e == "fetch"]
    assert len(fetched) == len(set(fetched)) == 12  # every shard downloaded exactly once
    assert any(e == "evict" for e, _ in journal(cache))


def test_block_order_survives_a_world_size_change_mid_epoch(tmp_path):
    write_dataset(tmp_path / "ds", shards=6, per_shard=5)

    def loader(rank: int, world: int) -> Loader:
        return Loader(str(tmp_path / "ds"), batch_size=2, seed=4, rank=rank, world_size=world,
                      shuffle_window=2)

    first = [loader(r, 2) for r in range(2)]
    seen = [k for ld in first for k in sum(_keys(ld, stop=3), [])]
    state = first[0].state_dict()
    rest = loader(0, 1)
    rest.load_state_dict(state)  # 2 ranks -> 1 rank: the epoch continues
    seen += [k for b in _keys(rest) for k in b]
    assert sorted(set(seen)) == sorted(f"s{n:03d}_{j:03d}" for n in range(6) for j in range(5))
    assert len(seen) == 30  # nothing read twice, nothing lost
