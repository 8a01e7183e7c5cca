"""Caption manifests with one row per caption (COCO-style repeated paths): refused with a
message naming what works, one sample per row (``--sample-per-row``), or one sample per
medium with all its captions (``--group-captions``)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mmshard import IngestConfig, SourceOptions, ingest, make_executor
from mmshard.cli.main import main
from mmshard.dataset import open_dataset
from mmshard.errors import SourceError
from mmshard.pipelines.curate.audit import contract_problems
from mmshard.tario import iter_tar
from mmshard.verify import verify_dataset
from tests.conftest import write_image


@pytest.fixture
def coco_csv(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        write_image(str(src / "img" / f"{i}.jpg"), 32 + i, 24, seed=i)
    rows = [("img/0.jpg", "a red square", "shapes"), ("img/1.jpg", "a blue thing", "shapes"),
            ("img/0.jpg", "something red", "shapes"), ("img/2.jpg", "a cat", "animals"),
            ("img/0.jpg", "red, again", "shapes")]
    (src / "captions.csv").write_text(
        "path,caption,label\n" + "".join(f"{p},\"{c}\",{lab}\n" for p, c, lab in rows))
    return src / "captions.csv", rows


def _samples(out) -> dict[str, dict]:
    got = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with open(tar, "rb") as f:
            for s in iter_tar(f):
                got[s["__key__"]] = s
    return got


def _run(csv, out, mode, **kw):
    return ingest([str(csv)], str(out), IngestConfig(sources=SourceOptions(
        repeated_paths=mode, **kw)), executor=make_executor("local"))


def test_repeated_paths_are_refused_with_the_fixes_that_work(coco_csv, tmp_path, capsys):
    csv, _ = coco_csv
    with pytest.raises(SourceError, match="img/0.jpg \\(rows 0, 2, 4\\)") as e:
        _run(csv, tmp_path / "out", "error")
    assert "--group-captions" in str(e.value) and "--sample-per-row" in str(e.value)
    assert "--key-scheme hash" not in str(e.value)
    code = main(["ingest", str(csv), "--out", str(tmp_path / "o"), "--executor", "local",
                 "--no-progress", "--key-scheme", "hash"])
    assert code == 2 and "--group-captions" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["path", "hash"])
def test_sample_per_row_makes_one_sample_per_caption(coco_csv, tmp_path, scheme):
    csv, rows = coco_csv
    res = _run(csv, tmp_path / "out", "rows", key_scheme=scheme)
    assert res.stats["inputs"] == res.stats["ok"] == len(rows)
    got = _samples(tmp_path / "out")
    assert sorted(s["txt"].decode() for s in got.values()) == sorted(c for _, c, _ in rows)
    if scheme == "path":
        assert set(got) == {"img__0_row0", "img__1_row1", "img__0_row2", "img__2_row3",
                            "img__0_row4"}
        assert got["img__0_row2"]["jpg"] == got["img__0_row0"]["jpg"]  # bytes once per row
    assert verify_dataset(str(tmp_path / "out")) == []
    led = pq.read_table(tmp_path / "out" / "ledger.parquet").to_pylist()
    assert len({r["source"] for r in led}) == len(rows)  # one ledger row per input row
    assert contract_problems(open_dataset(str(tmp_path / "out"))) == []


def test_group_captions_makes_one_sample_per_medium(coco_csv, tmp_path):
    csv, rows = coco_csv
    res = _run(csv, tmp_path / "out", "group")
    assert res.stats["inputs"] == res.stats["ok"] == 3
    got = _samples(tmp_path / "out")
    assert set(got) == {"img__0", "img__1", "img__2"}
    zero = got["img__0"]
    assert zero["txt"] == b"a red square"
    meta = json.loads(zero["json"])["meta"]
    assert meta["captions"] == ["a red square", "something red", "red, again"]
    assert meta["rows"] == [0, 2, 4]
    assert json.loads(got["img__1"]["json"]).get("meta", {}).get("captions") is None
    man = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert sorted(r["label"] for r in man) == ["animals", "shapes", "shapes"]
    assert verify_dataset(str(tmp_path / "out")) == []


def test_cli_group_captions_flag(coco_csv, tmp_path):
    csv, _ = coco_csv
    assert main(["ingest", str(csv), "--out", str(tmp_path / "o"), "--executor", "local",
                 "--no-progress", "--group-captions"]) == 0
    assert len(_samples(tmp_path / "o")) == 3


def test_a_key_column_keeps_every_row(coco_csv, tmp_path):
    csv, rows = coco_csv
    text = csv.read_text().splitlines()
    csv.write_text("\n".join([text[0] + ",id"] + [f"{r},c{i}" for i, r in
                                                   enumerate(text[1:])]) + "\n")
    res = ingest([str(csv)], str(tmp_path / "out"), IngestConfig(sources=SourceOptions(
        key_column="id")), executor=make_executor("local"))
    assert res.stats["ok"] == len(rows)


def test_unknown_mode_is_a_config_error():
    from mmshard.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed: error, rows, group"):
        SourceOptions(repeated_paths="merge")
