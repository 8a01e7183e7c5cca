"""Issue 12 item 10: audio cut short is ``truncated``, not an ok row with a shorter duration."""

import io
import subprocess

import numpy as np
import pytest
import soundfile as sf

from mmshard.errors import DataError
from mmshard.media.audio import AudioOptions, process_audio


def encoded(fmt: str, subtype: str | None = None) -> bytes:
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,subtype", [("WAV", None), ("OGG", "VORBIS"), ("OGG", "OPUS"),
                                         ("FLAC", None)])
@pytest.mark.parametrize("opts", [AudioOptions(), AudioOptions(sample_rate=8000)])
def test_half_a_file_is_truncated(fmt, subtype, opts):
    data = encoded(fmt, subtype)
    assert process_audio(data, opts).facts["duration"] == pytest.approx(1.0, abs=0.05)
    with pytest.raises(DataError) as e:
        process_audio(data[: len(data) // 2], opts)
    # FLAC half files do not decode at all (libsndfile and FFmpeg lose sync): never ok
    assert e.value.reason == "truncated" or (fmt == "FLAC" and
                                             e.value.reason == "undecodable_audio")


def test_streamed_wav_with_unknown_size_is_accepted():
    data = bytearray(encoded("WAV"))
    i = data.index(b"data")
    data[i + 4:i + 8] = (0xFFFFFFFF).to_bytes(4, "little")  # what a pipe writer leaves
    assert process_audio(bytes(data), AudioOptions()).facts["frames"] == 16000


def test_ffmpeg_made_ogg_and_wav_are_complete(tmp_path):
    for ext in ("ogg", "wav"):
        out = tmp_path / f"t.{ext}"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5:r=8000",
                        str(out)], check=True)
        data = out.read_bytes()
        assert process_audio(data, AudioOptions()).facts["duration"] == pytest.approx(0.5,
                                                                                      abs=0.05)
        with pytest.raises(DataError, match="truncated"):
            process_audio(data[: len(data) // 2], AudioOptions())
