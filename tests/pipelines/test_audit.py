"""mmshard audit: planted cross-split copies are leaks, a clean dataset audits clean, an
external eval set is checked with --against, the dataset contract is re-checked, and the
exit status gates CI."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmshard.cli.main import main
from mmshard.pipelines.curate.audit import AuditConfig, audit
from tests.pipelines._curate_media import ingest_corpus, make_corpus
from tests.pipelines.test_dedup import _write_emb_sidecar


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("leaky"))
    corpus = make_corpus(root)
    return corpus, ingest_corpus(corpus, os.path.join(root, "ds"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clean"))
    return ingest_corpus(make_corpus(root, leaks=False), os.path.join(root, "ds"))


def _pairs(folder: str) -> list[dict]:
    return pq.read_table(os.path.join(folder, "audit.parquet")).to_pylist()


def test_planted_cross_split_copies_are_leaks(leaky):
    corpus, ds = leaky
    r = audit(ds, AuditConfig(methods=("exact", "phash", "group")))
    rows = _pairs(r.out)
    found = {(x["key_a"], x["key_b"]): x["method"] for x in rows}
    cross = {c: o for c, o in corpus.planted.items() if corpus.kinds[c] != "same-split"}
    # every cross-split copy is paired with its original, train side first
    assert found == {(o, c): ("exact" if corpus.kinds[c] == "exact" else "phash")
                     for c, o in cross.items()}
    assert all(x["split_a"] == "train" and x["split_b"] == "val" for x in rows)
    assert r.leaks == len(cross) and not r.passed
    assert {(p["method"], p["pairs"]) for p in r.stats["by_pair"]} == {("exact", 1), ("phash", 3)}
    assert r.stats["problems"] == []  # ingest's own contract holds


def test_clean_dataset_audits_clean_and_cli_exit_codes(clean, leaky, capsys, tmp_path):
    assert main(["audit", clean, "--executor", "local", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "passed: 0 leak(s)" in out
    assert _pairs(os.path.join(clean, "audit")) == []
    _, ds = leaky
    assert main(["audit", ds, "--executor", "local", "--no-progress",
                 "--out", str(tmp_path / "a")]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 4 leak(s)" in out and "phash" in out and "exact" in out
    assert len(_pairs(str(tmp_path / "a"))) == 4
    assert main(["audit", ds, "--executor", "local", "--no-progress", "--max-leaks", "4",
                 "--out", str(tmp_path / "b")]) == 0
    assert main(["audit", ds, "--methods", "bogus", "--executor", "local"]) == 2
    assert "allowed: exact, phash" in capsys.readouterr().err


def test_against_an_external_eval_set(clean, leaky):
    corpus, ds = leaky
    # the leaky dataset's val copies are an "eval set" next to the clean training set
    r = audit(clean, AuditConfig(methods=("exact", "phash")), against=ds,
              out=os.path.join(ds, "audit_against"))
    rows = _pairs(r.out)
    assert rows and all(x["dataset_b"] == os.path.abspath(ds) for x in rows)
    # each clean photo is found in the other dataset (identical bytes: same seeds)
    assert {x["key_a"] for x in rows if x["method"] == "exact"} == set(
        pq.read_table(os.path.join(clean, "manifest.parquet")).column("key").to_pylist())
    # and each planted copy in the eval set is paired with its original in the train set
    assert {(o, c) for c, o in corpus.planted.items()} <= {(x["key_a"], x["key_b"]) for x in rows}
    assert r.stats["problems"] == []


def test_embedding_leaks_when_an_embedding_field_set_exists(leaky, tmp_path):
    corpus, ds = leaky
    rng = np.random.default_rng(0)
    keys = pq.read_table(os.path.join(ds, "manifest.parquet")).column("key").to_pylist()
    vec = {k: rng.normal(size=24) for k in keys}
    copy, orig = next((c, o) for c, o in corpus.planted.items() if corpus.kinds[c] == "resized")
    vec[copy] = vec[orig] * 1.01
    _write_emb_sidecar(ds, vec)
    r = audit(ds, AuditConfig(methods=("embedding",)), out=str(tmp_path / "e"))
    assert [(x["key_a"], x["key_b"], x["method"]) for x in _pairs(r.out)] == \
        [(orig, copy, "embedding")]


def _rewrite(path: str, fn) -> None:
    t = pq.read_table(path).to_pydict()
    fn(t)
    pq.write_table(pa.table(t), path)


def test_contract_is_rechecked(leaky, tmp_path):
    import shutil

    _, src = leaky
    ds = str(tmp_path / "ds")
    shutil.copytree(src, ds)
    man = os.path.join(ds, "manifest.parquet")
    train_group = next(g for g, s in zip(*pq.read_table(man).select(["group", "split"])
                                         .to_pydict().values()) if s == "train")

    def move_group(t):  # one val sample claims a train group: a group leak
        i = t["split"].index("val")
        t["group"][i] = train_group

    _rewrite(man, move_group)
    _rewrite(os.path.join(ds, "ledger.parquet"), lambda t: [t[c].pop() for c in t])
    r = audit(ds, AuditConfig(methods=("group",)))
    assert [x["method"] for x in _pairs(r.out)] == ["group"]
    text = " | ".join(r.stats["problems"])
    assert "span several splits" in text and train_group in text
    assert "ledger ok keys and manifest keys differ" in text
    stats = json.loads(open(os.path.join(ds, "stats.json")).read())
    assert f"stats.json says {stats['inputs']} inputs" in text
    assert not r.passed


def test_cli_config_yaml_with_flag_override(leaky, tmp_path, capsys):
    _, ds = leaky
    cfg = tmp_path / "audit.yaml"
    cfg.write_text("methods: [exact]\nmax_leaks: 0\n")
    base = ["audit", ds, "--config", str(cfg), "--executor", "local", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 1  # the one exact copy
    assert main([*base, "--out", str(tmp_path / "b"), "--max-leaks", "1"]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["config"]["methods"] == ["exact"] and summary["config"]["max_leaks"] == 1
    cfg.write_text("methodz: [exact]\n")
    assert main(base) == 2 and "unknown AuditConfig option(s) ['methodz']" in \
        capsys.readouterr().err
