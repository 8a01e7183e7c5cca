"""Labels: ``.cls`` holds an integer id into ``labels.json`` (names sorted, decided at plan
time over all inputs), the name is in each sample's json and the manifest, and integer
labels given by the user stay as they are."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard import IngestConfig, ingest, make_executor
from mmshard.pipelines.ingest.labels import build_vocab
from mmshard.tario import iter_tar
from tests.conftest import write_image, write_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_clip.py"


def _tree(root: Path, labels: list[str]) -> Path:
    for i, lab in enumerate(labels):
        write_image(str(root / f"img{i}.jpg"), 32 + i, 24, seed=i)
        write_text(str(root / f"img{i}.txt"), f"caption {i}")
        write_text(str(root / f"img{i}.cls"), lab + "\n")
    return root


def _samples(out: Path) -> dict[str, dict]:
    got = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with open(tar, "rb") as f:
            for s in iter_tar(f):
                got[s["__key__"]] = s
    return got


def _ingest(src, out, workers=1, **kw):
    return ingest([str(src)], str(out), IngestConfig(**kw),
                  executor=make_executor("local", workers=workers))


def test_string_labels_become_ids_into_labels_json(tmp_path):
    _tree(tmp_path / "src", ["town", "animals", "town", "sea", "animals"])
    _ingest(tmp_path / "src", tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert vocab["names"] == ["animals", "sea", "town"] and vocab["kind"] == "names"
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["provenance"]["labels"] == {"file": "labels.json", "kind": "names",
                                             "num_labels": 3}
    man = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()}
    for key, s in _samples(tmp_path / "out").items():
        meta = json.loads(s["json"])
        cls_id = int(s["cls"].decode())
        assert vocab["names"][cls_id] == meta["label"] == man[key]["label"]
        assert meta["label_id"] == cls_id == man[key]["label_id"]
    assert man["img0"]["label"] == "town" and man["img0"]["label_id"] == 2


def test_webdataset_and_loader_read_ids(tmp_path):
    import webdataset as wds

    import mmshard

    _tree(tmp_path / "src", ["town", "animals", "sea"])
    _ingest(tmp_path / "src", tmp_path / "out")
    urls = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    got = {s["__key__"]: s["cls"] for s in wds.WebDataset(urls, shardshuffle=False).decode()}
    assert got == {"img0": 2, "img1": 0, "img2": 1}
    loader = mmshard.Loader(str(tmp_path / "out"), batch_size=3, seed=0, shuffle=False,
                            label_names=True)
    batch = next(iter(loader))
    assert sorted(batch["cls"].tolist()) == [0, 1, 2]
    names = dict(zip(batch["__key__"], batch["label_name"]))
    assert names == {"img0": "town", "img1": "animals", "img2": "sea"}


def test_integer_labels_stay_as_given(tmp_path):
    _tree(tmp_path / "src", ["3", "07", "3"])
    _ingest(tmp_path / "src", tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert vocab["kind"] == "integer" and vocab["names"][7] == "7" and len(vocab["names"]) == 8
    s = _samples(tmp_path / "out")
    assert [int(s[k]["cls"]) for k in ("img0", "img1", "img2")] == [3, 7, 3]
    assert json.loads(s["img1"]["json"])["label"] == "7"


def test_integers_mixed_with_names_are_all_names(tmp_path):
    _tree(tmp_path / "src", ["7", "cat", "10"])
    _ingest(tmp_path / "src", tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert vocab == {"kind": "names", "names": ["10", "7", "cat"], "num_labels": 3}
    s = _samples(tmp_path / "out")
    assert int(s["img0"]["cls"]) == 1  # the name "7" is id 1, not 7


def test_manifest_label_column_and_unlabelled_rows(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        write_image(str(src / f"{i}.jpg"), 32, 24, seed=i)
    (src / "m.csv").write_text("path,caption,label\n0.jpg,a,zebra\n1.jpg,b,\n2.jpg,c,ant\n")
    _ingest(src / "m.csv", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["names"] == ["ant",
                                                                                   "zebra"]
    s = _samples(tmp_path / "out")
    assert int(s["0"]["cls"]) == 1 and "cls" not in s["1"] and int(s["2"]["cls"]) == 0


def test_no_labels_no_labels_json(tmp_path):
    src = tmp_path / "src"
    write_image(str(src / "a.jpg"), 32, 24)
    _ingest(src, tmp_path / "out")
    assert not (tmp_path / "out" / "labels.json").exists()
    assert "labels" not in json.loads((tmp_path / "out" / "index.json").read_text())["provenance"]


def test_vocabulary_is_the_same_whatever_the_worker_count(tmp_path):
    labels = [f"class{(i * 7) % 5}" for i in range(10)]
    _tree(tmp_path / "src", labels)
    _ingest(tmp_path / "src", tmp_path / "a", workers=1, max_samples=2)
    _ingest(tmp_path / "src", tmp_path / "b", workers=2, max_samples=3)
    assert (tmp_path / "a" / "labels.json").read_bytes() == \
        (tmp_path / "b" / "labels.json").read_bytes()
    a, b = _samples(tmp_path / "a"), _samples(tmp_path / "b")
    assert {k: v["cls"] for k, v in a.items()} == {k: v["cls"] for k, v in b.items()}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=12))
def test_vocabulary_depends_only_on_the_set_of_labels(labels):
    v1 = build_vocab(set(labels))
    v2 = build_vocab(set(reversed(labels)))
    assert v1 == v2
    if v1.kind == "names":
        assert list(v1.names) == sorted(set(labels))
    else:
        assert all(v1.names[int(x)] == str(int(x)) for x in labels)


def test_train_clip_runs_on_a_labelled_dataset(tmp_path):
    spec = importlib.util.spec_from_file_location("train_clip", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _tree(tmp_path / "src", ["town", "animals", "town", "sea"])
    _ingest(tmp_path / "src", tmp_path / "out")
    res = mod.main([str(tmp_path / "out"), "--batch-size", "2", "--image-size", "16",
                    "--steps", "2", "--out", str(tmp_path / "ckpt")])
    assert res["step"] == 2


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"  \n"])
def test_unreadable_label_sidecar_is_a_ledger_row(tmp_path, bad):
    src = tmp_path / "src"
    write_image(str(src / "a.jpg"), 32, 24)
    write_image(str(src / "b.jpg"), 32, 24, seed=1)
    (src / "a.cls").write_bytes(bad)
    res = _ingest(src, tmp_path / "out")
    assert res.stats["failures_by_reason"] == {"bad_sidecar": 1} and res.stats["ok"] == 1
