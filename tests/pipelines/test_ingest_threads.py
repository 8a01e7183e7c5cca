"""Ingest builds a shard's inputs on several threads and still writes the same shard:
bytes, ledger and manifest do not depend on the thread count."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from mmshard.media.image import ImageOptions
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from tests.pipelines.test_ingest import read_tree


def _ingest(root, out, monkeypatch, cpus: int):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)  # the task's default thread count
    cfg = IngestConfig(max_samples=7, max_failure_rate=1.0,
                       image=ImageOptions(resize="shortest", size=48, format="jpg"))
    return ingest([str(root)], str(out), cfg, executor=LocalExecutor(workers=1))


def test_threaded_items_give_the_same_dataset_as_one_thread(mixed_corpus, tmp_path,
                                                            monkeypatch):
    root, expected = mixed_corpus
    one = _ingest(root, tmp_path / "one" / "ds", monkeypatch, cpus=1)
    four = _ingest(root, tmp_path / "four" / "ds", monkeypatch, cpus=4)
    assert one.stats["failed"] == four.stats["failed"] == len(expected)
    assert read_tree(tmp_path / "one" / "ds") == read_tree(tmp_path / "four" / "ds")
    rows = pq.read_table(tmp_path / "four" / "ds" / "ledger.parquet").to_pylist()
    failed = {r["key"]: r["reason"] for r in rows if r["status"] == "failed"}
    assert failed == expected  # every bad input: one row, its own reason, in plan order
