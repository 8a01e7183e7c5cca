"""The transform job (`mmshard tokenize`) and `mmshard fit-codebook` on real shards."""

import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmshard import synth
from mmshard.cli.main import main
from mmshard.dataset import open_dataset
from mmshard.errors import ConfigError, JobError
from mmshard.pipelines.executor import LocalExecutor, RayExecutor
from mmshard.pipelines.ingest.job import IngestConfig, ingest
from mmshard.pipelines.train.codebook import fit_codebook
from mmshard.pipelines.transform.job import tokenize
from mmshard.tario import TarWriter
from mmshard.tokenizers.audio_features import WhisperMel
from tests.conftest import write_image, write_text


def sidecar(root, field_set):
    ds = open_dataset(str(root))
    return {s["__key__"]: s for sh in ds.index.shards for s in ds.iter_shard(sh, field_set)}


@pytest.fixture
def dataset(tmp_path):
    """Ingested: 4 speech-like clips (16 kHz FLAC), 1 tone at 8 kHz (kept as WAV),
    2 captioned images, 1 video with cuts at frames 14 and 28."""
    src = tmp_path / "src"
    for i in range(4):
        synth.write_audio(str(src / "speech" / f"u{i}.wav"),
                          synth.speech_like(0.6 + 0.17 * i, 16000, seed=i), 16000)
    synth.write_audio(str(src / "tone" / "t.wav"), synth.tone(0.5, 8000, 440.0), 8000)
    for i in range(2):
        write_image(str(src / "img" / f"p{i}.jpg"), 64, 48, seed=i)
        write_text(str(src / "img" / f"p{i}.txt"), f"photo {i}")
    os.makedirs(src / "vid")
    synth.write_video(str(src / "vid" / "v.mp4"), frames=42, fps=10, size=(96, 64),
                      cuts=(14, 28))
    out = tmp_path / "ds"
    ingest([str(src)], str(out), IngestConfig(max_samples=3, name="t"),
           executor=LocalExecutor(1))
    return out


def test_mel_sidecar_matches_the_tokenizer_and_joins_by_key(dataset):
    r = tokenize(str(dataset), {"mel": {}, "spectral": {}}, executor=LocalExecutor(1))
    assert r.stats["mel"]["ok"] == 5 and r.stats["mel"]["skipped"] == 3
    ds = open_dataset(str(dataset))
    base = {s["__key__"]: s for sh in ds.index.shards for s in ds.iter_shard(sh)}
    mel = sidecar(dataset, "mel")
    assert set(mel) == {k for k in base if "speech" in k or "tone" in k}
    for sh in ds.index.shards:  # same order as the base shard
        order = [s["__key__"] for s in ds.iter_shard(sh)]
        side = [s["__key__"] for s in ds.iter_shard(sh, "mel")]
        assert side == [k for k in order if k in mel]
    import soundfile as sf

    x, sr = sf.read(io.BytesIO(base["speech__u1"]["wav"]), dtype="float32")
    want = WhisperMel()(x, sr).astype(np.float16)
    got = np.load(io.BytesIO(mel["speech__u1"]["mel.npy"]), allow_pickle=False)
    # whisper drops the last STFT frame: len // 160 frames
    assert got.dtype == np.float16 and got.shape == (80, len(x) // 160)
    np.testing.assert_array_equal(got, want)
    tone = np.load(io.BytesIO(mel["tone__t"]["mel.npy"]))  # 8 kHz: resampled to 16 kHz
    assert tone.shape == (80, 8000 // 160)  # 0.5 s at 16 kHz
    idx = json.loads((dataset / "mel" / "index.json").read_text())
    assert idx["provenance"]["tokenizer"] == "whisper_mel" and idx["field_set"] == "mel"
    assert idx["fields"] == ["mel.npy"]
    ledger = pq.read_table(dataset / "mel" / "ledger.parquet").to_pylist()
    assert len(ledger) == 8 and {r["status"] for r in ledger} == {"ok", "skipped"}


def test_undecodable_sample_is_a_ledger_row_not_a_crash(tmp_path):
    from mmshard.dataset import DatasetIndex, ShardInfo

    root = tmp_path / "ds"
    (root / "shards").mkdir(parents=True)
    buf = io.BytesIO()
    import soundfile as sf

    sf.write(buf, synth.tone(0.3, 16000), 16000, format="FLAC")
    with open(root / "shards" / "train-000000.tar", "wb") as f, TarWriter(f) as w:
        w.write({"__key__": "a", "flac": buf.getvalue()})
        w.write({"__key__": "b", "flac": b"fLaC not really"})
        w.write({"__key__": "c", "flac": buf.getvalue()})
    size = os.path.getsize(root / "shards" / "train-000000.tar")
    (root / "index.json").write_bytes(DatasetIndex(name="t", shards=(ShardInfo(
        url="shards/train-000000.tar", split="train", nsamples=3, filesize=size, sha256=""),)
    ).to_json())
    r = tokenize(str(root), {"mel": {}}, executor=LocalExecutor(1))
    assert (r.stats["mel"]["ok"], r.stats["mel"]["failed"]) == (2, 1)
    assert list(sidecar(root, "mel")) == ["a", "c"]
    row = [x for x in pq.read_table(root / "mel" / "ledger.parquet").to_pylist()
           if x["key"] == "b"][0]
    assert row["status"] == "failed" and row["reason"] == "undecodable_audio"


def test_resume_recomputes_only_missing_shards_and_config_changes_are_refused(dataset):
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1))
    first = {p.name: p.read_bytes() for p in (dataset / "mel").glob("*.tar")}
    victim = sorted(first)[0]
    os.remove(dataset / "mel" / victim)
    os.remove(dataset / "_work" / "transform" / "mel" / "parts" / victim.replace(".tar", ".json"))
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(2))
    assert {p.name: p.read_bytes() for p in (dataset / "mel").glob("*.tar")} == first
    with pytest.raises(JobError, match="other options"):
        tokenize(str(dataset), {"mel": {"n_mels": 128}}, executor=LocalExecutor(1))
    tokenize(str(dataset), {"mel": {"n_mels": 128}}, executor=LocalExecutor(1), overwrite=True)
    m = np.load(io.BytesIO(sidecar(dataset, "mel")["speech__u0"]["mel.npy"]))
    assert m.shape[0] == 128


