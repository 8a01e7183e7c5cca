import io

import av
import numpy as np
import pytest
import soundfile as sf

from mmshard import synth
from mmshard.errors import DataError
from mmshard.media.audio import AudioOptions, decode_audio, process_audio
from mmshard.media.video import VideoOptions, probe_video, process_video


def wav(x, sr, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


def aac_m4a(seconds=0.5, sr=16000):
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        st = c.add_stream("aac", rate=sr)
        x = synth.tone(seconds, sr)[None, :]
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="mono")
        frame.sample_rate = sr
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode():
            c.mux(p)
    return buf.getvalue()


def test_probe_keep_original():
    data = wav(synth.tone(0.25, 8000), 8000)
    out = process_audio(data, AudioOptions())
    assert out.data is data
    assert out.facts["sample_rate"] == 8000 and out.facts["channels"] == 1
    assert out.facts["duration"] == pytest.approx(0.25)


def test_resample_downmix_flac():
    stereo = np.stack([synth.tone(0.5, 22050, 300), synth.tone(0.5, 22050, 300)], 1)
    out = process_audio(wav(stereo, 22050), AudioOptions(sample_rate=16000, mono=True))
    assert out.field == "flac"
    y, sr = sf.read(io.BytesIO(out.data))
    assert sr == 16000 and y.ndim == 1 and len(y) == 8000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * sr / len(y) - 300) < 4  # the tone survives resampling
    assert out.facts["orig_sample_rate"] == 22050 and out.facts["orig_channels"] == 2


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_decodes_soundfile_formats(fmt):
    x, sr, _ = decode_audio(wav(synth.noise(0.2, 16000), 16000, fmt))
    assert sr == 16000 and abs(x.shape[0] - 3200) <= 1


def test_decodes_aac_through_pyav():
    x, sr, codec = decode_audio(aac_m4a())
    assert sr == 16000 and codec == "aac" and x.shape[0] >= 7000


def test_bad_audio():
    with pytest.raises(DataError) as e:
        process_audio(wav(np.zeros((0, 1), np.float32), 16000), AudioOptions())
    assert e.value.reason == "empty_audio"
    with pytest.raises(DataError) as e:
        process_audio(b"RIFF....WAVEjunk" * 4, AudioOptions())
    assert e.value.reason == "undecodable_audio"
    with pytest.raises(DataError) as e:
        process_audio(wav(synth.tone(0.5, 8000), 8000), AudioOptions(max_duration=0.25))
    assert e.value.reason == "too_long"
    with pytest.raises(DataError) as e:
        process_audio(wav(synth.tone(0.5, 8000), 8000), AudioOptions(min_duration=1.0))
    assert e.value.reason == "too_short"


def test_video_probe_and_limits(tmp_path):
    p = str(tmp_path / "v.mp4")
    synth.write_video(p, frames=25, fps=10, size=(64, 48), cuts=(10,))
    data = open(p, "rb").read()
    facts = probe_video(data)
    assert facts == {"fps": 10.0, "frames": 25, "duration": pytest.approx(2.5, abs=0.11),
                     "width": 64, "height": 48, "codec": "h264"}
    out = process_video(data, VideoOptions())
    assert out.data is data
    with pytest.raises(DataError) as e:
        process_video(data, VideoOptions(max_duration=1.0))
    assert e.value.reason == "too_long"
    for bad in (data[: len(data) // 3], b"", b"\x00" * 100):
        with pytest.raises(DataError) as e:
            probe_video(bad)
        assert e.value.reason in ("undecodable_video", "empty_file")
