"""Audio decoding, probing and FLAC re-encoding for ingest (no torchaudio I/O).

Decoding tries soundfile first (wav, flac, ogg/vorbis/opus, mp3: fastest), then PyAV
(aac/m4a and anything FFmpeg reads).  Resampling uses ``torchaudio.functional.resample``.

>>> import io, numpy as np, soundfile as sf
>>> buf = io.BytesIO(); sf.write(buf, np.zeros((8000, 2), "float32"), 8000, format="WAV")
>>> out = process_audio(buf.getvalue(), AudioOptions(sample_rate=16000, mono=True))
>>> out.field, out.facts["sample_rate"], out.facts["channels"], out.facts["duration"]
('flac', 16000, 1, 1.0)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .image import ProcessedMedia

__all__ = ["AudioOptions", "decode_audio", "process_audio"]


@dataclass(frozen=True, kw_only=True)
class AudioOptions:
    """How audio is validated and stored.

    sample_rate: resample to this rate (None keeps the source rate).
    mono: downmix to one channel (mean of channels).
    format: keep (original bytes when nothing changes) | flac.
    min_duration / max_duration: seconds; outside is a ledger row (too_short / too_long).
    """

    sample_rate: int | None = None
    mono: bool = False
    format: str = "keep"
    min_duration: float = 0.0
    max_duration: float | None = None
    flac_subtype: str = "PCM_16"

    def __post_init__(self) -> None:
        if self.format not in ("keep", "flac"):
            raise ConfigError(f"audio format {self.format!r} unknown; allowed: keep, flac")
        if self.sample_rate is not None and not 1000 <= self.sample_rate <= 384000:
            raise ConfigError(f"audio sample_rate must be in 1000..384000, got {self.sample_rate}")
        if self.max_duration is not None and self.max_duration <= self.min_duration:
            raise ConfigError("max_duration must be greater than min_duration")
        if self.flac_subtype not in ("PCM_16", "PCM_24"):
            raise ConfigError(f"flac_subtype must be PCM_16 or PCM_24, got {self.flac_subtype}")

    @property
    def reencodes(self) -> bool:
        return self.sample_rate is not None or self.mono or self.format == "flac"


def _decode_pyav(data: bytes) -> tuple[np.ndarray, int, str]:
    import av

    try:
        with av.open(io.BytesIO(data)) as c:
            if not c.streams.audio:
                raise DataError("no_audio_stream", "container has no audio stream")
            stream = c.streams.audio[0]
            codec = stream.codec_context.name
            chunks = []
            rate = stream.codec_context.sample_rate or stream.rate
            for frame in c.decode(stream):
                arr = frame.to_ndarray()
                if frame.format.is_planar:
                    arr = arr.T  # [samples, channels]
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels))
                chunks.append(arr)
                rate = frame.sample_rate or rate
    except DataError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise DataError("undecodable_audio", f"audio does not decode: {e}") from e
    if not chunks:
        return np.zeros((0, 1), np.float32), int(rate or 0), codec
    x = np.concatenate(chunks).astype(np.float32)
    if np.issubdtype(chunks[0].dtype, np.integer):
        x /= float(np.iinfo(chunks[0].dtype).max) + 1.0
    return x, int(rate), codec


def decode_audio(data: bytes) -> tuple[np.ndarray, int, str]:
    """Decode bytes to ``(float32 [frames, channels], sample_rate, codec)``.

    Raises DataError (``empty_file``, ``undecodable_audio``).
    """
    import soundfile as sf

    if not data:
        raise DataError("empty_file", "zero-byte audio")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            x = f.read(dtype="float32", always_2d=True)
            return x, int(f.samplerate), f.format.lower()
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a libsndfile format: try FFmpeg
    return _decode_pyav(data)


def _truncation(data: bytes) -> str | None:
    """Why a WAV or Ogg file is shorter than its own structure declares, or None.

    WAV: after a ``fmt `` chunk, the ``data`` chunk declares more bytes than the file
    holds (sizes 0 and 0xFFFFFFFF mean "unknown, streamed" and are accepted).  Ogg: the
    last page is cut, or no page carries the end-of-stream flag.  Anything malformed in
    another way is left to the decoder (``undecodable_audio``).
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pos, fmt = 12, False
        while pos + 8 <= len(data):
            cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
            have = len(data) - pos - 8
            if cid == b"data":
                if fmt and size not in (0, 0xFFFFFFFF) and have < size:
                    return f"WAV data chunk declares {size} bytes, the file holds {have}"
                return None
            fmt = fmt or cid == b"fmt "
            pos += 8 + size + (size & 1)
        return None
    if data[:4] == b"OggS":
        pos, flags = 0, 0
        while pos < len(data):
            if data[pos:pos + 4] != b"OggS":
                return None  # not a clean page sequence: the decoder decides
            if pos + 27 > len(data):
                return f"Ogg page at byte {pos} is cut"
            nseg = data[pos + 26]
            seg = data[pos + 27:pos + 27 + nseg]
            end = pos + 27 + nseg + sum(seg)
            if len(seg) < nseg or end > len(data):
                return f"Ogg page at byte {pos} is cut ({len(data) - pos} of {end - pos} bytes)"
            flags, pos = data[pos + 5], end
        if not flags & 4:
            return "Ogg stream has no end-of-stream page"
    return None


