"""The mining job: exactness, positives/groups, resume, bad input, re-mining, CLI config."""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmshard.errors import ConfigError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.mine.embeddings_io import EmbeddingSource
from mmshard.pipelines.mine.faiss_index import IndexConfig
from mmshard.pipelines.mine.job import (
    MineConfig,
    PositivesConfig,
    Reminer,
    mine,
    mine_config_from_dict,
    mine_config_to_dict,
    output_paths,
    remine,
)
from mmshard.samplers.negatives import MarginConfig, MixedConfig, SemanticLevelConfig


def write_npy(tmp_path, name: str, x: np.ndarray, keys: list[str]) -> EmbeddingSource:
    np.save(tmp_path / f"{name}.npy", x)
    (tmp_path / f"{name}.keys.txt").write_text("\n".join(keys) + "\n")
    return EmbeddingSource(path=str(tmp_path / f"{name}.npy"))


def pair_data(tmp_path, n: int = 300, d: int = 16, seed: int = 0):
    """Queries and a different-'modality' corpus: corpus item i is the positive of query i."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, d)).astype(np.float32)
    c = (q + 0.7 * rng.standard_normal((n, d))).astype(np.float32)
    keys = [f"s{i:04d}" for i in range(n)]
    return (write_npy(tmp_path, "q", q, keys), write_npy(tmp_path, "c", c, keys), q, c, keys)


def read(path: str) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_exact_mode_equals_numpy_topk(tmp_path) -> None:
    qs, cs, q, c, keys = pair_data(tmp_path)
    cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "neg.parquet"), k=7,
                     chunk_size=64, index=IndexConfig(kind="flat"))
    res = mine(cfg, progress=False)
    assert res.n_mined == 300 and res.chunks_total == 5 and res.index_kind == "flat"
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    s = qn @ cn.T
    rows = read(cfg.out)
    for i, row in enumerate(rows):
        assert row["query_key"] == keys[i]
        order = [j for j in np.argsort(-s[i], kind="stable") if j != i][:7]
        assert row["negative_keys"] == [keys[j] for j in order]
        np.testing.assert_allclose(row["negative_scores"], s[i, order], rtol=1e-4, atol=1e-5)
        assert row["positive_score"] == pytest.approx(s[i, i], abs=1e-5)
        assert row["negative_ranks"] == sorted(row["negative_ranks"])
    meta = pq.read_schema(cfg.out).metadata
    assert meta[b"mmshard.strategy"] == b"topk"
    assert json.loads(meta[b"mmshard.strategy_config"])["name"] == "topk"
    summary = json.loads(open(res.summary_path).read())
    assert summary["queries"] == {"inputs": 300, "mined": 300, "failed": 0, "short": 0,
                                  "lost": 0, "grown_pool": 0, "without_positive": 0}
    assert summary["removed"]["positive"] == sum(
        1 for i in range(300) if i in np.argsort(-s[i])[: res.summary["pool_size"]])
    assert sum(summary["histograms"]["negative"]) == 300 * 7
    assert open(res.plot_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists(output_paths(cfg.out)["parts"])


def test_pairs_and_groups_never_negatives_and_l2(tmp_path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    keys = [f"k{i}" for i in range(200)]
    src = write_npy(tmp_path, "e", x, keys)
    pairs = pa.table({"query_key": keys[:100], "positive_key": keys[100:]})
    pq.write_table(pairs, tmp_path / "pairs.parquet")
    (tmp_path / "groups.csv").write_text(
        "key,group\n" + "".join(f"{k},g{i % 10}\n" for i, k in enumerate(keys)))
    cfg = MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=10, metric="l2",
                     normalize=False, groups=str(tmp_path / "groups.csv"),
                     positives=PositivesConfig(kind="pairs", path=str(tmp_path / "pairs.parquet")))
    res = mine(cfg, progress=False)
    for i, row in enumerate(read(cfg.out)):
        negs = {int(k[1:]) for k in row["negative_keys"]}
        assert i not in negs
        assert not any(j % 10 == i % 10 for j in negs)  # same group
        if i < 100:
            assert i + 100 not in negs
            assert row["positive_score"] == pytest.approx(-((x[i] - x[i + 100]) ** 2).sum(),
                                                          rel=1e-4)
        else:
            assert row["positive_score"] is None
        assert all(s <= 0 for s in row["negative_scores"])  # minus squared distance
    assert res.summary["queries"]["without_positive"] == 100
    assert res.summary["removed"]["same_group"] > 0


def test_group_positives_table(tmp_path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 8)).astype(np.float32)
    keys = [f"k{i}" for i in range(120)]
    src = write_npy(tmp_path, "e", x, keys)
    pq.write_table(pa.table({"key": keys, "group": [str(i // 4) for i in range(120)]}),
                   tmp_path / "g.parquet")
    cfg = MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=5,
                     positives=PositivesConfig(kind="group", path=str(tmp_path / "g.parquet")))
    mine(cfg, progress=False)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i, row in enumerate(read(cfg.out)):
        assert all(int(k[1:]) // 4 != i // 4 for k in row["negative_keys"])
        mates = [j for j in range(i // 4 * 4, i // 4 * 4 + 4) if j != i]
        assert row["positive_score"] == pytest.approx(min(xn[i] @ xn[j] for j in mates),
                                                      abs=1e-5)


class FailingExecutor(LocalExecutor):
    """Runs the first ``ok`` tasks, then dies like a killed driver."""

    def __init__(self, ok: int) -> None:
        super().__init__(1)
        self.ok = ok

    def imap_unordered(self, fn, args, max_in_flight=None):
        for i, a in enumerate(args):
            if i >= self.ok:
                raise RuntimeError("killed")
            yield i, fn(a)


class CountingExecutor(LocalExecutor):
    def __init__(self) -> None:
        super().__init__(1)
        self.ran: list[int] = []

    def imap_unordered(self, fn, args, max_in_flight=None):
        for i, a in enumerate(args):
            self.ran.append(a.chunk)
            yield i, fn(a)


def test_killed_job_resumes_without_recomputing(tmp_path) -> None:
    qs, cs, *_ = pair_data(tmp_path, n=250)
    cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "neg.parquet"), k=6,
                     chunk_size=50, strategy=MixedConfig(hard_fraction=0.5), seed=5)
    mine(cfg, progress=False)
    want = open(cfg.out, "rb").read()
    for p in output_paths(cfg.out).values():
        if os.path.isfile(p) and not p.endswith(".index") and not p.endswith(".index.json"):
            os.remove(p)
    with pytest.raises(RuntimeError, match="killed"):
        mine(cfg, executor=FailingExecutor(ok=2), progress=False)
    assert not os.path.exists(cfg.out)
    parts = sorted(os.listdir(output_paths(cfg.out)["parts"]))
    assert [p for p in parts if p.startswith("chunk-")] == ["chunk-00000.parquet",
                                                             "chunk-00001.parquet"]
    ex = CountingExecutor()
    res = mine(cfg, executor=ex, progress=False)
    assert ex.ran == [2, 3, 4]
    assert (res.chunks_computed, res.chunks_skipped) == (3, 2)
    assert open(cfg.out, "rb").read() == want
    # an up-to-date output is not mined again
    again = mine(cfg, executor=CountingExecutor(), progress=False)
    assert again.chunks_computed == 0 and open(cfg.out, "rb").read() == want


def test_seeded_runs_are_deterministic(tmp_path) -> None:
    qs, cs, *_ = pair_data(tmp_path, n=150)
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / f"{name}.parquet"), k=8,
                         strategy=MixedConfig(hard_fraction=0.75), seed=seed, chunk_size=40)
        mine(cfg, progress=False)
        outs.append([r["negative_keys"] for r in read(cfg.out)])
    assert outs[0] == outs[1] and outs[0] != outs[2]
    ranks = [r["negative_ranks"] for r in read(str(tmp_path / "a.parquet"))]
    assert all(sum(x < 0 for x in r) == 2 for r in ranks)  # 25 % random, rank -1


def test_dimension_mismatch_names_both_dims(tmp_path) -> None:
    qs = write_npy(tmp_path, "q", np.ones((5, 8), np.float32), list("abcde"))
    cs = write_npy(tmp_path, "c", np.ones((5, 12), np.float32), list("abcde"))
    with pytest.raises(ConfigError, match=r"dim 8.*dim 12"):
        mine(MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "n.parquet")), progress=False)


def test_empty_corpus_is_a_clear_error(tmp_path) -> None:
    qs = write_npy(tmp_path, "q", np.ones((5, 8), np.float32), list("abcde"))
    np.save(tmp_path / "c.npy", np.zeros((0, 8), np.float32))
    (tmp_path / "c.keys.txt").write_text("")
    with pytest.raises(ConfigError, match="corpus .* is empty"):
        mine(MineConfig(queries=qs, corpus=EmbeddingSource(path=str(tmp_path / "c.npy")),
                        out=str(tmp_path / "n.parquet")), progress=False)


def test_nan_vectors_become_failure_rows(tmp_path) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 8)).astype(np.float16)  # float16 input is fine
    x[[3, 17]] = np.nan
    x[40, 2] = np.inf
    keys = [f"k{i}" for i in range(60)]
    src = write_npy(tmp_path, "e", x, keys)
    res = mine(MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=5), progress=False)
    fails = pq.read_table(res.failures_path).to_pylist()
    assert sorted(f["key"] for f in fails) == ["k17", "k3", "k40"]
    assert {f["reason"] for f in fails} == {"nan_vector"}
    rows = read(res.out)
    assert len(rows) == 57 and res.summary["failures"] == {"nan_vector": 3}
    seen = {r["query_key"] for r in rows} | {k for r in rows for k in r["negative_keys"]}
    assert not seen & {"k3", "k17", "k40"}


def test_unknown_positive_keys_error_or_ledger(tmp_path) -> None:
    x = np.random.default_rng(5).standard_normal((30, 4)).astype(np.float32)
    src = write_npy(tmp_path, "e", x, [f"k{i}" for i in range(30)])
    (tmp_path / "p.csv").write_text("query_key,positive_key\nk0,k1\nk2,zz9\nnope,k3\n")
    pos = PositivesConfig(kind="pairs", path=str(tmp_path / "p.csv"))
    cfg = MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=3, positives=pos)
    with pytest.raises(ConfigError, match=r"1 query key\(s\) not found, e.g. \['nope'\]"):
        mine(cfg, progress=False)
    (tmp_path / "p.csv").write_text("query_key,positive_key\nk0,k1\nk2,zz9\n")
    with pytest.raises(ConfigError, match="zz9"):
        mine(cfg, progress=False)
    res = mine(MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=3, positives=pos,
                          on_unknown_keys="skip"), progress=False)
    fails = pq.read_table(res.failures_path).to_pylist()
    assert [(f["key"], f["reason"]) for f in fails] == [("zz9", "unknown_positive_key")]
    assert res.n_mined == 30


def test_parquet_and_shard_inputs_and_margin(tmp_path) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    keys = [f"k{i:02d}" for i in range(40)]
    pq.write_table(pa.table({"key": keys, "vector": [list(map(float, v)) for v in x]}),
                   tmp_path / "q.parquet")
    os.makedirs(tmp_path / "emb")
    with tarfile.open(tmp_path / "emb" / "train-000000.tar", "w") as tf:
        for k, v in zip(keys, x * 2, strict=True):
            buf = io.BytesIO()
            np.save(buf, v)
            info = tarfile.TarInfo(f"{k}.emb.npy")
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
    cfg = MineConfig(queries=EmbeddingSource(path=str(tmp_path / "q.parquet")),
                     corpus=EmbeddingSource(path=str(tmp_path / "emb")),
                     out=str(tmp_path / "n.parquet"), k=4,
                     strategy=MarginConfig(relative=0.9))
    res = mine(cfg, progress=False)
    for row in read(cfg.out):
        # positive = same item scaled, cosine 1: every negative must score < 0.9
        assert row["positive_score"] == pytest.approx(1.0, abs=1e-5)
        assert all(s < 0.9 for s in row["negative_scores"])
    assert res.n_mined == 40


def test_semantic_levels_from_labels(tmp_path) -> None:
    x = np.random.default_rng(7).standard_normal((24, 4)).astype(np.float32)
    keys = [f"k{i}" for i in range(24)]
    src = write_npy(tmp_path, "e", x, keys)
    labels = [f"{['animal', 'car'][i % 2]}/{['a', 'b', 'c'][i % 3]}" for i in range(24)]
    pq.write_table(pa.table({"key": keys, "label": labels}), tmp_path / "l.parquet")
    cfg = MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=4,
                     labels=str(tmp_path / "l.parquet"),
                     strategy=SemanticLevelConfig(levels=("same_domain",)))
    mine(cfg, progress=False)
    for i, row in enumerate(read(cfg.out)):
        assert set(row["negative_levels"]) <= {1}
        for k in row["negative_keys"]:
            j = int(k[1:])
            assert labels[j].split("/")[0] == labels[i].split("/")[0] and labels[j] != labels[i]


def test_remine_swaps_the_file(tmp_path) -> None:
    qs, cs, q, c, keys = pair_data(tmp_path, n=80)
    cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "neg.parquet"), k=4)
    mine(cfg, progress=False)
    before = read(cfg.out)
    rng = np.random.default_rng(9)
    newc = write_npy(tmp_path, "c2", rng.standard_normal(c.shape).astype(np.float32), keys)
    hook = Reminer(cfg, every_steps=100, embeddings_for=lambda step: (qs, newc))
    assert hook.maybe_remine(50) is None
    res = hook.maybe_remine(100)
    assert res is not None and res.out == cfg.out
    after = read(cfg.out)
    assert [r["query_key"] for r in after] == keys and after != before
    assert not [p for p in os.listdir(tmp_path) if "remine" in p]
    assert json.loads(open(res.summary_path).read())["out"] == cfg.out
    direct = remine(cfg, corpus=cs)
    assert read(direct.out) == before


def test_config_round_trip_and_cli(tmp_path) -> None:
    from mmshard.cli.mine_cmd import add_cli_arguments, config_from_args

    cfg = MineConfig(queries=EmbeddingSource(path="q.npy"), k=5,
                     strategy=MixedConfig(hard_fraction=0.8),
                     positives=PositivesConfig(kind="pairs", path="p.csv"))
    assert mine_config_from_dict(mine_config_to_dict(cfg)) == cfg
    (tmp_path / "p.parquet").write_bytes(b"")
    pq.write_table(pa.table({"query_key": ["a"], "positive_key": ["b"]}), tmp_path / "p.parquet")
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--queries", "q.npy", "--corpus", "c.parquet", "--positives",
                              str(tmp_path / "p.parquet"), "--out", "n.parquet", "-k", "12",
                              "--strategy", "margin", "--relative-margin", "0.9",
                              "--index", "hnsw", "--memory-budget", "4GiB"])
    c2 = config_from_args(args)
    assert c2.k == 12 and c2.positives.kind == "pairs" and c2.index.kind == "hnsw"
    assert c2.strategy == MarginConfig(relative=0.9) and c2.memory_budget == 4 << 30
    assert c2.corpus.path == "c.parquet"
    with pytest.raises(ConfigError):
        MineConfig(queries=EmbeddingSource(path="q.npy"), metric="cos")


def test_failure_rate_limit_and_all_failed_queries(tmp_path) -> None:
    from mmshard.errors import JobError

    q = np.full((4, 4), np.nan, np.float32)
    qs = write_npy(tmp_path, "q", q, list("abcd"))
    cs = write_npy(tmp_path, "c", np.eye(4, dtype=np.float32), list("abcd"))
    with pytest.raises(JobError, match="max_failure_rate"):
        mine(MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "n.parquet")),
             progress=False)
    res = mine(MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "n.parquet"),
                          max_failure_rate=1.0), progress=False)
    assert res.n_mined == 0 and pq.read_table(res.out).num_rows == 0
    assert len(pq.read_table(res.failures_path)) == 4


def test_saved_index_is_reused_and_stale_one_refused(tmp_path) -> None:
    from mmshard.errors import JobError

    qs, cs, q, c, keys = pair_data(tmp_path, n=120)
    cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "neg.parquet"), k=4)
    mine(cfg, progress=False)
    index = output_paths(cfg.out)["index"]
    stamp = os.stat(index).st_mtime_ns
    mine(MineConfig(queries=qs, corpus=cs, out=cfg.out, k=6, index_reuse="require"),
         progress=False)
    assert os.stat(index).st_mtime_ns == stamp  # same corpus: reused, not rebuilt
    cs2 = write_npy(tmp_path, "c", c[::-1].copy(), keys)  # new corpus, same paths
    with pytest.raises(JobError, match="stale"):
        mine(MineConfig(queries=qs, corpus=cs2, out=cfg.out, k=6, index_reuse="require"),
             progress=False)
    mine(MineConfig(queries=qs, corpus=cs2, out=cfg.out, k=6), progress=False)  # auto rebuild
    assert os.stat(index).st_mtime_ns != stamp



@pytest.mark.parametrize("executor", [None, LocalExecutor(2)])
def test_one_shot_run_writes_no_index_and_mines_the_same(tmp_path, executor) -> None:
    qs, cs, *_ = pair_data(tmp_path, n=150)
    cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "a.parquet"), k=5,
                     chunk_size=40)
    mine(cfg, progress=False)
    one = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "b.parquet"), k=5,
                     chunk_size=40, index_reuse="never")
    res = mine(one, executor=executor, progress=False)
    assert read(one.out) == read(cfg.out) and res.n_mined == 150
    assert os.path.exists(output_paths(cfg.out)["index"])
    assert not os.path.exists(output_paths(one.out)["index"])
    assert not os.path.exists(output_paths(one.out)["parts"])  # temp copy gone too
    assert res.summary["index_path"] is None


def test_one_shot_index_for_other_processes_is_a_temporary_file(tmp_path) -> None:
    from mmshard.pipelines.mine import job
    from mmshard.pipelines.mine.faiss_index import load_index

    qs, cs, *_ = pair_data(tmp_path, n=60)
    cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "n.parquet"), k=3,
                     index_reuse="never")
    work = str(tmp_path / "w")
    os.makedirs(work)
    p = job._plan_inputs(cfg, "plan", work, *job._artifacts(cfg))
    job._ensure_index(cfg, p, in_process=False)
    assert p.local_index.startswith(work) and load_index(p.local_index,
                                                          expect=p.expect).ntotal == 60
    assert not os.path.exists(output_paths(cfg.out)["index"])

@pytest.mark.ray
def test_ray_executor_gives_the_same_file(tmp_path) -> None:
    ray = pytest.importorskip("ray")
    from mmshard.pipelines.executor import RayExecutor

    owns = not ray.is_initialized()
    if owns:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        qs, cs, *_ = pair_data(tmp_path, n=120)
        cfg = MineConfig(queries=qs, corpus=cs, out=str(tmp_path / "neg.parquet"), k=5,
                         chunk_size=40, strategy=MixedConfig(), seed=3)
        mine(cfg, progress=False)
        want = read(cfg.out)
        os.remove(cfg.out)
        res = mine(cfg, executor=RayExecutor(), progress=False)
        assert res.chunks_computed == 3 and read(cfg.out) == want
    finally:
        if owns:
            ray.shutdown()


def _grouped(tmp_path, n_other: int, d: int = 16):
    """A tight 36-member group (one near-duplicate cluster) plus ``n_other`` random items;
    the groups table marks the cluster, so its members' nearest items are all excluded."""
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(d).astype(np.float32)
    members = centre + 0.01 * rng.standard_normal((36, d)).astype(np.float32)
    others = rng.standard_normal((n_other, d)).astype(np.float32)
    x = np.concatenate([members, others])
    keys = [f"g{i:02d}" for i in range(36)] + [f"o{i:03d}" for i in range(n_other)]
    src = write_npy(tmp_path, "x", x, keys)
    groups = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"key": keys, "group": ["g"] * 36 + keys[36:]}), groups)
    return src, str(groups), keys


