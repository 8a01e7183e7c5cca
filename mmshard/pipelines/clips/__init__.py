"""The clips job: the videos of a dataset -> a new dataset of clip samples."""

from .job import ClipsConfig, ClipsResult, cut_clips, extract_clips, plan_video_clips

__all__ = ["ClipsConfig", "ClipsResult", "cut_clips", "extract_clips", "plan_video_clips"]
