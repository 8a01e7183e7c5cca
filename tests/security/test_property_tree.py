"""Property: any tree of random bytes, names and symlinks ingests to a sound dataset that
holds nothing from outside the root.

The tree: random bytes under media and sidecar extensions, names with unicode, spaces,
dots and newlines, FIFOs named like media, symlinks inside the root and out of it (to a
secret file, to a FIFO canary, to /dev/zero).  Opening the FIFO canary would hang the
test; reading the secret would put its canary bytes into a shard.
"""

import os
import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmshard.errors import SourceError
from mmshard.keys import media_field
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.ingest.sources import SourceOptions
from mmshard.verify import verify_dataset

CANARY = b"CANARY-7f3a9c-SECRET"
EXTS = ["jpg", "png", "wav", "ogg", "mp4", "txt", "json", "cls"]
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                min_size=1, max_size=8).filter(lambda s: not s.startswith(".") and
                                               len(s.encode()) < 100)
entry = st.tuples(
    st.sampled_from(["", "sub", "v1.0", "猫 dir"]),         # folder
    names, st.sampled_from(EXTS),                          # name, extension
    st.sampled_from(["bytes", "bytes", "fifo", "link_in", "link_secret", "link_fifo",
                     "link_zero"]),
    st.binary(max_size=48))
trees = st.lists(entry, min_size=1, max_size=10, unique_by=lambda e: (e[0], e[1], e[2]))


def build(root: Path, outside: Path, tree) -> set[tuple[str, str]]:
    """Make the tree; return the identities (folder, stem) that are inputs."""
    made: list[Path] = []
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for folder, name, ext, kind, data in tree:
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{name}.{ext}"
        if kind == "bytes":
            p.write_bytes(data)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "link_in":
            os.symlink(made[-1] if made else p.with_name("dangling"), p)
        else:
            target = {"link_secret": outside / "secret.txt",
                      "link_fifo": outside / "canary.fifo", "link_zero": Path("/dev/zero")}[kind]
            os.symlink(target, p)
        made.append(p)
        stem, dot, _ = p.name.rpartition(".")
        groups[(folder, stem if dot and stem else p.name)].add(ext)
    return {g for g, exts in groups.items() if any(media_field(e) for e in exts)}


@given(trees, st.booleans())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_tree_ingests_soundly_and_reads_nothing_outside(tree, follow):
    with tempfile.TemporaryDirectory() as td:
        base = Path(td)
        outside = base / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(CANARY)
        os.mkfifo(outside / "canary.fifo")
        root = base / "root"
        root.mkdir()
        inputs = build(root, outside, tree)
        cfg = IngestConfig(sources=SourceOptions(follow_symlinks=follow), max_failure_rate=1.0)
        if not inputs:  # no media at all is a mistake in the arguments, said before any work
            with pytest.raises(SourceError):
                ingest([str(root)], str(base / "out"), cfg, executor=LocalExecutor(1))
            return
        r = ingest([str(root)], str(base / "out"), cfg, executor=LocalExecutor(1))
        ledger = [row for row in pq.read_table(base / "out" / "ledger.parquet").to_pylist()
                  if row["status"] != "ignored"]  # files that are no input are listed too
        assert len(ledger) == len(inputs) == r.stats["inputs"]
        assert r.stats["inputs"] == r.stats["ok"] + r.stats["failed"] + r.stats["duplicate"]
        assert len({row["key"] for row in ledger}) == len(ledger)
        for shard in (base / "out" / "shards").glob("*.tar"):
            assert CANARY not in shard.read_bytes()
        assert CANARY not in (base / "out" / "manifest.parquet").read_bytes()
        assert verify_dataset(str(base / "out")) == []
