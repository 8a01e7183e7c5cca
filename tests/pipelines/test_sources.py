import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmshard.errors import ConfigError, SourceError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.ingest.sources import SourceOptions, collect_inputs
from mmshard.synth import tone, write_audio
from tests.conftest import write_image, write_text


def samples(out):
    import webdataset as wds

    from mmshard.dataset import open_dataset

    ds = open_dataset(str(out))
    urls = [ds.shard_url(s) for s in ds.index.shards]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def local():
    return LocalExecutor(1)


def test_directory_tree_groups_files_by_stem_with_sidecars(tmp_path):
    src = tmp_path / "src"
    write_image(str(src / "a" / "cat.jpg"))
    write_audio(str(src / "a" / "cat.wav"), tone(0.2, 8000), 8000)  # same sample: image+audio
    write_text(str(src / "a" / "cat.txt"), "a cat\n")
    write_text(str(src / "a" / "cat.cls"), "3")
    write_text(str(src / "a" / "cat.json"), json.dumps({"license": "cc0"}))
    write_text(str(src / "a" / "readme.md"), "ignored")
    items, ignored = collect_inputs([str(src)], SourceOptions())
    assert [i.key for i in items] == ["a__cat"]
    assert [f for f, _ in items[0].media] == ["jpg", "wav"]
    assert ignored and ignored[0].endswith("readme.md")
    ingest([str(src)], str(tmp_path / "out"), executor=local())
    s = samples(tmp_path / "out")["a__cat"]
    assert s["txt"] == b"a cat" and s["cls"] == b"3"
    doc = json.loads(s["json"])
    assert doc["modality"] == "image" and doc["modalities"] == ["audio", "image"]
    assert doc["meta"] == {"license": "cc0"} and doc["label"] == "3"
    assert doc["media"]["wav"]["sample_rate"] == 8000 and doc["media"]["jpg"]["width"] == 96
    assert len(doc["sha256"]) == 64 and doc["size"] > 0 and doc["source"]


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_manifests_with_caption_label_group_key_and_metadata(tmp_path, kind):
    media = tmp_path / "m"
    rows = []
    for i in range(4):
        write_image(str(media / f"p{i}.jpg"), seed=i)
        rows.append({"path": f"m/p{i}.jpg", "caption": f"cap {i}", "label": str(i % 2),
                     "speaker": f"s{i // 2}", "id": f"row{i}", "score": i / 10})
    path = tmp_path / f"list.{kind}"
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if kind == "tsv" else ","
        cols = list(rows[0])
        path.write_text(sep.join(cols) + "\n" + "".join(
            sep.join(str(r[c]) for c in cols) + "\n" for r in rows))
    cfg = IngestConfig(sources=SourceOptions(key_column="id", group_column="speaker"))
    ingest([str(path)], str(tmp_path / "out"), cfg, executor=local())
    got = samples(tmp_path / "out")
    assert sorted(got) == ["row0", "row1", "row2", "row3"]
    doc = json.loads(got["row3"]["json"])
    assert got["row3"]["txt"] == b"cap 3" and got["row3"]["cls"] == b"1"
    assert doc["group"] == "s1" and doc["meta"]["score"] == pytest.approx(0.3)


def test_manifest_bad_rows_become_ledger_rows(tmp_path):
    (tmp_path / "root").mkdir()
    write_image(str(tmp_path / "root" / "ok.jpg"))
    write_image(str(tmp_path / "outside.jpg"))
    (tmp_path / "root" / "list.csv").write_text(
        "path,caption\nok.jpg,fine\n../outside.jpg,escape\nmissing.jpg,gone\n/etc/passwd,abs\n")
    r = ingest([str(tmp_path / "root" / "list.csv")], str(tmp_path / "out"),
               IngestConfig(max_failure_rate=1.0), executor=local())
    ledger = {row["source"].rsplit("/", 1)[-1]: row for row in
              pq.read_table(tmp_path / "out" / "ledger.parquet").to_pylist()}
    assert ledger["ok.jpg"]["status"] == "ok"
    assert ledger["outside.jpg"]["reason"] == "unsafe_path"
    assert ledger["passwd"]["reason"] == "unsafe_path"
    assert ledger["missing.jpg"]["reason"] == "missing_file"
    assert r.stats["inputs"] == 4 == r.stats["ok"] + r.stats["failed"]


