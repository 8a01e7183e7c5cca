"""Reading embeddings with their keys: ``.npy`` + keys file, Parquet, ``emb.npy`` shards.

Formats (chosen from the path):

- ``vectors.npy`` (float16/float32/float64, shape (N, d), memory-mapped, never
  pickled) plus a keys file: ``keys=`` or, by default, the first of
  ``<stem>.keys.txt`` (one key per line), ``<stem>.keys.json`` (a list),
  ``<stem>.keys.parquet`` (a ``key`` column) next to it;
- ``table.parquet`` with a string ``key`` column and a ``vector`` column of
  ``list<float>`` / ``fixed_size_list<float>`` (a null vector reads as NaN, so it is
  reported as ``nan_vector`` downstream);
- a folder (or one ``.tar``) of WebDataset sidecar shards whose members are
  ``<key>.emb.npy`` (the ``field``), read in sorted shard order.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> np.save(os.path.join(d, "e.npy"), np.eye(2, dtype="float32"))
>>> _ = open(os.path.join(d, "e.keys.txt"), "w").write("a\\nb\\n")
>>> emb = load_embeddings(EmbeddingSource(path=os.path.join(d, "e.npy")))
>>> emb.keys.tolist(), emb.vectors.shape
(['a', 'b'], (2, 2))
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError, SourceError
from ...tario import split_member_name

__all__ = ["EmbeddingSource", "Embeddings", "load_embeddings", "read_key_table",
           "source_signature"]

_FLOATS = (np.float16, np.float32, np.float64)


@dataclass(frozen=True, kw_only=True)
class EmbeddingSource:
    """Where embeddings are: ``path`` (.npy, .parquet, a shard folder or .tar) and how to
    read them.

    >>> EmbeddingSource(path="emb.parquet", vector_column="emb").vector_column
    'emb'
    """

    path: str
    keys: str | None = None
    key_column: str = "key"
    vector_column: str = "vector"
    field: str = "emb.npy"

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("embedding source path is empty; pass a .npy, .parquet or "
                              "shard folder")

    @property
    def format(self) -> str:
        p = self.path.rstrip("/")
        if p.endswith(".npy"):
            return "npy"
        if p.endswith(".parquet"):
            return "parquet"
        if p.endswith(".tar") or os.path.isdir(p):
            return "shards"
        raise ConfigError(f"cannot tell the embedding format of {self.path!r}; allowed: a .npy "
                          "file (+ keys file), a .parquet file, a shard folder or .tar")


@dataclass
class Embeddings:
    """``keys`` (N,) str array and ``vectors`` (N, d) (possibly a read-only memmap)."""

    keys: np.ndarray
    vectors: np.ndarray
    source: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def source_signature(source: EmbeddingSource) -> dict[str, Any]:
    """Cheap identity of the input files (path, size, mtime), for resume checks."""
    paths = [source.path]
    if source.format == "npy":
        paths.append(_keys_path(source))
    elif source.format == "shards":
        paths = _shard_paths(source.path)
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return {"files": out, "key_column": source.key_column,
            "vector_column": source.vector_column, "field": source.field}


def _keys_path(source: EmbeddingSource) -> str:
    if source.keys:
        if not os.path.exists(source.keys):
            raise SourceError(f"keys file {source.keys} does not exist")
        return source.keys
    stem = source.path[: -len(".npy")]
    tried = [f"{stem}.keys.{ext}" for ext in ("txt", "json", "parquet")]
    for t in tried:
        if os.path.exists(t):
            return t
    raise SourceError(f"no keys file for {source.path}: tried {', '.join(tried)}; pass "
                      "keys=... (--query-keys/--corpus-keys)")


def read_key_table(path: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of a Parquet or CSV table as string arrays (missing column -> ConfigError).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w").write("key,group\\na,1\\nb,1\\n")
    >>> read_key_table(p, ["key", "group"])["group"].tolist()
    ['1', '1']
    """
    if not os.path.exists(path):
        raise SourceError(f"table {path} does not exist")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif path.endswith(".csv"):
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
            column_types={c: "string" for c in columns}))
    else:
        raise ConfigError(f"table {path} must be .parquet or .csv")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(f"table {path} lacks column(s) {missing}; it has "
                          f"{table.column_names}")
    out = {}
    for c in columns:
        col = table.column(c).to_pylist()
        out[c] = np.array(["" if v is None else str(v) for v in col], dtype=object)
    return out