def test_unknown_field_set_or_option_fails_before_work(dataset):
    with pytest.raises(ConfigError, match="known"):
        tokenize(str(dataset), {"melody": {}}, executor=LocalExecutor(1))
    with pytest.raises(ConfigError):
        tokenize(str(dataset), {"mel": {"n_mels": 81}}, executor=LocalExecutor(1))
    with pytest.raises(ConfigError, match="codebook"):
        tokenize(str(dataset), {"units": {}}, executor=LocalExecutor(1))
    assert not (dataset / "mel").exists()


def test_units_from_a_fitted_mfcc_codebook(dataset, tmp_path):
    tokenize(str(dataset), {"mfcc": {}}, executor=LocalExecutor(1))
    cb = tmp_path / "units.safetensors"
    info = fit_codebook(str(dataset), str(cb), field="mfcc", k=16, seed=0).stats
    assert info["k"] == 16 and info["vectors"] > 100
    tokenize(str(dataset), {"units": {"codebook_path": str(cb), "frame_rate_reduction": 2}},
             executor=LocalExecutor(1))
    units = sidecar(dataset, "units")
    mfcc = sidecar(dataset, "mfcc")
    ids = np.load(io.BytesIO(units["speech__u2"]["units.npy"]))
    frames = np.load(io.BytesIO(mfcc["speech__u2"]["mfcc.npy"])).shape[0]
    assert ids.dtype == np.int16 and len(ids) == -(-frames // 2)
    assert ids.min() >= 0 and ids.max() < 16
    again = tmp_path / "units2.safetensors"
    fit_codebook(str(dataset), str(again), field="mfcc", k=16, seed=0)
    from mmshard.tokenizers.codebook import Codebook

    np.testing.assert_array_equal(Codebook.load(again).centroids,  # deterministic per seed
                                  Codebook.load(cb).centroids)


def test_keyframes_find_the_known_cuts(dataset):
    tokenize(str(dataset), {"keyframes": {}}, executor=LocalExecutor(1))
    s = sidecar(dataset, "keyframes")["vid__v"]
    kf = json.loads(s["kf.json"])
    assert kf["scene_starts"] == [0, 14, 28]
    thumbs = sorted(k for k in s if k.startswith("kf.") and k.endswith(".jpg"))
    assert len(thumbs) == len(kf["keyframes"]) >= 3


def test_patch_vq_fit_and_tokenize_through_the_cli(dataset, tmp_path, capsys):
    cb = tmp_path / "vq.safetensors"
    assert main(["fit-codebook", str(dataset), "--field", "jpg", "--patch", "8", "--k", "16",
                 "--out", str(cb)]) == 0
    assert main(["tokenize", str(dataset), "--fields", "vq", "--codebook", str(cb),
                 "--executor", "local", "--no-progress"]) == 0
    assert "vq" in capsys.readouterr().out
    vq = sidecar(dataset, "vq")
    grid = np.load(io.BytesIO(vq["img__p0"]["vq.npy"]))
    assert grid.shape == (6, 8) and grid.dtype == np.int16


@pytest.mark.ray
def test_ray_executor_gives_identical_sidecars(ray_cluster, dataset):
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1))
    local = {p.name: p.read_bytes() for p in (dataset / "mel").glob("*.tar")}
    tokenize(str(dataset), {"mel": {}}, executor=RayExecutor(), overwrite=True)
    assert {p.name: p.read_bytes() for p in (dataset / "mel").glob("*.tar")} == local


def test_batched_log_mel_path_gives_the_same_bytes(dataset):
    """The GPU path (clips of different lengths in one STFT) run on the CPU."""
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1), batch_size=1)
    one = {p.name: p.read_bytes() for p in (dataset / "mel").glob("*.tar")}
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1), batch_size=4,
             overwrite=True)
    assert {p.name: p.read_bytes() for p in (dataset / "mel").glob("*.tar")} == one


