"""Shard layout: every shard holds samples with one field set (homogeneous shards).

Readers other than mmshard's assume that the samples of a tar share their members:

- ``ray.data.read_webdataset`` builds one pandas block per tar (up to 512 rows) and casts
  a column whose first row is a decoded image (``jpg``/``png``/``ppm``: a numpy array) to
  its tensor type; a later row without that member holds NaN and the cast fails
  ("Tried to cast column png to the TensorArray ...").
- Hugging Face ``load_dataset("webdataset")`` infers the features from the first five
  samples of the first tar and refuses them unless they have the same members.

So the planner cuts each split into shards of one *layout* at a time: the sorted field
names a sample will have (media fields as they will be stored, plus ``txt`` and ``cls``
when present).  Within a layout samples stay in key order; layouts are taken in sorted
order, so the plan is still a pure function of the inputs and the config.  A
single-modality dataset whose samples all have a caption is one layout: nothing
changes for it.

>>> from mmshard.pipelines.ingest.sources import InputItem
>>> from mmshard.media.image import ImageOptions
>>> from mmshard.media.audio import AudioOptions
>>> it = InputItem(key="a", source="a", media=(("png", "a.png"),), caption="a cat")
>>> layout_of(it, ImageOptions(), AudioOptions())
'json,png,txt'
>>> layout_of(it, ImageOptions(format="jpg"), AudioOptions())
'jpg,json,txt'
"""

from __future__ import annotations

from ...keys import modality_of
from ...media.audio import AudioOptions
from ...media.image import ImageOptions
from .sources import InputItem

__all__ = ["layout_of"]

_REENCODED_IMAGE_FIELDS = ("jpg", "png", "webp")


def _stored_field(field: str, image: ImageOptions, audio: AudioOptions) -> str:
    prefix, _, base = field.rpartition(".")
    modality = modality_of(base)
    if modality == "image" and image.reencodes:
        if image.format != "keep":
            base = image.format
        elif base not in _REENCODED_IMAGE_FIELDS:
            base = "jpg"
    elif modality == "audio" and audio.reencodes:
        base = "flac"
    return f"{prefix}.{base}" if prefix else base


def layout_of(item: InputItem, image: ImageOptions, audio: AudioOptions) -> str:
    """The comma-joined sorted member fields ``item`` is planned to have in its shard."""
    fields = {_stored_field(f, image, audio) for f, _ in item.media}
    fields.add("json")
    if item.caption is not None or any(e == "txt" for e, _ in item.sidecars):
        fields.add("txt")
    if item.label is not None or any(e == "cls" for e, _ in item.sidecars):
        fields.add("cls")
    return ",".join(sorted(fields))