def test_symlink_escaping_root_is_unsafe(tmp_path):
    (tmp_path / "root").mkdir()
    write_image(str(tmp_path / "secret.jpg"))
    os.symlink(tmp_path / "secret.jpg", tmp_path / "root" / "link.jpg")
    (tmp_path / "root" / "l.csv").write_text("path\nlink.jpg\n")
    ingest([str(tmp_path / "root" / "l.csv")], str(tmp_path / "out"),
           IngestConfig(max_failure_rate=1.0), executor=local())
    row = pq.read_table(tmp_path / "out" / "ledger.parquet").to_pylist()[0]
    assert row["reason"] == "unsafe_path"


def test_glob_source(tmp_path):
    for i in range(3):
        write_image(str(tmp_path / "g" / f"x{i}.jpg"))
        write_image(str(tmp_path / "g" / f"x{i}.png"), fmt="PNG")
    items, _ = collect_inputs([str(tmp_path / "g" / "*.png")], SourceOptions())
    assert [i.key for i in items] == ["x0", "x1", "x2"]
    assert all(f == "png" for i in items for f, _ in i.media)


def test_http_urls_in_a_manifest(tmp_path):
    srv_root = tmp_path / "www"
    for i in range(2):
        write_image(str(srv_root / f"im{i}.jpg"), seed=i)
    handler = partial(SimpleHTTPRequestHandler, directory=str(srv_root))
    handler.log_message = lambda *a: None  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "urls.csv").write_text(
            f"url,caption\n{base}/im0.jpg,zero\n{base}/im1.jpg,one\n{base}/nope.jpg,missing\n")
        r = ingest([str(tmp_path / "urls.csv")], str(tmp_path / "out"), executor=local())
    finally:
        server.shutdown()
    got = samples(tmp_path / "out")
    assert len(got) == 2 and {s["txt"] for s in got.values()} == {b"zero", b"one"}
    assert r.stats["failed"] == 1
    assert list(r.stats["failures_by_reason"]) == ["http_404"]  # the URL downloader's reason


def test_fsspec_memory_url_source(tmp_path):
    import fsspec

    from mmshard import synth

    fs = fsspec.filesystem("memory")
    fs.pipe("/srcmem/a/b.jpg", synth.encode_image(synth.photo_like(50, 40)))
    fs.pipe("/srcmem/a/b.txt", b"in memory")
    ingest(["memory://srcmem"], str(tmp_path / "out"), executor=local())
    assert samples(tmp_path / "out")["a__b"]["txt"] == b"in memory"


def test_duplicate_keys_fail_before_any_work(tmp_path):
    write_image(str(tmp_path / "s1" / "x.jpg"))
    write_image(str(tmp_path / "s2" / "x.jpg"))
    with pytest.raises(SourceError, match="duplicate key.*--key-scheme hash"):
        ingest([str(tmp_path / "s1"), str(tmp_path / "s2")], str(tmp_path / "out"),
               executor=local())
    assert not (tmp_path / "out").exists()


def test_bad_key_column_values_and_missing_columns_are_clear_errors(tmp_path):
    write_image(str(tmp_path / "a.jpg"))
    (tmp_path / "l.csv").write_text("path,id\na.jpg,has.dot\n")
    with pytest.raises(SourceError, match="not valid keys"):
        collect_inputs([str(tmp_path / "l.csv")], SourceOptions(key_column="id"))
    with pytest.raises(SourceError, match="no key column 'nope'"):
        collect_inputs([str(tmp_path / "l.csv")], SourceOptions(key_column="nope"))
    with pytest.raises(SourceError, match="does not exist"):
        collect_inputs([str(tmp_path / "nothing-here")], SourceOptions())
    with pytest.raises(ConfigError, match="at most one"):
        SourceOptions(group_level=0, group_regex="x")


def test_group_level_and_regex(tmp_path):
    for spk in ("spk1", "spk2"):
        for u in range(2):
            write_audio(str(tmp_path / "d" / spk / f"sess{u}" / f"u{u}.wav"), tone(0.1, 8000), 8000)
    lvl, _ = collect_inputs([str(tmp_path / "d")], SourceOptions(group_level=0))
    assert {i.group for i in lvl} == {"spk1", "spk2"}
    rx, _ = collect_inputs([str(tmp_path / "d")], SourceOptions(group_regex=r"(sess\d)"))
    assert {i.group for i in rx} == {"sess0", "sess1"}
