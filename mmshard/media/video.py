"""Video probing and validation for ingest (PyAV; bytes are kept as they are).

``probe_video`` demuxes every packet (cheap: no decoding) to count frames exactly and
decodes the first frame to prove the stream decodes.

>>> facts = probe_video(b"not a video")                      # doctest: +SKIP
Traceback (most recent call last):
DataError: undecodable_video: ...
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import ConfigError, DataError
from .image import ProcessedMedia

__all__ = ["VideoOptions", "probe_video", "process_video"]


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    """How videos are validated: ``max_duration`` in seconds (None: no limit)."""

    max_duration: float | None = None
    min_duration: float = 0.0

    def __post_init__(self) -> None:
        if self.max_duration is not None and self.max_duration <= self.min_duration:
            raise ConfigError("video max_duration must be greater than min_duration")


def probe_video(data: bytes) -> dict[str, Any]:
    """fps, frames, duration, width, height, codec of the first video stream.

    Raises DataError: ``empty_file``, ``undecodable_video``, ``no_video_stream``.
    """
    import av

    if not data:
        raise DataError("empty_file", "zero-byte video")
    try:
        with av.open(io.BytesIO(data)) as c:
            if not c.streams.video:
                raise DataError("no_video_stream", "container has no video stream")
            st = c.streams.video[0]
            cc = st.codec_context
            codec = cc.name
            frames = 0
            first_decoded = False
            last_pts = None
            for packet in c.demux(st):
                if packet.size == 0:
                    continue
                frames += 1
                if packet.pts is not None:
                    last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
                if not first_decoded:
                    if packet.decode():
                        first_decoded = True
            if not first_decoded:
                # Some codecs buffer: flush the decoder before calling the file broken.
                first_decoded = bool(cc.decode(None)) if frames else False
            rate = st.average_rate or st.guessed_rate or Fraction(0)
            fps = float(rate) if rate else 0.0
            if st.duration is not None and st.time_base is not None:
                duration = float(st.duration * st.time_base)
            elif c.duration is not None:
                duration = c.duration / 1_000_000
            elif fps:
                duration = frames / fps
            else:
                duration = 0.0
            width, height = cc.width, cc.height
    except DataError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as e:
        raise DataError("undecodable_video", f"video does not open: {e}") from e
    if frames == 0 or not first_decoded:
        raise DataError("undecodable_video", f"no decodable frames ({codec}, {frames} packets)")
    if duration <= 0 and fps:
        duration = frames / fps
    return {"fps": round(fps, 6), "frames": frames, "duration": round(duration, 6),
            "width": int(width), "height": int(height), "codec": codec}


def process_video(data: bytes, opts: VideoOptions, field: str = "mp4") -> ProcessedMedia:
    """Probe one video and keep its bytes; DataError ``too_long``/``too_short`` on limits."""
    facts = probe_video(data)
    d = facts["duration"]
    if opts.max_duration is not None and d > opts.max_duration:
        raise DataError("too_long", f"{d:.3f} s is above max_duration={opts.max_duration}")
    if d < opts.min_duration:
        raise DataError("too_short", f"{d:.3f} s is below min_duration={opts.min_duration}")
    return ProcessedMedia(field, data, facts)
