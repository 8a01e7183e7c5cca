"""Planning one video's clips: probe it, then a fixed-window or scene planner."""

from __future__ import annotations

from typing import Any

from ...errors import DataError
from ...media.video_reader import FileRange
from ...tokenizers.clips import Clip, FixedWindowPlanner
from .config import ClipsConfig

__all__ = ["plan_video_clips"]


def plan_video_clips(key: str, video: bytes | FileRange, config: ClipsConfig,
                     kf: dict[str, Any] | None = None) -> tuple[list[Clip], dict[str, Any]]:
    """Probe ``video`` and plan its clips: ``(clips, facts)``.

    ``facts`` holds fps, num_frames, duration, width, height, codec and whether the
    scenes came from a sidecar (``scenes_from``).  Raises DataError for undecodable
    video or a ``kf`` dict that does not fit it.

    >>> clips, facts = plan_video_clips("v", open("v.mp4", "rb").read(),
    ...                                 ClipsConfig(window_s=2.0))   # doctest: +SKIP
    """
    from ...media.video_reader import VideoReader

    with VideoReader(video, backend="pyav") as vr:
        meta = vr.meta
        ts = vr.timestamps()
        facts = {"fps": round(meta.fps, 6), "num_frames": meta.num_frames,
                 "duration": round(meta.duration, 6), "width": meta.width,
                 "height": meta.height, "codec": meta.codec, "is_vfr": meta.is_vfr}
        planner = config.planner()
        if isinstance(planner, FixedWindowPlanner):
            return planner.plan(key, num_frames=meta.num_frames, fps=meta.fps,
                                timestamps=ts), facts
        if kf is None:
            from ...tokenizers.keyframes import KeyframeDetector

            kf, _ = KeyframeDetector(config.detector).detect(vr)
            facts["scenes_from"] = "detector"
        else:
            facts["scenes_from"] = "sidecar"
            if int(kf.get("num_frames", -1)) != meta.num_frames:
                raise DataError("bad_keyframes", f"kf.json counts {kf.get('num_frames')} "
                                f"frames, the video has {meta.num_frames}; recompute the "
                                "keyframes sidecar")
    return planner.plan(key, kf, timestamps=ts), facts