def _read_keys(path: str) -> np.ndarray:
    if path.endswith(".json"):
        with open(path) as f:
            keys = json.load(f)
        if not isinstance(keys, list):
            raise SourceError(f"keys file {path} must hold a JSON list of strings")
    elif path.endswith(".parquet"):
        keys = list(read_key_table(path, ["key"])["key"])
    else:
        with open(path, encoding="utf-8") as f:
            keys = [line.rstrip("\r\n") for line in f]
        if keys and keys[-1] == "":
            keys.pop()
    return np.array([str(k) for k in keys], dtype=object)


def _check_vectors(arr: np.ndarray, where: str) -> None:
    if arr.ndim != 2:
        raise SourceError(f"embeddings in {where} must be 2-D (N, d), got shape {arr.shape}")
    if arr.dtype.type not in _FLOATS:
        raise SourceError(f"embeddings in {where} must be float16/32/64, got {arr.dtype}")


def _load_npy(source: EmbeddingSource) -> Embeddings:
    try:
        arr = np.load(source.path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SourceError(f"cannot read {source.path} as a .npy array: {e}") from e
    _check_vectors(arr, source.path)
    kp = _keys_path(source)
    keys = _read_keys(kp)
    if len(keys) != arr.shape[0]:
        raise SourceError(f"{kp} has {len(keys)} keys but {source.path} has {arr.shape[0]} "
                          "rows; they must match one to one")
    return Embeddings(keys=keys, vectors=arr, source=source.path)


def _load_parquet(source: EmbeddingSource) -> Embeddings:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(source.path, columns=[source.key_column, source.vector_column])
    except (KeyError, pa.ArrowInvalid) as e:
        raise SourceError(f"cannot read columns {source.key_column!r}, "
                          f"{source.vector_column!r} from {source.path}: {e}") from e
    keys = np.array([str(k) for k in table.column(source.key_column).to_pylist()], dtype=object)
    col = table.column(source.vector_column).combine_chunks()
    n = len(col)
    if n == 0:
        return Embeddings(keys=keys, vectors=np.zeros((0, 0), np.float32), source=source.path)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)):
        raise SourceError(f"column {source.vector_column!r} of {source.path} must be a list of "
                          f"floats, got {col.type}")
    valid = np.asarray(col.is_valid())
    lengths = np.asarray(pc.fill_null(pc.list_value_length(col), 0))
    dims = set(lengths[valid].tolist())
    if len(dims) > 1:
        raise SourceError(f"vectors in {source.path} have different lengths {sorted(dims)[:5]}; "
                          "all rows need one dimension")
    d = dims.pop() if dims else 0
    out = np.full((n, d), np.nan, dtype=np.float32)
    if valid.any():
        flat = np.asarray(pc.list_flatten(col.filter(pa.array(valid))).to_numpy(
            zero_copy_only=False), dtype=np.float32)
        out[valid] = flat.reshape(-1, d)
    return Embeddings(keys=keys, vectors=out, source=source.path)


def _shard_paths(path: str) -> list[str]:
    if path.endswith(".tar"):
        return [path]
    paths = sorted(glob.glob(os.path.join(path, "**", "*.tar"), recursive=True))
    if not paths:
        raise SourceError(f"no .tar shards under {path}")
    return paths


def _load_shards(source: EmbeddingSource) -> Embeddings:
    keys: list[str] = []
    rows: list[np.ndarray] = []
    for p in _shard_paths(source.path):
        with tarfile.open(p) as tf:
            for m in tf:
                if not m.isfile():
                    continue
                key, fld = split_member_name(m.name, shard=p)  # refuses ../, /, bad keys
                if fld != source.field:
                    continue
                data = tf.extractfile(m)
                assert data is not None
                try:
                    v = np.load(io.BytesIO(data.read()), allow_pickle=False)
                except ValueError as e:
                    raise SourceError(f"member {m.name} of {p} is not a plain .npy: {e}") from e
                keys.append(key)
                rows.append(np.asarray(v, dtype=np.float32).reshape(-1))
    if rows and len({r.shape[0] for r in rows}) > 1:
        raise SourceError(f"{source.field} members under {source.path} have different "
                          "dimensions")
    vec = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    return Embeddings(keys=np.array(keys, dtype=object), vectors=vec, source=source.path)


def load_embeddings(source: EmbeddingSource) -> Embeddings:
    """Read keys and vectors (see the module docstring for formats)."""
    if not os.path.exists(source.path):
        raise SourceError(f"embeddings {source.path} do not exist")
    fmt = source.format
    if fmt == "npy":
        return _load_npy(source)
    if fmt == "parquet":
        return _load_parquet(source)
    return _load_shards(source)