def test_pool_grows_until_every_query_of_a_36_member_group_has_k_negatives(tmp_path) -> None:
    src, groups, keys = _grouped(tmp_path, n_other=200)
    res = mine(MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=8, groups=groups,
                          index=IndexConfig(kind="flat")), progress=False)
    rows = {r["query_key"]: r for r in read(res.out)}
    for i in range(36):
        negs = rows[f"g{i:02d}"]["negative_keys"]
        assert len(negs) == 8 and not any(k.startswith("g") for k in negs)
    assert res.summary["queries"]["short"] == 0
    assert res.summary["queries"]["grown_pool"] >= 36  # the members needed a larger pool


def test_queries_stay_short_only_when_the_corpus_is_exhausted(tmp_path) -> None:
    src, groups, keys = _grouped(tmp_path, n_other=4)  # 40 items: a member has 4 candidates
    res = mine(MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=8, groups=groups,
                          index=IndexConfig(kind="flat")), progress=False)
    rows = {r["query_key"]: r for r in read(res.out)}
    assert all(sorted(rows[f"g{i:02d}"]["negative_keys"]) == keys[36:] for i in range(36))
    # members have 4 of 8; the 4 others have 36 + 3 candidates, enough for 8
    assert res.summary["queries"]["short"] == 36


@pytest.mark.ray
def test_ray_worker_killed_during_mine_leaves_lost_rows_and_a_completed_job(
        ray_cluster, tmp_path) -> None:
    import threading

    from mmshard.pipelines.executor import RayExecutor
    from tests.pipelines.test_resume import _kill_one_task_process

    rng = np.random.default_rng(0)
    n, d = 12_000, 128  # big enough that a chunk runs long enough to be caught
    x = rng.standard_normal((n, d)).astype(np.float32)
    src = write_npy(tmp_path, "x", x, [f"k{i:05d}" for i in range(n)])
    cfg = MineConfig(queries=src, out=str(tmp_path / "n.parquet"), k=4, chunk_size=1000,
                     index=IndexConfig(kind="flat"), max_failure_rate=1.0)
    stop, killed = threading.Event(), []
    t = threading.Thread(target=_kill_one_task_process, args=("run_chunk", stop, killed))
    t.start()
    try:
        res = mine(cfg, executor=RayExecutor(max_retries=0), progress=False)
    finally:
        stop.set()
        t.join()
    assert killed, "no chunk task process was caught running"
    q = res.summary["queries"]
    assert q["lost"] == 1000 and q["mined"] == n - 1000 and q["failed"] == 1000
    lost = [f for f in read(res.failures_path) if f["reason"] == "worker_lost"]
    assert len(lost) == 1000 and {f["role"] for f in lost} == {"query"}
    mined = {r["query_key"] for r in read(res.out)}
    assert not mined & {f["key"] for f in lost} and len(mined) == n - 1000
    # a job that lost chunks is not "up to date": a rerun mines every query
    again = mine(cfg, executor=LocalExecutor(1), progress=False)
    assert again.summary["queries"]["lost"] == 0 and again.n_mined == n
