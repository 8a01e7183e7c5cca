import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ShardError
from mmshard.keys import KEY_RE, MAX_KEY_LEN, hash_key, media_field, modality_of, path_key
from mmshard.tario import FIXED_MTIME, TarWriter, iter_tar


@given(st.text(min_size=0, max_size=300))
@settings(max_examples=200, deadline=None)
def test_path_key_is_always_a_valid_bounded_deterministic_key(ident):
    k = path_key(ident)
    assert KEY_RE.match(k)
    assert len(k) <= MAX_KEY_LEN
    assert path_key(ident) == k


def test_path_key_long_identities_stay_distinct():
    a, b = "d/" + "x" * 200 + "a", "d/" + "x" * 200 + "b"
    assert path_key(a) != path_key(b)


def test_hash_key_and_media_fields():
    assert KEY_RE.match(hash_key("s3://b/a.jpg"))
    assert media_field("JPEG") == "jpg" and media_field("m4v") == "mp4"
    assert media_field("txt") is None
    assert modality_of("flac") == "audio" and modality_of("webm") == "video"


samples = st.lists(
    st.tuples(st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
              st.dictionaries(st.sampled_from(["jpg", "txt", "json", "mel.npy", "cls"]),
                              st.binary(max_size=300), min_size=1, max_size=4)),
    max_size=8, unique_by=lambda s: s[0])


@given(samples)
@settings(max_examples=60, deadline=None)
def test_tar_round_trip_and_reproducible(batch):
    def write():
        buf = io.BytesIO()
        with TarWriter(buf) as w:
            for key, fields in batch:
                w.write({"__key__": key, **fields})
        return buf.getvalue()

    data = write()
    assert data == write()  # byte-identical
    back = list(iter_tar(io.BytesIO(data)))
    assert [s["__key__"] for s in back] == [k for k, _ in batch]
    for s, (_, fields) in zip(back, batch):
        assert {k: v for k, v in s.items() if not k.startswith("__")} == fields
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            assert (m.mtime, m.uid, m.gid, m.mode, m.uname) == (FIXED_MTIME, 0, 0, 0o644, "")
        names = t.getnames()
    # members of a sample are adjacent and sorted by field
    for key, fields in batch:
        mine = [n for n in names if n.split(".", 1)[0] == key]
        assert mine == [f"{key}.{f}" for f in sorted(fields)]


def test_tar_writer_rejects_bad_keys_fields_and_duplicates():
    w = TarWriter(io.BytesIO())
    with pytest.raises(ShardError, match="key"):
        w.write({"__key__": "a.b", "txt": b""})
    with pytest.raises(ShardError, match="field"):
        w.write({"__key__": "a", "TXT": b""})
    w.write({"__key__": "a", "txt": b"x"})
    with pytest.raises(ShardError, match="duplicate"):
        w.write({"__key__": "a", "txt": b"x"})


def test_iter_tar_reports_truncated_tar():
    buf = io.BytesIO()
    with TarWriter(buf) as w:
        w.write({"__key__": "a", "bin": b"x" * 5000})
    with pytest.raises(ShardError, match="truncated|corrupt|read"):
        list(iter_tar(io.BytesIO(buf.getvalue()[:2000])))


# ------------------------------------------------- member names are untrusted (C3)
def _raw_tar(names_data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in names_data:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("bad", ["../../key.txt", "/etc/key.json", "dir/key.txt", "a..b.txt",
                                 "k y.txt", "key.", ".txt", "notafield", "ké.txt"])
def test_every_reader_refuses_hostile_member_names(bad):
    from mmshard.tario import index_tar, split_member_name

    data = _raw_tar([("key.txt", b"real caption"), ("key.jpg", b"j"), (bad, b"EVIL")])
    with pytest.raises(ShardError, match="refused") as e:
        list(iter_tar(io.BytesIO(data), url="s/train-000000.tar"))
    assert "train-000000.tar" in str(e.value) and repr(bad) in str(e.value)
    with pytest.raises(ShardError, match="train-000000.*refused"):
        index_tar(io.BytesIO(data), "s/train-000000.tar")
    with pytest.raises(ShardError, match="refused"):
        split_member_name(bad)


def test_repeated_member_or_split_key_is_refused_not_silently_replaced():
    from mmshard.tario import index_tar

    twice = _raw_tar([("key.txt", b"real"), ("key.txt", b"EVIL")])
    apart = _raw_tar([("a.txt", b"1"), ("b.txt", b"2"), ("a.jpg", b"3")])
    for data, what in ((twice, "appears twice in shard"), (apart, "appears twice, apart")):
        with pytest.raises(ShardError, match=what):
            list(iter_tar(io.BytesIO(data), url="x.tar"))
        with pytest.raises(ShardError, match=what):
            index_tar(io.BytesIO(data), "x.tar")


def test_links_and_directories_in_a_tar_are_skipped_never_followed():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        link = tarfile.TarInfo("a.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
        info = tarfile.TarInfo("a.jpg")
        info.size = 1
        t.addfile(info, io.BytesIO(b"j"))
    assert [sorted(s) for s in iter_tar(io.BytesIO(buf.getvalue()))] == [
        ["__key__", "__url__", "jpg"]]


def test_tar_index_fast_scan_matches_tarfile_and_falls_back_on_pax():
    from mmshard.tario import _index_ustar, index_tar

    buf = io.BytesIO()
    with TarWriter(buf) as w:
        for i in range(5):
            w.write({"__key__": f"k{i}", "jpg": b"x" * (100 * i + 1), "txt": b"t" * i})
    buf.seek(0)
    fast = _index_ustar(buf, "mem")
    buf.seek(0)
    assert fast is not None and fast == index_tar(buf, "mem")
    assert fast[0] == [f"k{i}" for i in range(5)]
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in ("a" * 120 + ".jpg", "b.txt"):  # a long name needs a PAX header
            info = tarfile.TarInfo(name)
            info.size = 3
            t.addfile(info, io.BytesIO(b"abc"))
    pax.seek(0)
    assert _index_ustar(pax, "mem") is None
    pax.seek(0)
    assert index_tar(pax, "mem")[0] == ["a" * 120, "b"]
