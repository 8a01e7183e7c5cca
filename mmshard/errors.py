"""One exception hierarchy for mmshard.

Every message says what failed, the bad value, and the fix.  Errors raised while
handling a sample carry its shard and key and chain the cause (``raise ... from e``).

>>> try:
...     raise ConfigError("split weights must sum to 1, got 0.9 (train=0.8,val=0.1)")
... except MmshardError as e:
...     print(type(e).__name__)
ConfigError
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyMissingError",
    "JobError",
    "MmshardError",
    "ShardError",
    "SourceError",
]


class MmshardError(Exception):
    """Base class of every error mmshard raises on purpose."""


class ConfigError(MmshardError, ValueError):
    """A flag, config field or argument has a value that cannot work."""


class SourceError(MmshardError):
    """A source list, manifest or directory cannot be read or planned (before any work)."""


class DataError(MmshardError):
    """One input's bytes are bad: corrupt, truncated, empty, wrong type, too large.

    ``reason`` is the short machine-readable code written to the ledger
    (``truncated``, ``empty_file``, ``too_many_pixels`` ...); the message is the detail.
    """

    def __init__(self, reason: str, message: str, *, key: str | None = None,
                 shard: str | None = None) -> None:
        self.reason = reason
        self.key = key
        self.shard = shard
        where = "".join(f" [{k}={v}]" for k, v in (("shard", shard), ("key", key)) if v)
        super().__init__(f"{reason}: {message}{where}")


class ShardError(MmshardError):
    """A shard or dataset folder is missing, unreadable or inconsistent."""


class JobError(MmshardError):
    """A job cannot go on: output not writable, disk full, failure rate over the limit."""


class DependencyMissingError(MmshardError, ImportError):
    """An optional dependency needed for the requested feature is not importable."""
