"""Pure, seeded, checkpointable index logic: splits, epoch order, batching, mixing,
frame samplers, hard-negative strategies/curricula and the multi-scale resolution
schedule.  No Ray, no pipelines."""

from .batching import (
                       BucketBatching,
                       CurriculumSelector,
                       FixedBatching,
                       GroupAwareBatching,
                       NegativeCoBatching,
)
from .frames import (
                       FRAME_SAMPLERS,
                       FpsSampler,
                       KeyframeSampler,
                       MotionSampler,
                       StrideSampler,
                       TSNSampler,
                       UniformSampler,
                       build_frame_sampler,
)
from .mixing import Mixing
from .negatives import NEGATIVE_STRATEGIES, NegativeCurriculum, build_strategy
from .order import EpochOrder
from .resolution_schedule import CurriculumStage, MultiScaleConfig, MultiScaleSchedule
from .splits import assign_split, parse_split_spec

__all__ = [
    "BucketBatching", "CurriculumSelector", "CurriculumStage", "EpochOrder", "FRAME_SAMPLERS",
    "FixedBatching", "FpsSampler", "GroupAwareBatching", "KeyframeSampler", "Mixing",
    "MotionSampler", "MultiScaleConfig", "MultiScaleSchedule",
    "NEGATIVE_STRATEGIES", "NegativeCoBatching", "NegativeCurriculum", "StrideSampler",
    "TSNSampler", "UniformSampler", "assign_split", "build_frame_sampler", "build_strategy",
    "parse_split_spec",
]
