"""The streamed planner (ingest/plan.py) gives exactly the shards of the in-memory one.

The reference is the in-memory path kept in the package: ``collect_inputs`` (whole-table
manifest read, ``resolve_repeated``, ``_separate_failed``, sort, duplicate check) then
``assign_label_ids`` then ``plan_shards``.  The streamed planner runs with tiny reader
batches and sort runs, so every spill, merge and repeated-path sort is exercised.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mmshard.errors import SourceError
from mmshard.media.image import ImageOptions
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, PlanOptions, ingest, plan_shards
from mmshard.pipelines.ingest.labels import assign_label_ids
from mmshard.pipelines.ingest.plan import plan_inputs
from mmshard.pipelines.ingest.sources import SourceOptions, collect_inputs
from tests.conftest import write_image, write_text
from tests.pipelines.test_ingest import read_tree

POOL = ["a.jpg", "b.jpg", "c.png", "d.wav", "sub/e.jpg", "m1.jpg", "m2.png", "",
        "https://ex.com/u1.jpg", "https://ex.com/u2.jpg?x=1", "ftp://ex.com/f.jpg"]
LABELS = [None, "", " ", "cat", "dog", "3", "007"]
_counter = itertools.count()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    for i, name in enumerate(["a.jpg", "b.jpg", "c.png", "d.wav", "sub/e.jpg"]):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (10 + 7 * i))  # sizes only: nothing is decoded at plan time
    tree = root / "tree"
    tree.mkdir()
    (tree / "a.png").write_bytes(b"y" * 5)
    (tree / "a.cls").write_text("animals")
    (tree / "z.jpg").write_bytes(b"z" * 9)
    (tree / "z.txt").write_text("a caption")
    (tree / "q.jpg").symlink_to(root / "a.jpg")  # unsafe_path: a failed tree input
    return root


def _write_manifest(root, fmt: str, rows: list[dict]) -> str:
    path = str(root / f"m{next(_counter)}.{fmt}")
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    elif fmt == "jsonl":
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    return path


def _reference(sources, config):
    items, ignored = collect_inputs(sources, config.sources)
    labels, items = assign_label_ids(items)
    return plan_shards(items, config), labels, ignored


def _streamed(sources, config, batch_rows, run_rows):
    with tempfile.TemporaryDirectory() as work:
        plan = plan_inputs(sources, config, work, batch_rows=batch_rows, run_rows=run_rows)
        return list(plan.shards()), plan.labels, plan.ignored


def _outcome(fn):
    try:
        return "ok", fn()
    except SourceError as e:
        return "error", str(e)


row = st.fixed_dictionaries({
    "path": st.one_of(st.sampled_from(POOL), st.builds("https://ex.com/p{}.jpg".format,
                                                       st.integers(0, 40))),
    "caption": st.sampled_from([None, "x", "a long caption"]),
    "label": st.sampled_from(LABELS), "grp": st.sampled_from(["g1", "g2", "g3"]),
    "score": st.one_of(st.none(), st.integers(0, 9))})


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=14), rows2=st.lists(row, max_size=6),
       fmt=st.sampled_from(["parquet", "csv", "jsonl"]),
       mode=st.sampled_from(["error", "rows", "group", "group"]),
       keys=st.sampled_from([None, None, "unique", "dups"]), with_tree=st.booleans(),
       group=st.booleans(), scheme=st.sampled_from(["path", "hash"]),
       max_samples=st.integers(1, 4), max_bytes=st.sampled_from([None, 25, 60]),
       two_splits=st.booleans(), jpg=st.booleans(),
       batch_rows=st.integers(1, 4), run_rows=st.integers(1, 5))
def test_streamed_plan_equals_in_memory_plan(pool, rows, rows2, fmt, mode, keys, with_tree,
                                             group, scheme, max_samples, max_bytes,
                                             two_splits, jpg, batch_rows, run_rows):
    if keys:
        for i, r in enumerate(rows + rows2):
            r["id"] = f"k{i}" if keys == "unique" else f"k{i % 5}"
    sources = [_write_manifest(pool, fmt, rows)]
    if rows2:
        sources.append(_write_manifest(pool, "parquet", rows2))
    if with_tree:
        sources.append(str(pool / "tree"))
    config = IngestConfig(
        sources=SourceOptions(repeated_paths=mode, key_column="id" if keys else None,
                              group_column="grp" if group else None, key_scheme=scheme,
                              label_column="label", caption_column="caption"),
        image=ImageOptions(format="jpg") if jpg else ImageOptions(),
        max_samples=max_samples, max_bytes=max_bytes,
        splits=(("train", 0.5), ("val", 0.5)) if two_splits else (("train", 1.0),))
    want = _outcome(lambda: _reference(sources, config))
    got = _outcome(lambda: _streamed(sources, config, batch_rows, run_rows))
    event(want[0] if want[0] == "ok" else want[1][-50:])
    assert got == want


def test_csv_whose_column_changes_type_is_read_whole(pool, caplog):
    # pyarrow's streaming CSV reader fixes types from the first block; read_csv does not
    rows = [{"path": f"https://ex.com/{i}.jpg", "caption": f"{i:0200d}", "tag": i}
            for i in range(8_000)]  # 1.7 MB: past the reader's first 1 MB block
    rows[-1]["tag"] = "word"
    sources = [_write_manifest(pool, "csv", rows)]
    config = IngestConfig(max_samples=5_000)
    ref, _, _ = _reference(sources, config)
    got, _, _ = _streamed(sources, config, 1000, 3_000)
    assert [s.name for s in got] == [s.name for s in ref]
    assert got[-1].items == ref[-1].items
    assert "reading it whole" in caplog.text


def _corpus(tmp_path, n=23):
    src = tmp_path / "src"
    rows = []
    for i in range(n):
        write_image(str(src / f"p{i:02d}.jpg"), 40 + i, 30, seed=i)
        rows.append({"path": f"p{i:02d}.jpg", "caption": f"c{i}",
                     "label": ["cat", "dog", ""][i % 3]})
    rows += [{"path": "gone.jpg", "caption": "x", "label": "cat"},
             {"path": "p03.jpg", "caption": "again", "label": "dog"}]
    write_text(str(src / "tree" / "t.txt"), "tree caption")
    write_image(str(src / "tree" / "t.jpg"), 20, 20, seed=99)
    pq.write_table(pa.Table.from_pylist(rows), str(src / "m.parquet"), row_group_size=4)
    return [str(src / "m.parquet"), str(src / "tree")]


CFG = IngestConfig(sources=SourceOptions(repeated_paths="group"), max_samples=4, name="t",
                   splits=(("train", 0.7), ("val", 0.3)),
                   image=ImageOptions(resize="shortest", size=16, format="jpg"))


class _Crash(Exception):
    pass


class _CrashAfter(LocalExecutor):
    """A real local executor whose driver dies (an exception) after ``n`` tasks."""

    def __init__(self, n: int) -> None:
        super().__init__(1)
        self.n = n

    def imap_unordered(self, fn, args, max_in_flight=None):
        for k, res in enumerate(super().imap_unordered(fn, args, max_in_flight)):
            if k == self.n:
                raise _Crash
            yield res


def test_ingest_bytes_equal_for_any_spill_size_and_after_a_crash(tmp_path):
    sources = _corpus(tmp_path)
    ref = tmp_path / "ref"
    ingest(sources, str(ref), CFG, executor=LocalExecutor(1))  # all in memory (no spill)
    tiny = tmp_path / "tiny"
    ingest(sources, str(tiny), CFG, executor=LocalExecutor(2),
           plan=PlanOptions(batch_rows=2, run_rows=3, folder=str(tmp_path)))
    assert read_tree(tiny) == read_tree(ref)
    assert not (tiny / "_work" / "plan").exists()  # the tasks' input files are gone
    crashed = tmp_path / "crashed"
    with pytest.raises(_Crash):
        ingest(sources, str(crashed), CFG, executor=_CrashAfter(2),
               plan=PlanOptions(batch_rows=3, run_rows=2))
    assert len(os.listdir(crashed / "_work" / "plan")) > 0
    ingest(sources, str(crashed), CFG, executor=LocalExecutor(1),
           plan=PlanOptions(batch_rows=5, run_rows=4))
    assert read_tree(crashed) == read_tree(ref)


def test_plan_options_are_validated():
    from mmshard.errors import ConfigError

    with pytest.raises(ConfigError, match="run_rows"):
        PlanOptions(run_rows=0)


def test_cli_plan_dir_holds_the_spill_only_while_planning(tmp_path):
    from mmshard.cli.main import main

    sources = _corpus(tmp_path, n=5)
    spill = tmp_path / "spill" / "here"
    assert main(["ingest", *sources, "--out", str(tmp_path / "o"), "--executor", "local",
                 "--plan-dir", str(spill), "--group-captions", "--no-progress"]) == 0
    assert spill.is_dir() and not os.listdir(spill)  # its temporary folder is gone
    assert (tmp_path / "o" / "index.json").exists()
