"""The ingest job: sources (folders, manifests, globs, URLs) -> validated media -> shards.

``job`` plans and commits, ``task`` turns one planned shard into a tar, ``sources``
lists and resolves inputs.
"""

from .job import FailureRateError, IngestConfig, IngestResult, ingest, plan_shards
from .sources import InputItem, SourceOptions, collect_inputs

__all__ = [
    "FailureRateError",
    "IngestConfig",
    "IngestResult",
    "InputItem",
    "SourceOptions",
    "collect_inputs",
    "ingest",
    "plan_shards",
]
