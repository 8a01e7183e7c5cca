"""The transform job (``mmshard tokenize`` / ``embed``): base shards -> sidecar field sets.

``fields`` holds the field-set registry and the audio/embedding field sets;
``video_fields`` and ``vision_fields`` register theirs when this package is imported.
"""

from . import video_fields, vision_fields  # noqa: F401  (register frames, keyframes, vq, ...)
from .fields import FIELD_SETS, FieldSet, build_field_set
from .job import TokenizeConfig, TransformResult, tokenize

__all__ = ["FIELD_SETS", "FieldSet", "TokenizeConfig", "TransformResult", "build_field_set",
           "tokenize"]
