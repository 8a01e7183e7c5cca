"""mmshard report: the data behind each section, a self-contained page, and a real
browser (headless Chromium) that renders every section and decodes the thumbnails."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmshard.cli.main import main
from mmshard.dataset import DatasetIndex, ShardInfo
from mmshard.pipelines.curate import DedupConfig, dedup
from mmshard.pipelines.curate.audit import AuditConfig, audit
from mmshard.pipelines.curate.report import SECTIONS, ReportConfig, report_data
from mmshard.pipelines.curate.report_html import render_html
from mmshard.tario import TarWriter
from tests._shards import make_dataset
from tests.pipelines._curate_media import ingest_corpus, make_corpus


def _decode(uri: str) -> Image.Image:
    head, b64 = uri.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64")
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The leaky photo corpus plus one empty file, deduplicated and audited."""
    root = str(tmp_path_factory.mktemp("photos"))
    corpus = make_corpus(root)
    open(os.path.join(corpus.src, "bad.jpg"), "wb").close()
    ds = ingest_corpus(corpus, os.path.join(root, "ds"))
    dedup(ds, DedupConfig(method="phash"))
    audit(ds, AuditConfig(methods=("exact", "phash")))
    pq.write_table(pa.table({"query_key": ["a", "b"], "negative_scores": [[0.5, 0.25], [0.1]],
                             "positive_score": [0.9, None]}),
                   os.path.join(ds, "negatives.parquet"))
    return corpus, ds


