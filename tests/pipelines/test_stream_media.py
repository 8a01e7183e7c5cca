"""Mixed media in the Loader (issue 13 item 5, C6): a medium a sample legitimately lacks
(per its manifest row) comes back as zero rows plus ``__has__<medium>``; a sample whose
manifest says it has the medium but whose shard does not is an error (or a counted
skip).  The dataset is ingested from real generated image, audio and video files,
MPEG-PS (stored as .vob) and MPEG-TS included."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from mmshard import IngestConfig, ingest, make_executor, synth
from mmshard.errors import ConfigError, DataError
from mmshard.pipelines.stream.decode import (
    AudioDecode,
    DecodeConfig,
    FixedResize,
    ImageDecode,
    VideoDecode,
)
from mmshard.pipelines.stream.loader import Loader
from mmshard.tario import TarWriter, iter_tar
from tests.conftest import write_image, write_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DECODE = DecodeConfig(image=ImageDecode(resize=FixedResize(size=(16, 16))),
                      audio=AudioDecode(sample_rate=8000, num_samples=800),
                      video=VideoDecode(num_frames=2, size=(12, 16)))


def _ffmpeg(path, fmt_args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=32x24:rate=25", "-frames:v", "6", *fmt_args, str(path)],
                   check=True)


@pytest.fixture(scope="module")
def media_sets(tmp_path_factory):
    if not shutil.which("ffmpeg"):
        pytest.skip("needs the ffmpeg CLI")
    base = tmp_path_factory.mktemp("media")
    mixed, audio = base / "src_mixed", base / "src_audio"
    write_image(str(mixed / "img0.jpg"), 40, 32, seed=0)
    write_text(str(mixed / "img0.txt"), "a photo")
    write_image(str(mixed / "img1.png"), 24, 24, seed=1, fmt="PNG")
    synth.write_audio(str(mixed / "utt0.flac"), synth.speech_like(0.2, 8000, seed=0), 8000)
    synth.write_audio(str(mixed / "utt1.wav"), synth.speech_like(0.2, 8000, seed=1), 8000)
    synth.write_video(str(mixed / "clip.mp4"), frames=6, fps=6, size=(32, 24))
    _ffmpeg(mixed / "film.mpg", ["-r", "25"])  # MPEG-PS: stored as .vob
    _ffmpeg(mixed / "news.ts", [])  # MPEG-TS
    for i in range(3):
        synth.write_audio(str(audio / f"a{i}.flac"), synth.tone(0.2, 8000, 300 + 50 * i), 8000)
    out = {}
    for name, src in (("mixed", mixed), ("audio", audio)):
        ingest([str(src)], str(base / name), IngestConfig(),
               executor=make_executor("local", workers=1))
        out[name] = base / name
    return out


def _modalities(folder) -> dict[str, str]:
    t = pq.read_table(str(folder / "manifest.parquet")).to_pylist()
    return {r["key"]: r["modality"] for r in t}


def _one_batch(ld: Loader) -> dict:
    batches = list(ld)
    assert len(batches) == 1
    return batches[0]


def test_mixed_dataset_returns_each_medium_with_presence_masks(media_sets):
    mods = _modalities(media_sets["mixed"])
    assert sorted(mods.values()) == ["audio"] * 2 + ["image"] * 2 + ["video"] * 3
    fields = {r["key"]: r["fields"] for r in
              pq.read_table(str(media_sets["mixed"] / "manifest.parquet")).to_pylist()}
    assert "vob" in fields["film"] and "ts" in fields["news"]
    ld = Loader(str(media_sets["mixed"]), batch_size=7, seed=0, shuffle=False, decode=DECODE)
    b = _one_batch(ld)
    keys = b["__key__"]
    assert sorted(keys) == sorted(mods) and not b["__pad__"].any()
    for medium, shape in (("image", (3, 16, 16)), ("audio", (800,)),
                          ("video", (2, 3, 12, 16))):
        has = b[f"__has__{medium}"].tolist()
        assert has == [mods[k] == medium for k in keys], medium
        t = b[medium]
        assert tuple(t.shape) == (7, *shape)
        for row, h in zip(t, has, strict=True):  # real rows carry signal, the rest is zero
            assert bool(row.abs().sum() > 0) == h, (medium, keys)
    assert b["txt"][keys.index("img0")] == "a photo" and b["__has__txt"].sum() == 1


def test_mixing_an_audio_only_dataset_with_image_decoding_on(media_sets):
    ld = Loader([str(media_sets["mixed"]), str(media_sets["audio"])], weights=[0.5, 0.5],
                batch_size=4, seed=1, samples_per_epoch=16, decode=DecodeConfig(
                    image=ImageDecode(resize=FixedResize(size=(16, 16)))))
    mods = {**_modalities(media_sets["mixed"]), **_modalities(media_sets["audio"])}
    seen = []
    for b in ld:
        assert b["__has__image"].tolist() == [mods[k] == "image" for k in b["__key__"]]
        assert "image" in b  # even a batch without any image carries the field
        seen += b["__key__"]
    assert len(seen) == 16 and ld.stats["skipped"] == 0
    assert {mods[k] for k in seen} >= {"image", "audio"}
    with pytest.raises(ConfigError, match="image decoding is on but no sample"):
        Loader(str(media_sets["audio"]), batch_size=2, seed=0, decode=DECODE)


def test_a_sample_that_should_have_its_medium_and_does_not_is_an_error(media_sets,
                                                                       tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(media_sets["mixed"], ds)
    rows = pq.read_table(str(ds / "manifest.parquet")).to_pylist()
    shard = "shards/" + next(r["shard"] for r in rows if r["key"] == "img0") + ".tar"
    assert "jpg" in next(r["fields"] for r in rows if r["key"] == "img0")
    samples = [dict(x) for x in iter_tar(str(ds / shard))]
    with TarWriter(str(ds / shard)) as w:  # img0 loses its jpg; the manifest still lists it
        for x in samples:
            w.write({k: v for k, v in x.items() if not (x["__key__"] == "img0" and k == "jpg")
                     and k != "__url__"})
    with pytest.raises(DataError, match="missing_field"):
        list(Loader(str(ds), batch_size=7, seed=0, shuffle=False, decode=DECODE))
    ld = Loader(str(ds), batch_size=7, seed=0, shuffle=False, decode=DECODE, on_error="skip")
    b = _one_batch(ld)
    assert ld.stats["errors"] == {"missing_field": 1}
    assert b["__pad__"].sum() == 1 and "img0" not in [
        k for k, p in zip(b["__key__"], b["__pad__"].tolist(), strict=True) if not p]



def test_loader_decodes_plugin_image_formats_in_a_fresh_process(tmp_path):
    from mmshard.media.image import register_image_plugins

    if {"pillow_heif", "pillow_jxl"} - set(register_image_plugins()):
        pytest.skip("needs pillow-heif and pillow-jxl-plugin")
    src = tmp_path / "src"
    src.mkdir()
    im = synth.photo_like(32, 24, seed=3)
    for ext, fmt in (("heic", "HEIF"), ("jxl", "JXL"), ("avif", "AVIF"), ("jp2", "JPEG2000")):
        im.save(src / f"p_{ext}.{ext}", format=fmt)
    ingest([str(src)], str(tmp_path / "ds"), IngestConfig(),
           executor=make_executor("local", workers=1))
    code = ("import sys; from mmshard.pipelines.stream.loader import Loader; "
            "from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode, FixedResize; "
            f"ld = Loader({str(tmp_path / 'ds')!r}, batch_size=4, seed=0, shuffle=False, "
            "decode=DecodeConfig(image=ImageDecode(resize=FixedResize(size=(8, 8))))); "
            "b = next(iter(ld)); "
            "print(sorted(b['__key__']), tuple(b['image'].shape), "
            "bool((b['image'].flatten(1).std(1) > 0).all()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == ("['p_avif', 'p_heic', 'p_jp2', 'p_jxl'] "
                                         "(4, 3, 8, 8) True")
