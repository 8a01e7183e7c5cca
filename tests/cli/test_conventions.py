"""The one CLI convention: exit codes, --config + flag overrides, bad values named in one
line, unknown field-set options listing the allowed ones, and the README's
caption-to-image mining run end to end through the commands."""

import json
import os

import pyarrow.parquet as pq
import pytest

from mmshard import synth
from mmshard.cli.main import build_parser, main
from tests.conftest import write_image, write_text

LOCAL = ["--executor", "local", "--no-progress"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A dataset of 6 captioned photos in 2 albums, plus a speech clip and a video."""
    root = tmp_path_factory.mktemp("conv")
    src = root / "src"
    for i in range(6):
        write_image(str(src / f"a{i % 2}" / f"p{i}.jpg"), 64, 48, seed=i)
        write_text(str(src / f"a{i % 2}" / f"p{i}.txt"), f"a photo number {i} of album {i % 2}")
    os.makedirs(src / "speech")
    os.makedirs(src / "vid")
    synth.write_audio(str(src / "speech" / "u.wav"), synth.speech_like(0.5, 16000), 16000)
    synth.write_video(str(src / "vid" / "v.mp4"), frames=12, fps=10)
    ds = root / "ds"
    assert main(["ingest", str(src), "--out", str(ds), *LOCAL]) == 0
    return ds


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_readme_caption_to_image_mining_runs_end_to_end(photos, tmp_path, capsys):
    assert main(["embed", str(photos), "--encoder", "pixels", "--field", "jpg", *LOCAL]) == 0
    cfg = tmp_path / "emb_txt.yaml"  # one 256-d space: hashing text sized like pixels
    cfg.write_text("field_sets:\n  emb_txt: {encoder: hashing, field: txt, dim: 256}\n")
    assert main(["embed", str(photos), "--config", str(cfg), *LOCAL]) == 0
    capsys.readouterr()
    out = tmp_path / "negatives.parquet"
    assert main(["mine", "--queries", str(photos / "emb_txt"), "--query-field", "emb_txt.npy",
                 "--corpus", str(photos / "emb_jpg"), "--corpus-field", "emb_jpg.npy",
                 "--positives", "same_key", "--out", str(out), "-k", "2",
                 "--strategy", "margin", "--relative-margin", "0.95", *LOCAL]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["corpus"]["indexed"] == 6 and summary["queries"]["mined"] == 6
    images = {r["key"] for r in pq.read_table(photos / "manifest.parquet").to_pylist()
              if r["modality"] == "image"}
    rows = pq.read_table(out).to_pylist()
    assert {r["query_key"] for r in rows} == images
    for r in rows:  # negatives are other images, never the caption's own
        assert set(r["negative_keys"]) <= images and r["query_key"] not in r["negative_keys"]
        assert r["positive_score"] is not None
    # an emb_* sidecar folder names its own member: the fields may be left out
    assert main(["mine", "--queries", str(photos / "emb_txt"), "--corpus",
                 str(photos / "emb_jpg"), "--out", str(tmp_path / "n2.parquet"), "-k", "2",
                 *LOCAL]) == 0
    assert json.loads(capsys.readouterr().out)["corpus"]["indexed"] == 6


def test_mine_takes_its_whole_config_from_yaml_and_flags_override(photos, tmp_path, capsys):
    main(["embed", str(photos), "--encoder", "pixels", "--field", "jpg", *LOCAL])
    capsys.readouterr()
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"queries: {{path: {photos / 'emb_jpg'}}}\nk: 4\nplot: false\n"
                   f"out: {tmp_path / 'a.parquet'}\n"
                   "strategy: {name: mixed, hard_fraction: 0.5}\n")
    assert main(["mine", "--config", str(cfg), "-k", "3", *LOCAL]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["k"] == 3 and s["strategy"]["name"] == "mixed"
    assert s["strategy"]["hard_fraction"] == 0.5
    assert not os.path.exists(tmp_path / "a.scores.png")  # plot: false from the file


@pytest.mark.parametrize("cmd", ["ingest", "tokenize", "embed", "clips", "mine"])
def test_every_task_command_defaults_to_the_ray_executor(cmd):
    argv = {"ingest": ["ingest", "x", "--out", "y"], "tokenize": ["tokenize", "d"],
            "embed": ["embed", "d"], "clips": ["clips", "d", "--out", "o"],
            "mine": ["mine"]}[cmd]
    args = build_parser().parse_args(argv)
    assert args.executor == "ray" and args.workers is None


def _bogus(fs: str, photos, tmp_path) -> list[str]:
    """`mmshard tokenize` argv that sets an unknown option on field set ``fs``."""
    argv = ["tokenize", str(photos), "--fields", fs, "--option", f"{fs}.bogus_opt=1", *LOCAL]
    if fs == "emb":
        argv += ["--option", "emb.encoder=hashing", "--option", "emb.field=txt"]
    if fs == "units":
        argv += ["--codebook", str(tmp_path / "missing.safetensors")]
    if fs == "vq":
        from mmshard.pipelines.train.codebook import fit_codebook

        cb = str(tmp_path / "vq.safetensors")
        fit_codebook(str(photos), cb, field="jpg", k=4, patch=8)
        argv += ["--codebook", cb]
    if fs == "tokenizer":
        argv += ["--option", "tokenizer.factory=json:dumps"]
    return argv


@pytest.mark.parametrize("fs", ["mel", "fbank", "mfcc", "spectral", "units", "keyframes",
                                "frames", "vq", "vqvae", "emb", "tokenizer"])
def test_unknown_option_of_every_field_set_exits_2_naming_the_allowed(fs, photos, tmp_path,
                                                                       capsys):
    assert main(_bogus(fs, photos, tmp_path)) == 2
    err = _err(capsys)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "bogus_opt" in err
    if fs != "tokenizer":  # a plug-in's options are its factory's own parameters
        assert "allowed" in err


@pytest.mark.parametrize("argv, flag", [
    (["tokenize", "DS", "--fields", "mel", "--batch-size", "0"], "--batch-size"),
    (["ingest", "SRC", "--out", "O", "--executor", "local", "--workers", "0"], "--workers"),
    (["inspect", "DS", "--rows", "-1"], "--rows"),
    (["mine", "--queries", "q.npy", "-k", "0"], "-k"),
])
def test_bad_flag_values_exit_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"argument {flag}" in _err(capsys)


def test_image_size_without_a_resize_policy_and_bad_yaml_values_exit_2(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(str(src / "p.jpg"), 32, 24)
    assert main(["ingest", str(src), "--out", str(tmp_path / "o"), "--image-size", "-3",
                 *LOCAL]) == 2
    assert "image size" in _err(capsys)
    for value in ("2.5", '"ten"'):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"max_samples: {value}\n")
        assert main(["ingest", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg),
                     *LOCAL]) == 2
        err = _err(capsys)
        assert "max_samples" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o" / "index.json")


def test_relative_and_absolute_source_paths_are_one_job(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    for i in range(3):
        write_image(str(src / f"p{i}.jpg"), 32, 24, seed=i)
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", "src", "--out", "o", "--max-samples", "1", *LOCAL]) == 0
    assert main(["ingest", str(src), "--out", str(tmp_path / "o"), "--max-samples", "1",
                 *LOCAL]) == 0
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["resumed_shards"] == 3


def test_clips_over_the_failure_rate_exits_3_after_committing(tmp_path, capsys):
    from mmshard.tario import TarWriter, iter_tar

    src = tmp_path / "src"
    os.makedirs(src)
    synth.write_video(str(src / "v.mp4"), frames=12, fps=10)
    ds = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(ds), *LOCAL]) == 0
    for name in os.listdir(ds / "shards"):  # the video rots after ingest
        path = ds / "shards" / name
        samples = list(iter_tar(str(path)))
        with TarWriter(str(path)) as w:
            for s in samples:
                s["mp4"] = b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 200
                w.write({k: v for k, v in s.items() if k != "__url__"})
    capsys.readouterr()
    assert main(["clips", str(ds), "--out", str(tmp_path / "c"), "--window", "0.5",
                 "--preset", "ultrafast", *LOCAL]) == 3
    assert "max_failure_rate" in _err(capsys)
    assert os.path.exists(tmp_path / "c" / "ledger.parquet")  # committed first


def test_tokenize_config_yaml_in_both_forms_is_one_job(photos, tmp_path, capsys):
    whole = tmp_path / "whole.yaml"
    whole.write_text("field_sets:\n  mel: {n_mels: 128}\nbatch_size: 2\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("mel: {n_mels: 128}\n")
    assert main(["tokenize", str(photos), "--config", str(whole), *LOCAL]) == 0
    idx = json.loads((photos / "mel" / "index.json").read_text())
    assert idx["config"]["options"] == {"n_mels": 128}
    # the plain mapping names the same field set and options: a rerun resumes (batch size
    # does not change the bytes), and a flag overrides the file
    assert main(["tokenize", str(photos), "--config", str(plain), *LOCAL]) == 0
    assert main(["tokenize", str(photos), "--config", str(plain), "--option", "mel.n_mels=80",
                 *LOCAL]) == 2
    assert "other options" in _err(capsys)
