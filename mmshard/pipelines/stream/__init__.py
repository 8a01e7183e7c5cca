"""The streaming Loader: plan (main process) -> source (shard reads) -> worker (decode)."""

from .decode import DecodeConfig
from .loader import Loader
from .packing import PatchPacking

__all__ = ["DecodeConfig", "Loader", "PatchPacking"]
