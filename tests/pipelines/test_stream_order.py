"""Cache-aware order: through a shard cache smaller than the data, the Loader's block
shuffle downloads every shard once per epoch (the shuffle buffer fetches them again),
with the same batches for any ``num_workers`` and exact resume."""

from __future__ import annotations

import pytest

from mmshard.errors import ConfigError
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.source import DatasetSource
from tests.pipelines.test_cluster_s3 import s3  # noqa: F401  (the moto server fixture)
from tests.pipelines.test_stream_cache import journal, upload, write_dataset


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
