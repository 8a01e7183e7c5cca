"""Writing a job's artifacts (codebooks, checkpoints, reports, indexes) through
:class:`~mmshard.storage.Storage`, so a local path and an ``s3://`` URL behave alike: the
file appears whole or not at all.

>>> import os, tempfile
>>> out = os.path.join(tempfile.mkdtemp(), "a.bin")
>>> _ = save_artifact(out, lambda p: open(p, "wb").write(b"x"))
>>> open(out, "rb").read()
b'x'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from ..storage import Storage, is_url

__all__ = ["copy_file", "save_artifact", "split_path"]


def split_path(path: str, storage_options: dict | None = None) -> tuple[Storage, str]:
    """``s3://b/x/neg.parquet`` -> (Storage("s3://b/x"), "neg.parquet"); local alike."""
    path = os.fspath(path)
    if is_url(path):
        parent, _, name = path.rpartition("/")
        return Storage(parent, storage_options), name
    path = os.path.abspath(path)
    return Storage(os.path.dirname(path), storage_options), os.path.basename(path)


def copy_file(src: Storage, src_rel: str, dst: Storage, dst_rel: str) -> None:
    """Copy one file between storages (the destination appears atomically)."""
    with src.open_read(src_rel) as fi, dst.atomic_writer(dst_rel) as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)


def save_artifact(out: str, save: Callable[[str], Any],
                  storage_options: dict | None = None) -> str:
    """Run ``save(local_path)`` (a writer that needs a real file name, such as
    safetensors or FAISS) and publish the file at ``out`` atomically; returns ``out``
    as a full path or URL."""
    st, rel = split_path(out, storage_options)
    with tempfile.TemporaryDirectory(prefix="mmshard-art-") as td:
        local = os.path.join(td, rel)
        save(local)
        copy_file(Storage(td), rel, st, rel)
    return st.path(rel)
