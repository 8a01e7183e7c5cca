"""Cutting planned clips out of a video: one decoding pass, one libx264 encoder (plus an
AAC encoder for the source's audio) per open clip (see :mod:`mmshard.pipelines.clips.job`
for why clips are re-encoded).

Frames come from :meth:`VideoReader.iter_decoded` (PyAV, the frame-exact index): clip
frame ``k`` is source frame ``start + k`` whatever the container (AVI with packed
B-frames, MPEG-PS/TS with a start offset), and its pts is rebased from the index, so the
muxer always gets increasing timestamps from 0.  Decoding and encoding are
single-threaded and the scaler's flags fixed, so the same input gives the same bytes.

Audio: the first audio stream is decoded alongside, and each clip gets the samples of
its own span ``[start_time, end_time)`` (sample-accurate, relative to the first video
frame), resampled to ``float`` planar and encoded as AAC; ``audio_offset`` in the clip's
facts is where its first sample sits relative to its first frame (0 unless the source's
audio starts late).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from ...errors import DataError
from ...media.video_reader import FileRange, source_handle
from ...tokenizers.clips import Clip
from ..task import av_errors
from .config import ClipsConfig

__all__ = ["cut_clips"]

ENCODER = "libx264"
AUDIO_ENCODER = "aac"


# x264 SIMD levels a clip may use, highest first (numpy's CPU feature name, x264's flags).
# AVX2 / AVX-512 are left out: on the Megamind trailer their routines in the bundled
# libx264 (core 165) read uninitialised memory (valgrind: "use of uninitialised value"
# under x264_encoder_encode) and clips 2-3 changed between clean runs; up to AVX, three
# runs are byte-identical (as with asm=0), and the bytes no longer depend on whether a
# worker's CPU has AVX2 or AVX-512.
_X264_LEVELS = (("AVX", "MMX2,SSE,SSE2,SSE3,SSSE3,SSE4.1,SSE4.2,AVX"),
                ("SSE42", "MMX2,SSE,SSE2,SSE3,SSSE3,SSE4.1,SSE4.2"),
                ("SSE2", "MMX2,SSE,SSE2"))


def x264_asm() -> str | None:
    """The ``asm`` flags libx264 gets: this CPU's x86 SIMD up to AVX (all of which the
    CPU has), or None (x264's own choice) off x86."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as cpu
    except ImportError:  # pragma: no cover - numpy < 2
        return None
    for feature, flags in _X264_LEVELS:
        if all(cpu.get(f) for f in ("SSE", "SSE2", feature)):
            return flags
    return None


def _even(x: float) -> int:
    return max(2, int(x) - int(x) % 2)


class _ClipEncoder:
    """One open clip: an MP4 muxer + libx264 (+ AAC) encoder writing into memory."""

    def __init__(self, clip: Clip, rate: Any, time_base: Any, size: tuple[int, int],
                 config: ClipsConfig, audio: tuple[int, int] | None) -> None:
        import av

        self.clip = clip
        self.buf = io.BytesIO()
        # no creation time, no encoder version string: bytes depend on the input only
        self.out = av.open(self.buf, "w", format="mp4",
                           options={"fflags": "+bitexact"})
        st = self.out.add_stream(ENCODER, rate=rate)
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        st.time_base = time_base
        st.codec_context.time_base = time_base
        opts = {"crf": str(config.crf), "preset": config.preset, "threads": "1",
                "flags": "+bitexact"}
        if config.gop:
            opts.update(g=str(config.gop), keyint_min=str(min(config.gop, 25)))
        asm = x264_asm()
        if asm:
            opts["x264-params"] = f"asm={asm}"
        st.options = opts
        # one x264 thread (frame threads make the bytes depend on timing); PyAV would
        # otherwise set its own thread count over the "threads" option
        st.codec_context.thread_count = 1
        st.codec_context.thread_type = "NONE"
        self.stream = st
        self.time_base = time_base
        self.size = size
        self.frames = 0
        self.pts0: int | None = None
        self.samples: list[np.ndarray] = []
        self.audio = audio  # (sample_rate, channels)
        self.astream = None
        if audio is not None:
            ast = self.out.add_stream(AUDIO_ENCODER, rate=audio[0])
            ast.layout = "stereo" if audio[1] >= 2 else "mono"
            ast.options = {"flags": "+bitexact"}
            self.astream = ast
        self.out.start_encoding()  # every encoder open before the header is written

    def add(self, frame: Any, pts: int) -> None:
        if self.pts0 is None:
            self.pts0 = pts
        w, h = self.size
        f = frame.reformat(width=w, height=h, format="yuv420p", interpolation="BICUBIC")

        f.pts = pts - self.pts0
        # the pts count source ticks: the frame's time base is the codec's (the source's),
        # never the stream's, which the MP4 muxer replaces on start_encoding (1/11988 for
        # a 2997/125 AVI): a frame stamped with it is rescaled to pts 0 for every frame,
        # x264 then sees duplicate timestamps and its rate control varies run to run
        f.time_base = self.time_base
        for p in self.stream.encode(f):
            self.out.mux(p)
        self.frames += 1

    def _encode_audio(self) -> None:
        import av

        sr, ch = self.audio  # type: ignore[misc]
        x = (np.concatenate(self.samples, axis=1) if self.samples
             else np.zeros((ch, 0), np.float32))
        x = np.ascontiguousarray(x[:2] if ch >= 2 else x[:1], np.float32)
        n = x.shape[1]
        step = self.astream.codec_context.frame_size or 1024  # type: ignore[union-attr]
        for s in range(0, n, step):
            part = x[:, s:s + step]
            if part.shape[1] < step:  # the encoder wants full frames but the last
                part = np.pad(part, ((0, 0), (0, step - part.shape[1])))
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp",
                                            layout=self.astream.layout)  # type: ignore
            af.sample_rate = sr
            af.pts = s
            af.time_base = Fraction(1, sr)
            for p in self.astream.encode(af):  # type: ignore[union-attr]
                self.out.mux(p)
        for p in self.astream.encode(None):  # type: ignore[union-attr]
            self.out.mux(p)

    def finish(self) -> bytes:
        for p in self.stream.encode(None):
            self.out.mux(p)
        if self.astream is not None:
            self._encode_audio()
        self.out.close()
        data = self.buf.getvalue()
        self._release()
        return data

    def _release(self) -> None:
        """Drop the muxer and encoders (and the output buffer) as soon as a clip is done:
        a finished clip holds no encoder memory while the next ones run."""
        self.out = self.stream = self.astream = None  # type: ignore[assignment]
        self.buf = io.BytesIO()

    def abort(self) -> None:
        try:
            if self.out is not None:
                self.out.close()
        except Exception:  # noqa: BLE001 - best effort cleanup of a failed clip
            pass
        self._release()


