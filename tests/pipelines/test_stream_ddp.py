"""Two real torch.distributed (gloo) processes step together through uneven shards, and
their stream audit, all-gathered, shows disjoint ranks that cover the epoch."""

from __future__ import annotations

import json
import socket
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmshard.pipelines.stream.loader import Loader
from mmshard.samplers.batching import GroupAwareBatching

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shards import make_dataset  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        result = {}
        for name, kw in (("eval", dict(shuffle=False)),
                         ("train", dict(batching=GroupAwareBatching(), num_workers=1)),
                         # a classic bug: every process thinks it is rank 0
                         ("same_rank", dict(shuffle=False, rank=0, world_size=2))):
            ld = Loader(root, batch_size=3, seed=11, **kw)  # rank/world from torch.distributed
            keys, steps = [], 0
            for batch in ld:
                t = torch.tensor([float(len(batch["__key__"]))])
                dist.all_reduce(t)  # hangs if one rank had fewer steps
                steps += 1
                keys += [k for k, p in zip(batch["__key__"], batch["__pad__"].tolist())
                         if not p]
            result[name] = {"steps": steps, "len": len(ld), "keys": keys,
                            "rank": ld.rank, "world": ld.world_size,
                            "audit": ld.audit[0], "check": ld.audit_check()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_gloo_ranks_finish_an_uneven_epoch_in_lockstep(tmp_path):
    info = make_dataset(tmp_path / "ds", shard_sizes={"train": (11, 1, 4, 2, 7)}, group_size=3)
    # fork: the children share the already imported torch/mmshard (spawn re-imports them
    # and takes many seconds); neither CUDA nor torch.distributed is live in the parent
    ctx = mp.get_context("fork")
    args = (2, _free_port(), str(tmp_path / "ds"), str(tmp_path))
    procs = [ctx.Process(target=_worker, args=(r, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=150)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "distributed loader epoch did not finish in 150 s (hang?)"
    assert [p.exitcode for p in procs] == [0, 0]
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["eval"]["rank"] for r in res] == [0, 1] and res[0]["eval"]["world"] == 2
    for mode in ("eval", "train", "same_rank"):
        assert res[0][mode]["steps"] == res[1][mode]["steps"] == res[0][mode]["len"]
    assert sorted(res[0]["eval"]["keys"] + res[1]["eval"]["keys"]) == \
        sorted(info.keys["train"])
    # the stream audit: all-gathered over gloo, ranks disjoint and covering the epoch
    for mode in ("eval", "train"):
        c0, c1 = res[0][mode]["check"], res[1][mode]["check"]
        assert c0 == c1 and c0["ok"] and c0["overlap"] == 0 and c0["missing"] == 0
        assert c0["unique"] == len(info.keys["train"])
        for r in range(2):
            a = res[r][mode]["audit"]
            assert a["delivered"] == len(res[r][mode]["keys"]) and a["duplicates"] == 0
            assert a["batches"] == res[r][mode]["steps"]
    bad = res[0]["same_rank"]["check"]  # the audit catches it on every rank
    assert bad == res[1]["same_rank"]["check"] and not bad["ok"]
    assert bad["overlap"] == bad["unique"] > 0 and bad["missing"] > 0
