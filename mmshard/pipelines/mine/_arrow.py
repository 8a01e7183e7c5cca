"""Arrow arrays from numpy buffers and back, without pyarrow's pandas probe.

``pa.array``, ``pa.table`` and ``Array.to_numpy`` ask whether pandas is installed and
import it to find out (0.8-1.5 s, most of a small mining job's start-up).  The mining
job only moves numeric arrays and string keys, so it builds arrays from their buffers
and reads them back the same way; the Parquet files are the same as with ``pa.array``.

>>> import numpy as np
>>> num_array(np.arange(3)).to_pylist(), str_array(["a", "bé"]).to_pylist()
([0, 1, 2], ['a', 'bé'])
>>> to_numpy(num_array(np.array([1.5, 2.0], np.float32), valid=np.array([True, False])))
array([1.5, nan], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["list_array", "num_array", "str_array", "table", "to_numpy"]


def _bitmap(valid: np.ndarray | None) -> tuple[Any, int]:
    import pyarrow as pa

    if valid is None or bool(np.all(valid)):
        return None, 0
    bits = np.packbits(np.asarray(valid, bool), bitorder="little")
    return pa.py_buffer(bits.tobytes()), int(len(valid) - np.count_nonzero(valid))


def num_array(x: np.ndarray, *, valid: np.ndarray | None = None) -> Any:
    """A 1-D numeric numpy array as an Arrow array; ``valid`` False marks nulls."""
    import pyarrow as pa

    x = np.ascontiguousarray(x)
    if x.ndim != 1:
        raise ValueError(f"num_array takes a 1-D array, got shape {x.shape}")
    bitmap, nulls = _bitmap(valid)
    return pa.Array.from_buffers(pa.from_numpy_dtype(x.dtype), len(x),
                                 [bitmap, pa.py_buffer(x)], null_count=nulls)


def str_array(values: Sequence[Any] | np.ndarray) -> Any:
    """Strings (``str()`` of each value) as an Arrow ``string`` array."""
    import pyarrow as pa

    enc = [str(v).encode("utf-8") for v in values]
    ends = np.cumsum([len(b) for b in enc], dtype=np.int64)
    if len(ends) and ends[-1] >= 2 ** 31:  # past int32 offsets: let pyarrow chunk it
        return pa.array([b.decode() for b in enc], pa.string())
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(enc),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(enc))])


def list_array(offsets: np.ndarray, values: Any) -> Any:
    """A ``list<...>`` array from int32 ``offsets`` (len rows + 1) and flat ``values``."""
    import pyarrow as pa

    return pa.ListArray.from_arrays(num_array(np.asarray(offsets, np.int32)), values)


def table(columns: dict[str, Any]) -> Any:
    """``pa.table(columns)`` for a dict of Arrow arrays."""
    import pyarrow as pa

    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def to_numpy(arr: Any) -> np.ndarray:
    """A numeric Arrow array (or one-chunk ChunkedArray) as numpy; nulls become NaN
    for floats (integer arrays must have none)."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dtype = np.dtype(arr.type.to_pandas_dtype())
    n = len(arr)
    buf = arr.buffers()[1]
    out = (np.frombuffer(buf, dtype, count=n, offset=arr.offset * dtype.itemsize)
           if n else np.zeros(0, dtype))
    if arr.null_count:
        if dtype.kind != "f":
            raise ValueError(f"{arr.type} array has {arr.null_count} nulls")
        valid = np.unpackbits(np.frombuffer(arr.buffers()[0], np.uint8),
                              bitorder="little")[arr.offset:arr.offset + n].astype(bool)
        out = np.where(valid, out, np.nan).astype(dtype)
    return out