def _flac_declared_frames(data: bytes) -> int:
    """Total samples in a FLAC STREAMINFO block (0 = unknown)."""
    if data[:4] != b"fLaC" or len(data) < 8 + 18 or data[4] & 0x7F != 0:
        return 0
    return int.from_bytes(data[8 + 10:8 + 18], "big") & ((1 << 36) - 1)


def process_audio(data: bytes, opts: AudioOptions) -> ProcessedMedia:
    """Validate one audio file; return the original or a FLAC re-encode with its facts.

    Raises DataError with reason ``empty_file``, ``truncated`` (a WAV, Ogg or FLAC file
    shorter than its header declares), ``undecodable_audio``, ``empty_audio``,
    ``too_short`` or ``too_long``.
    """
    cut = _truncation(data)
    if cut:
        raise DataError("truncated", cut)
    x, sr, codec = decode_audio(data)
    declared = _flac_declared_frames(data)
    if declared and x.shape[0] < declared:
        raise DataError("truncated", f"FLAC decodes to {x.shape[0]} frames, its header "
                                     f"declares {declared}")
    if x.shape[0] == 0 or sr <= 0:
        raise DataError("empty_audio", "audio has no frames")
    if not np.isfinite(x).all():
        raise DataError("undecodable_audio", "audio contains NaN or infinite samples")
    duration = x.shape[0] / sr
    if duration < opts.min_duration:
        raise DataError("too_short", f"{duration:.3f} s is below min_duration={opts.min_duration}")
    if opts.max_duration is not None and duration > opts.max_duration:
        raise DataError("too_long", f"{duration:.3f} s is above max_duration={opts.max_duration}")
    facts: dict[str, Any] = {"sample_rate": sr, "channels": int(x.shape[1]),
                             "duration": round(duration, 6), "frames": int(x.shape[0]),
                             "codec": codec}
    if not opts.reencodes:
        return ProcessedMedia(_field_for_codec(codec), data, facts)
    import soundfile as sf

    if opts.mono and x.shape[1] > 1:
        x = x.mean(axis=1, keepdims=True)
    out_sr = opts.sample_rate or sr
    if out_sr != sr:
        import torch
        import torchaudio.functional as AF

        y = AF.resample(torch.from_numpy(np.ascontiguousarray(x.T)), sr, out_sr)
        x = y.T.contiguous().numpy()
    x = np.clip(x, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x, out_sr, format="FLAC", subtype=opts.flac_subtype)
    facts.update(orig_sample_rate=sr, orig_channels=facts["channels"], sample_rate=out_sr,
                 channels=int(x.shape[1]), frames=int(x.shape[0]),
                 duration=round(x.shape[0] / out_sr, 6), codec="flac")
    return ProcessedMedia("flac", buf.getvalue(), facts)


def _field_for_codec(codec: str) -> str:
    c = codec.lower()
    for name, fld in (("flac", "flac"), ("wav", "wav"), ("mp3", "mp3"), ("ogg", "ogg"),
                      ("vorbis", "ogg"), ("opus", "opus"), ("aac", "m4a")):
        if name in c:
            return fld
    return "m4a" if c in ("alac",) else c or "bin"
