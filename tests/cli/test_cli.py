import json
import os

import pytest

from mmshard.cli.main import main
from tests.conftest import write_image, write_text


@pytest.fixture
def src(tmp_path):
    for i in range(5):
        write_image(str(tmp_path / "src" / f"a{i % 2}" / f"p{i}.jpg"), 300, 200, seed=i)
        write_text(str(tmp_path / "src" / f"a{i % 2}" / f"p{i}.txt"), f"photo {i}")
    (tmp_path / "src" / "bad.jpg").write_bytes(b"")
    return tmp_path / "src"


@pytest.mark.parametrize("cmd", ["ingest", "inspect", "verify", "tokenize", "fit-codebook",
                                 "train-vq", "clips", "embed", "mine", "demo"])
def test_help_shows_a_real_example(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"mmshard {cmd}" in out


def test_ingest_inspect_verify(src, tmp_path, capsys):
    out = str(tmp_path / "ds")
    code = main(["ingest", str(src), "--out", out, "--executor", "local", "--no-progress",
                 "--image-resize", "shortest", "--image-size", "64", "--image-format", "webp",
                 "--split", "train=0.5,val=0.5", "--group-level", "0", "--max-samples", "2"])
    text = capsys.readouterr().out
    assert code == 0
    assert "inputs 6 = ok 5 + failed 1 + duplicate 0" in text and "empty_file 1" in text
    idx = json.loads(open(os.path.join(out, "index.json")).read())
    assert idx["fields"] == ["json", "txt", "webp"]
    assert idx["config"]["config"]["image"]["size"] == 64
    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert "empty_file" in text and "image" in text
    assert main(["verify", out]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")
    os.remove(os.path.join(out, idx["shardlist"][0]["url"]))
    assert main(["verify", out]) == 1
    assert "missing" in capsys.readouterr().out


def test_yaml_config_with_flag_override(src, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("image:\n  resize: longest\n  size: 100\n  format: png\nmax_samples: 1\n")
    out = str(tmp_path / "ds")
    assert main(["ingest", str(src), "--out", out, "--config", str(cfg), "--executor", "local",
                 "--no-progress", "--max-samples", "3"]) == 0
    idx = json.loads(open(os.path.join(out, "index.json")).read())
    assert idx["config"]["config"]["max_samples"] == 3
    assert idx["config"]["config"]["image"]["resize"] == "longest"
    assert idx["fields"] == ["json", "png", "txt"]


def test_failure_rate_gives_nonzero_exit(src, tmp_path, capsys):
    code = main(["ingest", str(src), "--out", str(tmp_path / "ds"), "--executor", "local",
                 "--no-progress", "--max-failure-rate", "0.1"])
    assert code == 3
    assert "max_failure_rate" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["ingest", "nowhere", "--out", "x", "--executor", "local"], "does not exist"),
    (["ingest", ".", "--out", "x", "--executor", "local", "--split", "train=0.5"], "sum to 1"),
    (["ingest", ".", "--out", "x", "--executor", "local", "--image-resize", "shortest"],
     "needs size"),
    (["ingest", ".", "--out", "x", "--config", "/no/such.yaml"], "cannot read --config"),
])
def test_bad_arguments_are_clear_errors_before_work(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_flag_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ingest", ".", "--out", "x", "--no-such-flag"])
    assert e.value.code == 2


@pytest.mark.ray
def test_demo_runs_end_to_end_on_ray(ray_cluster, tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--no-progress", "--images", "8"]) == 0
    text = capsys.readouterr().out
    assert "verify: ok" in text and "failed 5" in text
    for stage in ("== tokenize", "== mine", "== train"):
        assert stage in text
    assert "units codebook: k=32" in text and "losses:" in text
    assert (tmp_path / "demo" / "dataset" / "mel" / "index.json").exists()
    assert (tmp_path / "demo" / "photos" / "negatives.parquet").exists()