class _Audio:
    """The source's first audio stream, decoded forward once and handed out by time."""

    def __init__(self, video: bytes | FileRange, t0: float) -> None:
        import av

        self.container = av.open(source_handle(video), "r")
        self.stream = self.container.streams.audio[0]
        self.stream.thread_type = "SLICE"
        self.rate = int(self.stream.codec_context.sample_rate or self.stream.rate)
        self.channels = min(2, int(self.stream.codec_context.channels or 1))
        self.t0 = t0  # absolute time of video frame 0
        self.resampler = av.AudioResampler(format="fltp",
                                           layout="stereo" if self.channels == 2 else "mono",
                                           rate=self.rate)
        self.frames = self._decoded()
        self.pos: int | None = None  # next sample's index on the video timeline (0 = t0)
        self.first: int | None = None
        self.done = False
        self.skipped = 0  # packets that did not decode (counted, not fatal)

    def _decoded(self) -> Iterator[Any]:
        """Decoded audio frames; a packet that does not decode is skipped, not the end of
        the track (the Megamind AVI's first AC3 packet is partial: stopping there lost
        the whole soundtrack)."""
        errors = av_errors()
        for packet in self.container.demux(self.stream):
            try:
                yield from self.stream.decode(packet)
            except errors:
                self.skipped += 1
                if self.skipped > 64:
                    return
        try:
            yield from self.stream.decode(None)
        except errors:
            return

    def advance_to(self, t_end: float, active: list[_ClipEncoder]) -> None:
        """Decode until ``t_end`` (video-relative seconds) and give every active clip
        the samples inside its span."""
        end = int(round(t_end * self.rate))
        while not self.done and (self.pos is None or self.pos < end):
            try:
                frame = next(self.frames)
            except (StopIteration, *av_errors()):
                self.done = True
                break
            at = (int(round((float(frame.pts * self.stream.time_base) - self.t0) * self.rate))
                  if frame.pts is not None else None)
            if self.pos is None:
                self.pos = self.first = at if at is not None else 0
            elif at is not None and at - self.pos > max(frame.samples, 1):
                # a skipped packet left a gap: silence keeps later samples at their time
                self._give(np.zeros((self.channels, at - self.pos), np.float32), active)
            for out in self.resampler.resample(frame):
                x = out.to_ndarray().astype(np.float32, copy=False)
                self._give(x, active)

    def _give(self, x: np.ndarray, active: list[_ClipEncoder]) -> None:
        a, b = self.pos, self.pos + x.shape[1]  # type: ignore[operator]
        for enc in active:
            c0 = int(round(enc.clip.start_time * self.rate))
            c1 = int(round(enc.clip.end_time * self.rate))
            lo, hi = max(a, c0), min(b, c1)
            if hi > lo:
                if not enc.samples and lo > c0:
                    enc.samples.append(np.zeros((x.shape[0], lo - c0), np.float32))
                enc.samples.append(x[:, lo - a:hi - a])
        self.pos = b

    def close(self) -> None:
        self.container.close()


