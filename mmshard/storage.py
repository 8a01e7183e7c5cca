"""Output folders on local disk or any fsspec URL, with atomic commits.

Nothing partial is ever visible under a final name: files are written to a temporary
name in the same folder and renamed (local), or written locally and uploaded in one
request to the final name (object stores, where an object appears only when complete).

>>> import tempfile, os
>>> d = Storage(tempfile.mkdtemp())
>>> d.write_bytes("a/b.txt", b"hi")
>>> d.read_bytes("a/b.txt"), d.exists("a/b.txt"), d.exists("a/c.txt")
(b'hi', True, False)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO

from .errors import DataError, JobError

__all__ = ["LOCAL_SCHEMES", "Storage", "file_kind", "is_url", "local_path", "open_input",
           "open_regular"]

LOCAL_SCHEMES = ("file", "local")  # fsspec's names for the local disk


def is_url(path: str) -> bool:
    """True for ``scheme://`` paths other than the local-disk ``file://`` and ``local://``."""
    if "://" not in path:
        return False
    return path.split("://", 1)[0].lower() not in LOCAL_SCHEMES


def local_path(path: str) -> str:
    """``"file:///a/b"`` / ``"local:///a/b"`` -> ``"/a/b"``; other paths unchanged."""
    scheme, sep, rest = path.partition("://")
    return rest if sep and scheme.lower() in LOCAL_SCHEMES else path


_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def file_kind(mode: int) -> str:
    """``"regular file"``, ``"FIFO"``, ``"character device"`` ... for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((name for test, name in _KINDS if test(mode)), "special file")


def open_regular(path: str) -> IO[bytes]:
    """Open a local file for reading only if it is a regular file.

    The open never blocks (``O_NONBLOCK``: a FIFO swapped in after planning opens at once
    instead of waiting for a writer) and the type is checked on the open descriptor
    (``fstat``), so a FIFO, device, socket or directory raises
    ``DataError("not_a_regular_file")`` and no byte of it is read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError("not_a_regular_file",
                            f"{path} is a {file_kind(mode)}, not a regular file; only regular "
                            "files are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _friendly_os_error(e: OSError, what: str) -> JobError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return JobError(f"disk full while writing {what} ({e.strerror}): free space or choose "
                        "another --out; committed shards are kept and a rerun resumes")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return JobError(f"permission denied writing {what}: check the output folder's rights")
    return JobError(f"cannot write {what}: {e}")


class Storage:
    """A dataset folder: ``root`` is a local path or an fsspec URL (``s3://b/ds``)."""

    def __init__(self, root: str, storage_options: dict | None = None) -> None:
        self.root = root.rstrip("/") if root not in ("/",) else root
        self.storage_options = dict(storage_options or {})
        self.local = not is_url(root)
        if self.local:
            self.root = os.path.abspath(local_path(root))
            self._fs = None
        else:
            import fsspec

            self._fs, self._path = fsspec.core.url_to_fs(self.root, **self.storage_options)

    def __reduce__(self):  # picklable into Ray tasks without the live filesystem object
        return (Storage, (self.root, self.storage_options))

    # -- paths -------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """Full path (local) or URL of ``rel`` inside the folder."""
        return os.path.join(self.root, rel) if self.local else f"{self.root}/{rel}"

    def _fspath(self, rel: str) -> str:
        return os.path.join(self.root, rel) if self.local else f"{self._path}/{rel}"

    # -- queries -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.exists(self._fspath(rel))
        return bool(self._fs.exists(self._fspath(rel)))

    def size(self, rel: str) -> int:
        if self.local:
            return os.path.getsize(self._fspath(rel))
        return int(self._fs.size(self._fspath(rel)))

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) of the files directly in ``rel``; [] when it does not exist."""
        p = self._fspath(rel)
        if self.local:
            return sorted(os.listdir(p)) if os.path.isdir(p) else []
        if not self._fs.exists(p):
            return []
        return sorted(x.rstrip("/").rsplit("/", 1)[-1] for x in self._fs.ls(p, detail=False))

    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            with open(self._fspath(rel), "rb") as f:
                return f.read()
        return self._fs.cat_file(self._fspath(rel))

    def open_read(self, rel: str) -> IO[bytes]:
        if self.local:
            return open(self._fspath(rel), "rb")
        return self._fs.open(self._fspath(rel), "rb")

    # -- atomic writes -------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_writer(self, rel: str) -> Iterator[IO[bytes]]:
        """Yield a binary file; on clean exit it appears under ``rel`` all at once.

        On error the temporary is removed and nothing appears.  Disk-full and permission
        errors become a JobError that says so.
        """
        final = self._fspath(rel)
        if self.local:
            folder = os.path.dirname(final)
            try:
                os.makedirs(folder, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            except OSError as e:
                raise _friendly_os_error(e, final) from e
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
            except OSError as e:
                _silent_unlink(tmp)
                raise _friendly_os_error(e, final) from e
            except BaseException:
                _silent_unlink(tmp)
                raise
            return
        # Remote: spool locally, then one upload.  Object stores publish an object only
        # when its upload completes; other filesystems get a temp name + move.
        with tempfile.TemporaryDirectory(prefix="mmshard-up-") as td:
            local_tmp = os.path.join(td, "part")
            with open(local_tmp, "wb") as f:
                yield f
            try:
                if self._fs.protocol in ("s3", "s3a", "gs", "gcs", "az", "abfs") or (
                    isinstance(self._fs.protocol, tuple)
                    and set(self._fs.protocol) & {"s3", "s3a", "gs", "gcs", "az", "abfs"}
                ):
                    self._fs.put_file(local_tmp, final)
                else:
                    parent = final.rsplit("/", 1)[0]
                    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
                    self._fs.makedirs(parent, exist_ok=True)
                    self._fs.put_file(local_tmp, tmp)
                    self._fs.mv(tmp, final)
            except OSError as e:
                raise _friendly_os_error(e, final) from e

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_writer(rel) as f:
            f.write(data)

    def remove(self, rel: str) -> None:
        p = self._fspath(rel)
        if self.local:
            _silent_unlink(p)
        elif self._fs.exists(p):
            self._fs.rm(p)

    def remove_temporaries(self, rel: str) -> int:
        """Delete ``.tmp-*`` leftovers of a killed writer in folder ``rel``; return how many.

        Only safe when no other job writes to this folder (one job per output)."""
        names = [n for n in self.listdir(rel) if n.startswith(".tmp-")]
        for n in names:
            self.remove(f"{rel}/{n}" if rel else n)
        return len(names)

    def remove_tree(self, rel: str) -> None:
        p = self._fspath(rel)
        if self.local:
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        elif self._fs.exists(p):
            self._fs.rm(p, recursive=True)


def _silent_unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def open_input(uri: str, storage_options: dict | None = None) -> IO[bytes]:
    """Open an input for reading: a local path, ``file://``, or any fsspec URL.

    Local inputs must be regular files (see :func:`open_regular`)."""
    if not is_url(uri):
        return open_regular(local_path(uri))
    import fsspec

    return fsspec.open(uri, "rb", **(storage_options or {})).open()