def test_units_from_a_mel_codebook_recompute_the_mel_feature(dataset, tmp_path):
    """`fit-codebook --field mel` (stored [bins, frames]) then units: same frame count."""
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1))
    cb = tmp_path / "mel_units.npz"
    fit_codebook(str(dataset), str(cb), field="mel", k=8, seed=1)
    tokenize(str(dataset), {"units": {"codebook_path": str(cb)}}, executor=LocalExecutor(1))
    mel = np.load(io.BytesIO(sidecar(dataset, "mel")["speech__u3"]["mel.npy"]))
    ids = np.load(io.BytesIO(sidecar(dataset, "units")["speech__u3"]["units.npy"]))
    assert len(ids) == mel.shape[1] and ids.max() < 8
    prov = json.loads((dataset / "units" / "index.json").read_text())["provenance"]
    assert prov["feature"]["tokenizer"] == "whisper_mel"
    assert prov["feature"]["layout"] == "bins_frames"


def _mel_shard(root):
    ds = open_dataset(str(root))
    man = pq.read_table(os.path.join(root, "manifest.parquet")).to_pylist()
    audio = {r["shard"] for r in man if r["modality"] == "audio"}
    return next(sh for sh in ds.index.shards if sh.url.rsplit("/", 1)[-1][:-4] in audio), man


def test_truncated_base_shard_gives_failed_rows_not_a_stopped_job(dataset):
    sh, man = _mel_shard(dataset)
    path = os.path.join(dataset, sh.url)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    r = tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1))
    name = sh.url.rsplit("/", 1)[-1][:-4]
    rows = [x for x in pq.read_table(dataset / "mel" / "ledger.parquet").to_pylist()
            if x["shard"] == name]
    unreadable = [x for x in rows if x["reason"] == "unreadable_shard"]
    assert unreadable and all("truncated" in x["detail"] for x in unreadable)
    # every sample of the shard has exactly one row: read ones ok/skipped, the rest failed
    assert sorted(x["key"] for x in rows) == sorted(m["key"] for m in man if m["shard"] == name)
    assert r.stats["mel"]["failures_by_reason"]["unreadable_shard"] == len(unreadable)
    assert r.stats["mel"]["ok"] >= 1  # the other shards were tokenized


def test_sidecar_index_names_the_base_shard_sha256(dataset):
    tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1))
    base = json.loads((dataset / "index.json").read_text())["shardlist"]
    side = json.loads((dataset / "mel" / "index.json").read_text())["shardlist"]
    assert [s["base_sha256"] for s in side] == [s["sha256"] for s in base]
    assert all("base_sha256" not in s for s in base)


class _LoseFirst(LocalExecutor):
    """Reports the first task as lost, as the Ray executor does for a worker that died on
    every attempt (the real kill is exercised for ingest and mine)."""

    def imap_unordered(self, fn, args, max_in_flight=None):
        from mmshard.pipelines.executor import TaskLost

        for i, a in enumerate(args):
            yield i, (TaskLost(RuntimeError("worker died")) if i == 0 else fn(a))


def test_lost_transform_task_becomes_worker_lost_rows_and_a_rerun_recomputes_it(dataset):
    r = tokenize(str(dataset), {"mel": {}}, executor=_LoseFirst(1))
    first = open_dataset(str(dataset)).index.shards[0].url.rsplit("/", 1)[-1][:-4]
    man = pq.read_table(dataset / "manifest.parquet").to_pylist()
    lost = [x for x in pq.read_table(dataset / "mel" / "ledger.parquet").to_pylist()
            if x["reason"] == "worker_lost"]
    assert sorted(x["key"] for x in lost) == sorted(m["key"] for m in man
                                                    if m["shard"] == first)
    assert r.stats["mel"]["failures_by_reason"] == {"worker_lost": len(lost)}
    r2 = tokenize(str(dataset), {"mel": {}}, executor=LocalExecutor(1))
    assert r2.stats["mel"]["failed"] == 0 and r2.stats["mel"]["ok"] == 5


def test_fit_codebook_on_an_object_array_is_one_line_naming_shard_and_key(dataset, tmp_path,
                                                                          capsys):
    from mmshard.tario import iter_tar

    tokenize(str(dataset), {"mfcc": {}}, executor=LocalExecutor(1))
    side = dataset / "mfcc"
    name, samples = next((n, ss) for n in sorted(os.listdir(side)) if n.endswith(".tar")
                         and (ss := list(iter_tar(str(side / n)))))  # a shard with audio
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)  # a pickle
    with TarWriter(str(side / name)) as w:
        for s in samples:
            s["mfcc.npy"] = buf.getvalue()
            w.write({k: v for k, v in s.items() if k != "__url__"})
    code = main(["fit-codebook", str(dataset), "--field", "mfcc", "--k", "4",
                 "--out", str(tmp_path / "cb.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert samples[0]["__key__"] in err and name in err and "not a numeric array" in err
    assert not (tmp_path / "cb.safetensors").exists()