def _has_audio(video: bytes | FileRange) -> bool:
    import av

    try:
        with av.open(source_handle(video), "r") as c:
            a = c.streams.audio
            return bool(a) and a[0].codec_context is not None and bool(
                a[0].codec_context.sample_rate)
    except av_errors():
        return False


def cut_clips(video: bytes | FileRange, clips: Sequence[Clip], config: ClipsConfig | None = None
              ) -> Iterator[tuple[Clip, bytes, dict[str, Any]]]:
    """Cut ``clips`` (frame ranges of ``video``) into MP4s in one decoding pass.

    Yields ``(clip, mp4_bytes, facts)`` in clip order as each clip completes; ``facts``
    holds frames, width, height, fps, duration, codec, the decoder and encoder names,
    and ``audio`` (sample rate, channels, offset) when the source has sound.  Frames
    are decoded once, from the first clip's start, in presentation order, and passed to
    every open clip that contains them, so memory holds the open encoders only.
    Raises DataError when the video does not decode or ends before a clip does.

    >>> for clip, mp4, facts in cut_clips(data, plan):          # doctest: +SKIP
    ...     print(clip.key, facts["frames"], len(mp4))
    """
    from ...media.video_reader import VideoReader

    config = config or ClipsConfig()
    order = sorted(clips, key=lambda c: (c.start_frame, c.index))
    if not order:
        return
    need = max(c.end_frame for c in order)
    vr = VideoReader(video, backend="pyav", threads=1)  # bit-exact frames on every run
    meta = vr.meta
    if need > meta.num_frames:
        vr.close()
        raise DataError("undecodable_video", f"the stream has {meta.num_frames} frames, "
                        f"before frame {need} (truncated file?)")
    tb = vr.time_base
    impl = vr._open()
    t0 = float(int(impl._pts[0]) * tb)  # type: ignore[attr-defined]
    decoder = str(impl._stream.codec_context.name)  # type: ignore[attr-defined]
    rate = Fraction(meta.fps).limit_denominator(100000) if meta.fps > 0 else Fraction(25)
    scale = 1.0 if not config.max_side else min(1.0, config.max_side / max(meta.width,
                                                                           meta.height))
    size = (_even(meta.width * scale), _even(meta.height * scale))
    audio = _Audio(video, t0) if _has_audio(video) else None
    a_fmt = (audio.rate, audio.channels) if audio is not None else None
    active: list[_ClipEncoder] = []
    done: dict[int, tuple[Clip, bytes, dict[str, Any]]] = {}
    emit_order = sorted(c.index for c in order)
    nxt_emit, p = 0, 0
    try:
        for i, pts, frame in vr.iter_decoded(order[0].start_frame, need):
            while p < len(order) and order[p].start_frame <= i:
                active.append(_ClipEncoder(order[p], rate, tb, size, config, a_fmt))
                p += 1
            still = []
            for enc in active:
                if enc.clip.start_frame <= i < enc.clip.end_frame:
                    enc.add(frame, pts)
                if i + 1 >= enc.clip.end_frame:
                    c = enc.clip
                    facts: dict[str, Any] = {
                        "frames": enc.frames, "width": size[0], "height": size[1],
                        "fps": round(float(rate), 6),
                        "duration": round(c.end_time - c.start_time, 6), "codec": "h264",
                        "decoder": f"pyav {decoder}", "encoder": ENCODER}
                    if audio is not None:
                        audio.advance_to(c.end_time, active)
                        first = audio.first if audio.first is not None else 0
                        c0 = int(round(c.start_time * audio.rate))
                        facts["audio"] = {
                            "sample_rate": audio.rate, "channels": audio.channels,
                            "encoder": AUDIO_ENCODER,
                            "offset": round(max(0, first - c0) / audio.rate, 6)}
                    done[c.index] = (c, enc.finish(), facts)
                else:
                    still.append(enc)
            active = still
            while nxt_emit < len(emit_order) and emit_order[nxt_emit] in done:
                yield done.pop(emit_order[nxt_emit])
                nxt_emit += 1
    except DataError:
        raise
    except av_errors() as e:
        raise DataError("undecodable_video", f"decoding or encoding failed: {e}") from e
    finally:
        for enc in active:
            enc.abort()
        if audio is not None:
            audio.close()
        vr.close()
