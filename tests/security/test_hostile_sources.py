"""Issue 12 items 1-3 and 12: hostile source trees and manifests.

Nothing outside a source root is read, nothing but regular files is opened, URL schemes
are allow-listed, and distinct inputs never share a key.  Every hostile file here is made
in tmp_path; a FIFO canary would hang the test if it were opened.
"""

import os
import socket

import pyarrow.parquet as pq
import pytest

from mmshard.errors import ConfigError, DataError
from mmshard.pipelines.executor import LocalExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.ingest.sources import SourceOptions, collect_inputs
from mmshard.storage import open_input
from tests.conftest import write_image, write_text


def run(srcs, out, **source_opts):
    cfg = IngestConfig(sources=SourceOptions(**source_opts), max_failure_rate=1.0)
    r = ingest([str(s) for s in srcs], str(out), cfg, executor=LocalExecutor(1))
    rows = pq.read_table(out / "ledger.parquet").to_pylist()
    assert r.stats["inputs"] == len(rows) == r.stats["ok"] + r.stats["failed"]
    return r, {row["key"]: row for row in rows}


def shard_bytes(out) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((out / "shards").glob("*.tar")))


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "outside" / "secret.txt"
    write_text(str(p), "TOP-SECRET-CANARY")
    return p


# ------------------------------------------------------------------ item 1: folders
def test_symlinked_sidecar_outside_root_is_unsafe_not_a_caption(tmp_path, secret):
    src = tmp_path / "src"
    write_image(str(src / "leak.jpg"))
    os.symlink(secret, src / "leak.txt")
    write_image(str(src / "fine.jpg"))
    r, rows = run([src], tmp_path / "out")
    assert rows["leak"]["status"] == "failed" and rows["leak"]["reason"] == "unsafe_path"
    assert rows["fine"]["status"] == "ok"
    assert b"TOP-SECRET" not in shard_bytes(tmp_path / "out")


def test_symlink_to_dev_zero_and_to_a_fifo_are_refused_without_reading(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("/dev/zero", src / "zero.jpg")
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)  # opening it would block forever: the test finishing proves it was not
    os.symlink(fifo, src / "pipe.jpg")
    os.mkfifo(src / "inside.wav")  # a FIFO inside the root, named like media
    write_image(str(src / "ok.jpg"))
    _, rows = run([src], tmp_path / "out")
    assert rows["zero"]["reason"] == "unsafe_path"
    assert rows["pipe"]["reason"] == "unsafe_path"
    assert rows["inside"]["reason"] == "not_a_regular_file"
    assert "FIFO" in rows["inside"]["detail"]
    assert rows["ok"]["status"] == "ok"


def test_socket_named_like_media_is_not_a_regular_file(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "x.png"))
        items, _ = collect_inputs([str(src)], SourceOptions())
    finally:
        sock.close()
    assert items[0].error[0] == "not_a_regular_file" and "socket" in items[0].error[1]


def test_follow_symlinks_allows_links_that_stay_inside_the_root(tmp_path, secret):
    src = tmp_path / "src"
    write_image(str(src / "real" / "a.jpg"))
    write_text(str(src / "real" / "a.txt"), "inside caption")
    os.symlink(src / "real" / "a.jpg", src / "alias.jpg")
    os.symlink(src / "real" / "a.txt", src / "alias.txt")
    os.symlink(secret, src / "real" / "b.txt")
    write_image(str(src / "real" / "b.jpg"))
    _, plain = run([src], tmp_path / "o1")
    assert plain["alias"]["reason"] == "unsafe_path" and "--follow-symlinks" in \
        plain["alias"]["detail"]
    _, follow = run([src], tmp_path / "o2", follow_symlinks=True)
    assert follow["alias"]["status"] == "ok" and follow["real__a"]["status"] == "ok"
    assert follow["real__b"]["reason"] == "unsafe_path"  # still outside the root
    assert b"TOP-SECRET" not in shard_bytes(tmp_path / "o2")


def test_a_directory_link_is_not_walked(tmp_path, secret):
    src = tmp_path / "src"
    write_image(str(src / "a.jpg"))
    write_image(str(secret.parent / "x.jpg"))
    os.symlink(secret.parent, src / "elsewhere")
    items, _ = collect_inputs([str(src)], SourceOptions(follow_symlinks=True))
    assert [i.key for i in items] == ["a"]


def test_glob_source_checks_the_same_rules(tmp_path, secret):
    g = tmp_path / "g"
    write_image(str(g / "a.jpg"))
    os.symlink(secret, g / "b.jpg")
    os.mkfifo(g / "c.jpg")
    items, _ = collect_inputs([str(g / "*.jpg")], SourceOptions())
    assert {i.key: i.error and i.error[0] for i in items} == {
        "a": None, "b": "unsafe_path", "c": "not_a_regular_file"}


# --------------------------------------------------------------- item 2: manifests
def test_fifo_device_and_directory_rows_in_a_manifest(tmp_path):
    root = tmp_path / "root"
    write_image(str(root / "ok.jpg"))
    os.mkfifo(root / "pipe.jpg")
    (root / "dir.jpg").mkdir()
    os.symlink("/dev/zero", root / "zero.jpg")
    (root / "m.csv").write_text("path\nok.jpg\npipe.jpg\ndir.jpg\nzero.jpg\n")
    _, rows = run([root / "m.csv"], tmp_path / "out")
    reasons = {k: r["reason"] for k, r in rows.items()}
    assert reasons == {"ok": "", "pipe": "not_a_regular_file", "dir": "not_a_regular_file",
                       "zero": "unsafe_path"}
    _, rows = run([root / "m.csv"], tmp_path / "out2", follow_symlinks=True)
    assert rows["zero"]["reason"] == "unsafe_path"  # /dev/zero is outside the root anyway


