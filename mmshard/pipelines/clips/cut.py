"""Cutting planned clips out of a video: one decoding pass, one libx264 encoder per open
clip (see :mod:`mmshard.pipelines.clips.job` for why clips are re-encoded)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

from ...errors import DataError
from ...tokenizers.clips import Clip
from ..task import av_errors
from .config import ClipsConfig

__all__ = ["cut_clips"]


def _even(x: float) -> int:
    return max(2, int(x) - int(x) % 2)


class _ClipEncoder:
    """One open clip: an MP4 muxer + libx264 encoder writing into memory."""

    def __init__(self, clip: Clip, rate: Any, time_base: Any, size: tuple[int, int],
                 config: ClipsConfig) -> None:
        import av

        self.clip = clip
        self.buf = io.BytesIO()
        self.out = av.open(self.buf, "w", format="mp4")
        st = self.out.add_stream("libx264", rate=rate)
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        st.time_base = time_base
        st.codec_context.time_base = time_base
        opts = {"crf": str(config.crf), "preset": config.preset, "threads": "1"}
        if config.gop:
            opts.update(g=str(config.gop), keyint_min=str(min(config.gop, 25)))
        st.options = opts
        self.stream = st
        self.size = size
        self.pts0: int | None = None
        self.frames = 0
        self.last_pts = 0

    def add(self, frame: Any, pts: int) -> None:
        if self.pts0 is None:
            self.pts0 = pts
        w, h = self.size
        f = frame.reformat(width=w, height=h, format="yuv420p")
        f.pts = pts - self.pts0
        f.time_base = self.stream.time_base
        self.last_pts = f.pts
        for p in self.stream.encode(f):
            self.out.mux(p)
        self.frames += 1

    def finish(self) -> bytes:
        for p in self.stream.encode(None):
            self.out.mux(p)
        self.out.close()
        return self.buf.getvalue()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - best effort cleanup of a failed clip
            pass


def cut_clips(video: bytes, clips: Sequence[Clip], config: ClipsConfig | None = None
              ) -> Iterator[tuple[Clip, bytes, dict[str, Any]]]:
    """Cut ``clips`` (frame ranges of ``video``) into MP4s in one decoding pass.

    Yields ``(clip, mp4_bytes, facts)`` in clip order as each clip completes; ``facts``
    holds frames, width, height, fps, duration, codec.  Frames are decoded once, in
    presentation order, and passed to every open clip that contains them, so memory
    holds the open encoders only.  Decoding stops after the last clip's last frame.
    Raises DataError when the video does not decode or ends before a clip does.

    >>> for clip, mp4, facts in cut_clips(data, plan):          # doctest: +SKIP
    ...     print(clip.key, facts["frames"], len(mp4))
    """
    import av

    config = config or ClipsConfig()
    order = sorted(clips, key=lambda c: (c.start_frame, c.index))
    if not order:
        return
    need = max(c.end_frame for c in order)
    errors = av_errors()
    try:
        container = av.open(io.BytesIO(video), "r")
    except errors as e:
        raise DataError("undecodable_video", f"cannot open as a video container: {e}") from e
    active: list[_ClipEncoder] = []
    done: dict[int, tuple[Clip, bytes, dict[str, Any]]] = {}
    emit_order = sorted(c.index for c in order)
    nxt_emit = 0
    try:
        if not container.streams.video:
            raise DataError("no_video_stream", "the container has no video stream")
        st = container.streams.video[0]
        st.thread_type = "AUTO"
        tb = st.time_base
        rate = st.average_rate or st.guessed_rate or 25
        w, h = st.codec_context.width, st.codec_context.height
        scale = 1.0 if not config.max_side else min(1.0, config.max_side / max(w, h))
        size = (_even(w * scale), _even(h * scale))
        p = 0
        i = -1
        frames = container.decode(st)
        while i + 1 < need:
            try:
                frame = next(frames)
            except StopIteration:
                raise DataError("undecodable_video", f"the stream ends at frame {i + 1}, "
                                f"before frame {need} (truncated file?)") from None
            except errors as e:
                raise DataError("undecodable_video", f"decoding frame {i + 1} failed: {e}"
                                ) from e
            i += 1
            pts = frame.pts if frame.pts is not None else i
            while p < len(order) and order[p].start_frame <= i:
                active.append(_ClipEncoder(order[p], rate, tb, size, config))
                p += 1
            still = []
            for enc in active:
                enc.add(frame, pts)
                if i + 1 >= enc.clip.end_frame:
                    c = enc.clip
                    data = enc.finish()
                    done[c.index] = (c, data, {
                        "frames": enc.frames, "width": size[0], "height": size[1],
                        "fps": round(float(rate), 6),
                        "duration": round(c.end_time - c.start_time, 6), "codec": "h264"})
                else:
                    still.append(enc)
            active = still
            while nxt_emit < len(emit_order) and emit_order[nxt_emit] in done:
                yield done.pop(emit_order[nxt_emit])
                nxt_emit += 1
    finally:
        for enc in active:
            enc.abort()
        container.close()

