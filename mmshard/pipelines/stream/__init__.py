"""The streaming Loader: plan (main process) -> source (shard reads) -> worker (decode)."""

from .decode import DecodeConfig
from .loader import Loader

__all__ = ["DecodeConfig", "Loader"]