def test_fifo_swapped_in_after_planning_is_refused_at_open(tmp_path):
    """The race: planned as a regular file, a FIFO when the task opens it."""
    p = tmp_path / "late.jpg"
    write_image(str(p))
    items, _ = collect_inputs([str(tmp_path)], SourceOptions())
    os.unlink(p)
    os.mkfifo(p)
    with pytest.raises(DataError) as e:
        open_input(str(p))
    assert e.value.reason == "not_a_regular_file"
    _, rows = run([tmp_path / "late.jpg"], tmp_path / "out")  # a FIFO as the source itself
    assert rows["late"]["reason"] == "not_a_regular_file"
    assert items[0].error is None


# -------------------------------------------------------------- item 3: URL schemes
@pytest.mark.parametrize("scheme", ["local", "file", "FILE"])
def test_local_url_schemes_obey_the_root(tmp_path, secret, scheme):
    root = tmp_path / "root"
    write_image(str(root / "in.jpg"))
    (root / "m.csv").write_text(f"path\n{scheme}://{secret}\n{scheme}://{root / 'in.jpg'}\n")
    _, rows = run([root / "m.csv"], tmp_path / "out")
    assert sorted(r["reason"] for r in rows.values()) == ["", "unsafe_path"]
    assert b"TOP-SECRET" not in shard_bytes(tmp_path / "out")


def test_remote_schemes_only_from_allow_schemes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "m.csv").write_text(
        "path\nmemory://bucket/a.jpg\nftp://host/b.jpg\n"
        "simplecache::file:///etc/passwd\nzip://x.jpg::file:///tmp/a.zip\n")
    items, _ = collect_inputs([str(root / "m.csv")], SourceOptions())
    assert [i.error and i.error[0] for i in items] == ["unsafe_path"] * 4
    assert "allow-schemes" in items[0].error[1] or "allow-schemes" in items[1].error[1]
    allowed, _ = collect_inputs([str(root / "m.csv")],
                                SourceOptions(allow_schemes=("memory",)))
    assert sum(i.error is None for i in allowed) == 1
    with pytest.raises(ConfigError, match="local paths"):
        SourceOptions(allow_schemes=("file",))
    assert SourceOptions(allow_schemes="s3, HTTP").allow_schemes == ("s3", "http")


# ------------------------------------------------------------------- item 12: keys
def test_distinct_inputs_never_share_a_key_and_failed_rows_never_block(tmp_path):
    root = tmp_path / "root"
    for rel in ("v1.0/a.jpg", "v1.0/b.jpg", "猫.jpg", "狗.jpg", "a b.jpg", "a_b.jpg"):
        write_image(str(root / rel))
    rows = ["/etc/passwd", "/etc/hostname", "", "", "v1.0/a.jpg", "v1.0/b.jpg", "猫.jpg",
            "狗.jpg", "a b.jpg", "a_b.jpg", "/etc/shadow"]
    (root / "m.csv").write_text("path,caption\n" + "".join(f"{p},c{i}\n"
                                                            for i, p in enumerate(rows)))
    for scheme in ("path", "hash"):
        items, _ = collect_inputs([str(root / "m.csv")], SourceOptions(key_scheme=scheme))
        keys = [i.key for i in items]
        assert len(set(keys)) == len(keys) == 11, keys
    again, _ = collect_inputs([str(root / "m.csv")], SourceOptions())
    assert [i.key for i in again] == [i.key for i in collect_inputs(
        [str(root / "m.csv")], SourceOptions())[0]]  # stable
    _, rows = run([root / "m.csv"], tmp_path / "out")
    assert sum(r["status"] == "ok" for r in rows.values()) == 6
    assert "a_b" in rows  # a lossless slug keeps today's key


def test_folder_keys_unicode_and_dotted_dirs(tmp_path):
    src = tmp_path / "src"
    for rel in ("猫.jpg", "狗.jpg", "v1.0/a.jpg", "v1.0/b.jpg", "d/cat.jpg"):
        write_image(str(src / rel))
    items, _ = collect_inputs([str(src)], SourceOptions())
    keys = [i.key for i in items]
    assert len(set(keys)) == 5 and "d__cat" in keys


def test_cli_flags_follow_symlinks_and_allow_schemes(tmp_path, capsys):
    from mmshard.cli.main import main

    src = tmp_path / "src"
    write_image(str(src / "a.jpg"))
    os.symlink(src / "a.jpg", src / "b.jpg")
    assert main(["ingest", str(src), "--out", str(tmp_path / "o"), "--executor", "local",
                 "--no-progress", "--follow-symlinks", "--allow-schemes", "s3,https"]) == 0
    job = (tmp_path / "o" / "_work" / "job.json").read_text()
    assert '"follow_symlinks": true' in job and '"https"' in job
    assert "inputs 2 = ok 2" in capsys.readouterr().out
