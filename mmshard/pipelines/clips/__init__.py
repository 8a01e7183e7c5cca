"""The clips job: the videos of a dataset -> a new dataset of clip samples.

``config`` (ClipsConfig) -> ``plan`` (one video's clips) -> ``cut`` (one decoding pass,
one encoder per open clip) -> ``task`` (one base shard, on the shared task skeleton) ->
``job`` (the driver: plan, tasks, commit).
"""

from .config import ClipsConfig
from .cut import cut_clips
from .job import ClipsResult, extract_clips
from .plan import plan_video_clips

__all__ = ["ClipsConfig", "ClipsResult", "cut_clips", "extract_clips", "plan_video_clips"]
