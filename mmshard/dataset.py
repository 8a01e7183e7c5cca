"""The dataset folder contract: ``index.json`` and reading shards back.

``index.json`` is a wids shard index (``__kind__: wids-shard-index-v1``) with mmshard's
extras: per-shard split, size, sha256 and failure counts, the split table, the field
list and the job config.  Shard ``url``s are relative to the folder holding the index.
Sidecar field sets (``mel/``, ``vq/`` ...) have their own ``<field-set>/index.json`` of
the same shape, with the same shard names, keys and key order as the base shards.

>>> idx = DatasetIndex(name="demo", shards=(ShardInfo(url="shards/train-000000.tar",
...     split="train", nsamples=2, filesize=10, sha256="0" * 64),))
>>> DatasetIndex.from_json(idx.to_json()) == idx
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ShardError
from .storage import Storage
from .tario import iter_tar

__all__ = ["FORMAT_VERSION", "Dataset", "DatasetIndex", "ShardInfo", "open_dataset"]

FORMAT_VERSION = 1
INDEX_NAME = "index.json"


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One committed shard: where it is and what it holds."""

    url: str
    split: str
    nsamples: int
    filesize: int
    sha256: str
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    base_sha256: str | None = None  # sidecar shards: sha256 of the base shard it came from


@dataclass(frozen=True, kw_only=True)
class DatasetIndex:
    """The parsed ``index.json`` of a dataset folder or sidecar field set."""

    name: str
    shards: tuple[ShardInfo, ...]
    fields: tuple[str, ...] = ()
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    field_set: str = "shards"
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        doc = {
            "__kind__": "wids-shard-index-v1",
            "wids_version": 1,
            "name": self.name,
            "format": "mmshard",
            "format_version": self.format_version,
            "field_set": self.field_set,
            "fields": list(self.fields),
            "splits": self.splits,
            "shardlist": [{k: v for k, v in dataclasses.asdict(s).items()
                           if not (k == "base_sha256" and v is None)} for s in self.shards],
            "config": self.config,
            "provenance": self.provenance,
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str, *, where: str = "index.json") -> DatasetIndex:
        try:
            doc = json.loads(data)
            version = int(doc.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise ShardError(
                    f"{where} has format_version {version}; this mmshard reads up to "
                    f"{FORMAT_VERSION}: upgrade mmshard"
                )
            shards = tuple(
                ShardInfo(
                    url=s["url"], split=s.get("split", "train"), nsamples=int(s["nsamples"]),
                    filesize=int(s.get("filesize", -1)), sha256=s.get("sha256", ""),
                    failed=int(s.get("failed", 0)), failures=dict(s.get("failures", {})),
                    base_sha256=s.get("base_sha256"),
                )
                for s in doc["shardlist"]
            )
            return cls(
                name=doc.get("name", ""), shards=shards, fields=tuple(doc.get("fields", ())),
                splits=doc.get("splits", {}), config=doc.get("config", {}),
                field_set=doc.get("field_set", "shards"),
                provenance=doc.get("provenance", {}), format_version=version,
            )
        except ShardError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise ShardError(f"{where} is not a valid mmshard/wids index: {e}") from e

    @property
    def num_samples(self) -> int:
        return sum(s.nsamples for s in self.shards)


class Dataset:
    """Read access to a dataset folder made by mmshard (local or fsspec URL).

    >>> ds = open_dataset("out")                               # doctest: +SKIP
    >>> for sample in ds.iter_shard(ds.index.shards[0]):       # doctest: +SKIP
    ...     print(sample["__key__"], sorted(sample))
    """

    def __init__(self, root: str, storage_options: dict | None = None) -> None:
        self.storage = Storage(root, storage_options)
        if not self.storage.exists(INDEX_NAME):
            raise ShardError(
                f"{self.storage.path(INDEX_NAME)} not found: is {root!r} a dataset made by "
                "`mmshard ingest` (and did the job finish)?"
            )
        self.index = DatasetIndex.from_json(
            self.storage.read_bytes(INDEX_NAME), where=self.storage.path(INDEX_NAME)
        )

    @property
    def root(self) -> str:
        return self.storage.root

    def shards(self, split: str | None = None) -> list[ShardInfo]:
        return [s for s in self.index.shards if split is None or s.split == split]

    def shard_url(self, shard: ShardInfo, field_set: str | None = None) -> str:
        """Absolute path/URL of a base shard, or of its sidecar in ``field_set``."""
        if field_set is None or field_set == "shards":
            return self.storage.path(shard.url)
        return self.storage.path(f"{field_set}/{shard.url.rsplit('/', 1)[-1]}")

    def sidecars(self) -> dict[str, DatasetIndex]:
        """Field sets written next to the base shards, by name (``{"mel": index}``)."""
        out: dict[str, DatasetIndex] = {}
        root = self.storage
        for name in root.listdir(""):
            rel = f"{name}/{INDEX_NAME}"
            if name.startswith((".", "_")) or name == "shards" or not root.exists(rel):
                continue
            out[name] = DatasetIndex.from_json(root.read_bytes(rel), where=root.path(rel))
        return out

    def iter_shard(self, shard: ShardInfo, field_set: str | None = None
                   ) -> Iterator[dict[str, Any]]:
        """Samples of one shard as ``{"__key__", "__url__", field: bytes}`` dicts."""
        rel = shard.url if field_set in (None, "shards") else \
            f"{field_set}/{shard.url.rsplit('/', 1)[-1]}"
        with self.storage.open_read(rel) as f:
            yield from iter_tar(f, url=self.storage.path(rel))

    def read_table(self, name: str):
        """``manifest`` or ``ledger`` as a pyarrow Table."""
        import pyarrow.parquet as pq

        rel = f"{name}.parquet"
        if not self.storage.exists(rel):
            raise ShardError(f"{self.storage.path(rel)} not found")
        with self.storage.open_read(rel) as f:
            return pq.read_table(f)


def open_dataset(root: str, storage_options: dict | None = None) -> Dataset:
    """Open a dataset folder made by mmshard.  Raises ShardError if it has no index."""
    return Dataset(root, storage_options)
