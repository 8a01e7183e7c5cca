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
