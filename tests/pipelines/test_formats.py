"""Every common container and image format is an input (one small file of each, written
here by ffmpeg or Pillow); a file with an unknown extension is sniffed by its bytes; a
file that is not media is an ``ignored`` ledger row; a source with no media is an error."""

from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from mmshard import IngestConfig, ingest, make_executor, synth
from mmshard.cli.main import main
from mmshard.dataset import open_dataset
from mmshard.errors import SourceError
from mmshard.pipelines.curate.audit import contract_problems
from mmshard.verify import verify_dataset
from tests.conftest import write_image, write_text

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg CLI is not installed")

# extension -> ffmpeg output options (a 64x48 test pattern, 5 frames)
VIDEOS = {
    "mpg": ["-r", "25"], "mpeg": ["-r", "25"], "ts": [], "m2ts": [], "mts": [],
    "3gp": ["-c:v", "h263", "-s", "176x144"], "flv": [], "wmv": [], "ogv": [],
    "vob": [],
}
AUDIOS = {"aiff": [], "aif": [], "wma": [], "caf": [], "weba": ["-c:a", "libopus", "-f", "webm"],
          "mka": []}
IMAGES = {"avif": "AVIF", "heic": "HEIF", "heif": "HEIF", "jp2": "JPEG2000", "jxl": "JXL",
          "ico": "ICO", "ppm": "PPM"}
STORED_FIELD = {"mpg": "vob", "mpeg": "vob", "aif": "aiff", "heif": "heic"}


def _ffmpeg(path, lavfi: str, opts: list[str]) -> None:
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-f", "lavfi", "-i", lavfi, *opts,
                    str(path)], check=True, capture_output=True)


def _write_image(path, fmt: str) -> None:
    from mmshard.media.image import register_image_plugins

    register_image_plugins()
    synth.photo_like(40, 30, seed=1).save(path, fmt)


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    if FFMPEG is None:
        pytest.skip("the ffmpeg CLI is not installed")
    src = tmp_path_factory.mktemp("formats") / "src"
    src.mkdir()
    for ext, opts in VIDEOS.items():
        rate = "25" if ext in ("mpg", "mpeg") else "10"
        _ffmpeg(src / f"v_{ext}.{ext}", f"testsrc=size=64x48:rate={rate}",
                ["-frames:v", "5", *opts])
    for ext, opts in AUDIOS.items():
        _ffmpeg(src / f"a_{ext}.{ext}", "sine=frequency=440:duration=0.3", opts)
    for ext, fmt in IMAGES.items():
        _write_image(src / f"i_{ext}.{ext}", fmt)
    out = src.parent / "out"
    res = ingest([str(src)], str(out), IngestConfig(), executor=make_executor("local"))
    return out, res


def _manifest(out) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


@needs_ffmpeg
@pytest.mark.parametrize("ext", sorted(VIDEOS))
def test_video_container_is_an_input(every_format, ext):
    out, res = every_format
    row = _manifest(out)[f"v_{ext}"]
    assert row["modality"] == "video" and row["frames"] == 5 and row["width"] > 0
    assert STORED_FIELD.get(ext, ext) in row["fields"].split(",")


@needs_ffmpeg
@pytest.mark.parametrize("ext", sorted(AUDIOS))
def test_audio_format_is_an_input(every_format, ext):
    out, _ = every_format
    row = _manifest(out)[f"a_{ext}"]
    assert row["modality"] == "audio" and abs(row["duration"] - 0.3) < 0.05
    assert STORED_FIELD.get(ext, ext) in row["fields"].split(",")


@needs_ffmpeg
@pytest.mark.parametrize("ext", sorted(IMAGES))
def test_image_format_is_an_input(every_format, ext):
    out, _ = every_format
    row = _manifest(out)[f"i_{ext}"]
    assert row["modality"] == "image" and row["height"] > 0
    assert STORED_FIELD.get(ext, ext) in row["fields"].split(",")


@needs_ffmpeg
def test_every_format_dataset_verifies_and_nothing_failed(every_format):
    out, res = every_format
    assert res.stats["failed"] == 0
    assert res.stats["ok"] == len(VIDEOS) + len(AUDIOS) + len(IMAGES)
    assert verify_dataset(str(out)) == []


def test_amr_cannot_be_written_here():
    enc = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True,
                         text=True).stdout if FFMPEG else ""
    if "amr" not in enc.lower():
        pytest.skip("this ffmpeg has AMR decoders only (no libopencore-amrnb encoder): "
                    ".amr inputs decode through PyAV but no test file can be made here")


def test_unknown_extensions_are_sniffed_and_non_media_is_ignored(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(str(src / "photo.dat"), 40, 30)                       # JPEG bytes
    synth.write_audio(str(src / "speech.wav"), synth.tone(0.2, 8000), 8000)
    (src / "speech.wav").rename(src / "speech")                       # no extension
    write_image(str(src / "plain.png"), 40, 30, fmt="PNG")
    write_text(str(src / "README.md"), "# notes, not media\n")
    write_text(str(src / "orphan.txt"), "a caption without a medium")
    out = tmp_path / "out"
    code = main(["ingest", str(src), "--out", str(out), "--executor", "local",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ignored 2 file(s) that are not media" in printed
    man = _manifest(out)
    assert man["photo"]["fields"] == "jpg,json" and man["speech"]["fields"] == "json,wav"
    rows = pq.read_table(out / "ledger.parquet").to_pylist()
    ignored = sorted(r["source"].rsplit("/", 1)[-1] for r in rows if r["status"] == "ignored")
    assert ignored == ["README.md", "orphan.txt"]
    assert {r["reason"] for r in rows if r["status"] == "ignored"} == {"not_media"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["inputs"] == 3 == stats["ok"] + stats["failed"] + stats["duplicate"]
    assert stats["ignored"] == 2
    assert verify_dataset(str(out)) == []
    assert contract_problems(open_dataset(str(out))) == []


def test_a_source_without_media_is_an_error(tmp_path, capsys):
    src = tmp_path / "notes"
    write_text(str(src / "a.md"), "x")
    write_text(str(src / "b.csv.bak"), "y")
    with pytest.raises(SourceError, match="holds no media"):
        ingest([str(src)], str(tmp_path / "out"), executor=make_executor("local"))
    code = main(["ingest", str(tmp_path / "notes" / "*.mpg"), "--out", str(tmp_path / "o2"),
                 "--executor", "local", "--no-progress"])
    assert code == 2
    code = main(["ingest", str(src), "--out", str(tmp_path / "o3"), "--executor", "local",
                 "--no-progress"])
    assert code == 2 and "holds no media" in capsys.readouterr().err


@needs_ffmpeg
def test_a_glob_of_mpeg_ps_files_ingests(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    _ffmpeg(src / "film.mpg", "testsrc=size=64x48:rate=25", ["-frames:v", "5"])
    res = ingest([str(src / "*.mpg")], str(tmp_path / "out"), executor=make_executor("local"))
    assert res.stats["inputs"] == 1 == res.stats["ok"]