def _keyframes_sidecar(ds: str, keys: list[str]) -> None:
    os.makedirs(os.path.join(ds, "keyframes"))
    path = os.path.join(ds, "keyframes", "train-000000.tar")
    with TarWriter(path) as w:
        for i, k in enumerate(keys):
            kf = {"num_frames": 20, "fps": 10, "keyframes": [{"time": 0.0}, {"time": 1.0}]}
            frames = {}
            for j in range(2):
                buf = io.BytesIO()
                Image.fromarray(np.full((24, 32, 3), 40 * (i + j), np.uint8)).save(buf, "JPEG")
                frames[f"kf.{j:03d}.jpg"] = buf.getvalue()
            w.write({"__key__": k, "kf.json": json.dumps(kf), **frames})
    idx = DatasetIndex(name="kf", field_set="keyframes", shards=(ShardInfo(
        url="train-000000.tar", split="train", nsamples=len(keys), filesize=0, sha256=""),))
    with open(os.path.join(ds, "keyframes", "index.json"), "wb") as f:
        f.write(idx.to_json())


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Captioned audio with a mel/ sidecar and a keyframes/ sidecar (tests/_shards)."""
    root = tmp_path_factory.mktemp("speech")
    info = make_dataset(root / "ds", shard_sizes={"train": (3, 2), "val": (2,)}, image=True,
                        audio=True, mel=True)
    _keyframes_sidecar(str(root / "ds"), info.keys["train"][:3])
    return info


def test_section_data(photos):
    corpus, ds = photos
    data = report_data(ds, ReportConfig(grid=4, thumb=48))
    man = pq.read_table(os.path.join(ds, "manifest.parquet")).to_pydict()
    assert {(r["split"], r["modality"]): r["samples"] for r in data["counts"]["rows"]} == {
        (s, "image"): man["split"].count(s) for s in set(man["split"])}
    fails = data["failures"]
    assert fails["status"] == {"ok": len(man["key"]), "failed": 1}
    assert [(r["reason"], r["count"]) for r in fails["rows"]] == [("empty_file", 1)]
    assert fails["rows"][0]["examples"][0].endswith("src/bad")
    hs = data["histograms"]["histograms"]
    assert hs["width"]["n"] == len(man["key"]) == sum(hs["width"]["counts"])
    assert hs["width"]["max"] == max(man["width"]) and hs["aspect"]["median"] == pytest.approx(
        float(np.median([w / h for w, h in zip(man["width"], man["height"])])))
    grid = data["samples"]["splits"]
    assert set(grid) == {"train", "val"} and all(len(c) == 4 for c in grid.values())
    assert all(max(_decode(c["src"]).size) <= 48 for cells in grid.values() for c in cells)
    assert not data["videos"]["present"] and "keyframes" in data["videos"]["why"]
    assert not data["audio"]["present"]
    mining = data["mining"]
    assert mining["queries"] == 2 and mining["negatives"]["n"] == 3
    assert mining["positives"]["n"] == 1
    sets = data["dedup"]["sets"]
    assert data["dedup"]["duplicates"] == len(corpus.planted)
    assert all(s["members"][0]["duplicate_of"] is None and s["members"][0]["src"] for s in sets)
    assert {m["key"] for s in sets for m in s["members"][1:]} == {
        k if corpus.kinds[k] != "exact" else corpus.planted[k] for k in corpus.planted}
    audit_d = data["audit"]
    assert audit_d["summary"]["passed"] is False and len(audit_d["pairs"]) == 4
    assert all(_decode(p["src_a"]) and _decode(p["src_b"]) for p in audit_d["pairs"])


def test_audio_video_and_caption_sections(speech, tmp_path):
    data = report_data(speech.root, ReportConfig(sections=("histograms", "videos", "audio")))
    clips = data["audio"]["clips"]
    assert len(clips) == 4 and {c["source"] for c in clips} == {"mel/ sidecar"}
    assert clips[0]["shape"] == [4, 6]  # the sidecar's mel.npy
    assert _decode(clips[0]["src"]).size[1] == 80
    strips = data["videos"]["strips"]
    assert [len(s["frames"]) for s in strips] == [2, 2, 2] and strips[0]["duration"] == 2.0
    caps = data["histograms"]["histograms"]["caption_length"]
    assert caps["n"] == 7 and caps["min"] == len("caption 0")
    assert data["histograms"]["histograms"]["sample_rate"]["median"] == 8000
    shutil.rmtree(os.path.join(speech.root, "mel"))
    computed = report_data(speech.root, ReportConfig(sections=("audio",)))["audio"]["clips"]
    assert {c["source"] for c in computed} == {"computed"}
    assert computed[0]["shape"] == [80, 5]  # 0.05 s at 8 kHz, resampled to 16 kHz, hop 160


def test_page_is_self_contained_with_every_section(photos, tmp_path, capsys):
    _, ds = photos
    out = str(tmp_path / "r.html")
    assert main(["report", ds, "--out", out, "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    html = open(out, encoding="utf-8").read()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert 'id="grid-train"' in html and 'id="grid-val"' in html
    lower = html.lower()
    assert "<script" not in lower and "<link" not in lower and 'src="http' not in lower
    assert "url(http" not in lower and html.count('src="data:image/') >= 8


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chrome(tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chrome-profile'}"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, timeout=90,
                          text=True, check=False)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed "
                    "(apt-get install -y chromium; .ci/run installs it)")
def test_chromium_renders_every_section_and_decodes_the_grid(photos, tmp_path):
    _, ds = photos
    page = tmp_path / "report.html"
    page.write_text(render_html(report_data(ds)), encoding="utf-8")
    dom = _chrome(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in dom.stdout
    # A page with only the grid puts the first thumbnail at the top left (body padding
    # 8px 16px; 96 px cells): after decoding, that area is a photo, not blank.
    grid = tmp_path / "grid.html"
    grid.write_text(render_html(report_data(ds, ReportConfig(sections=("samples",)))),
                    encoding="utf-8")
    shot = tmp_path / "grid.png"
    res = _chrome(tmp_path, f"--screenshot={shot}", "--window-size=800,600", grid.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    cell = px[14:98, 22:106]                     # inside the first thumbnail
    assert (np.abs(cell - 255).sum(axis=2) > 30).mean() > 0.9  # not white
    assert cell.std() > 10                        # a picture, not a flat placeholder
    blank = px[-60:, -60:]                        # below/right of the grid: page background
    assert (np.abs(blank - 255).sum(axis=2) <= 30).mean() > 0.99


def test_real_keyframes_sidecar_dedups_a_reencoded_video_and_feeds_the_strips(tmp_path):
    """ingest -> tokenize keyframes -> dedup -> report, all real: a resized, re-encoded
    copy of a video is a duplicate of it (the larger one kept); another video is not."""
    from mmshard import IngestConfig, ingest, make_executor, synth
    from mmshard.pipelines.transform.job import tokenize

    src = tmp_path / "src"
    src.mkdir()
    synth.write_video(str(src / "a.mp4"), frames=20, fps=10, cuts=(10,), seed=1, size=(96, 72))
    synth.write_video(str(src / "b.mp4"), frames=20, fps=10, cuts=(10,), seed=2, size=(96, 72))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(src / "a.mp4"), "-vf",
                    "scale=64:48", "-crf", "30", str(src / "a_small.mp4")], check=True)
    ds = str(tmp_path / "ds")
    ingest([str(src)], ds, IngestConfig(), executor=make_executor("local"))
    tokenize(ds, {"keyframes": {}}, executor=make_executor("local"))
    dedup(ds, DedupConfig(method="phash"))
    rows = pq.read_table(os.path.join(ds, "dedup", "dedup.parquet")).to_pylist()
    assert [(r["key"], r["duplicate_of"], r["method"]) for r in rows] == [
        ("a", None, "phash"), ("a_small", "a", "phash")]
    strips = report_data(ds, ReportConfig(sections=("videos",)))["videos"]["strips"]
    assert {s["key"] for s in strips} == {"a", "a_small", "b"}
    assert all(s["frames"] and _decode(s["frames"][0]) for s in strips)
    assert all(s["duration"] == pytest.approx(2.0) for s in strips)
