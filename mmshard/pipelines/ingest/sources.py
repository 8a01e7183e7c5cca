"""Turn source arguments into a sorted list of inputs (one input = one future sample).

Sources: directory trees (media files plus sidecar ``.txt`` caption, ``.json`` metadata
and ``.cls`` label sharing the stem; files sharing a stem form one multi-media sample),
CSV/TSV/JSONL/Parquet manifests, glob patterns, single files, and fsspec URLs (``s3://``,
``http(s)://`` ...) for any of those.  Nothing is read here but listings, manifests and
file sizes; media bytes are read by the shard tasks.

Each :class:`InputItem` knows its key, media ``(field, uri)`` pairs, caption, label,
group and metadata.  Rows that can be rejected without reading carry a planned ``error``
and still end as a ledger row: a path (media or sidecar, tree or manifest) whose real
path leaves its source root, a symbolic link unless ``follow_symlinks`` (and then only
links that stay inside the root), a URL whose scheme is not in ``allow_schemes``
(``unsafe_path``); a FIFO, device, socket or directory where a file was expected
(``not_a_regular_file``); a missing local file (``missing_file``).  ``file://`` and
``local://`` rows are local paths and obey the root like any other.  See docs/security.md.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import posixpath
import re
import stat
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigError, SourceError
from ...keys import KEY_RE, TEXT_SIDECARS, disambiguate_key, hash_key, media_field, path_key
from ...storage import LOCAL_SCHEMES, file_kind, is_url, local_path
from .captions import REPEATED_PATHS, resolve_repeated

__all__ = ["InputItem", "SourceOptions", "collect_inputs"]

MANIFEST_EXTS = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
DEFAULT_PATH_COLUMNS = ("path", "url", "file", "filepath", "image", "audio", "video",
                        "image_path", "audio_path", "video_path", "media")
DEFAULT_CAPTION_COLUMNS = ("caption", "text", "txt")
DEFAULT_LABEL_COLUMNS = ("label", "cls")
DEFAULT_SCHEMES = ("http", "https", "s3", "gs", "az")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")


@dataclass(frozen=True, kw_only=True)
class SourceOptions:
    """How sources map to keys, groups and fields (part of the job config)."""

    root: str | None = None
    key_column: str | None = None
    key_scheme: str = "path"
    path_columns: tuple[str, ...] = ()
    caption_column: str | None = None
    label_column: str | None = None
    group_column: str | None = None
    group_level: int | None = None
    group_regex: str | None = None
    follow_symlinks: bool = False
    allow_schemes: tuple[str, ...] = DEFAULT_SCHEMES
    repeated_paths: str = "error"  # manifest rows naming the same media: captions.py

    def __post_init__(self) -> None:
        if self.repeated_paths not in REPEATED_PATHS:
            raise ConfigError(f"repeated_paths {self.repeated_paths!r} unknown; allowed: "
                              f"{', '.join(REPEATED_PATHS)}")
        if self.key_scheme not in ("path", "hash"):
            raise ConfigError(f"key_scheme {self.key_scheme!r} unknown; allowed: path, hash")
        if isinstance(self.allow_schemes, str):
            object.__setattr__(self, "allow_schemes", tuple(
                x.strip() for x in self.allow_schemes.split(",") if x.strip()))
        schemes = tuple(str(x).lower() for x in self.allow_schemes)
        bad = [x for x in schemes if not _SCHEME_RE.match(x) or x in LOCAL_SCHEMES]
        if bad:
            raise ConfigError(f"allow_schemes {bad} invalid: give remote URL schemes such as "
                              f"{', '.join(DEFAULT_SCHEMES)} (file:// and local:// are local "
                              "paths and always obey --root)")
        object.__setattr__(self, "allow_schemes", schemes)
        given = [n for n, v in (("group_column", self.group_column),
                                ("group_level", self.group_level),
                                ("group_regex", self.group_regex)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"give at most one of group_column/group_level/group_regex, "
                              f"got {given}")
        if self.group_level is not None and self.group_level < 0:
            raise ConfigError(f"group_level must be >= 0, got {self.group_level}")
        if self.group_regex is not None:
            try:
                re.compile(self.group_regex)
            except re.error as e:
                raise ConfigError(f"group_regex {self.group_regex!r} is not a regex: {e}") from e


@dataclass(frozen=True, kw_only=True)
class InputItem:
    """One planned sample.  ``source`` is its identity (relative path stem or URI)."""

    key: str
    source: str
    media: tuple[tuple[str, str], ...]
    sidecars: tuple[tuple[str, str], ...] = ()
    caption: str | None = None
    label: str | None = None
    label_id: int | None = None  # set at plan time from the label vocabulary (labels.py)
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    error: tuple[str, str] | None = None


# ---------------------------------------------------------------------------- helpers
def _keyify(identity: str, scheme: str) -> str:
    return hash_key(identity) if scheme == "hash" else path_key(identity)


def _group_for(rel: str, key: str, opts: SourceOptions) -> str:
    if opts.group_level is not None:
        parts = [p for p in rel.split("/") if p]
        dirs = parts[:-1]
        return dirs[opts.group_level] if opts.group_level < len(dirs) else key
    if opts.group_regex is not None:
        m = re.search(opts.group_regex, rel)
        if not m:
            return key
        return m.group(1) if m.groups() else m.group(0)
    return key


def _split_name(name: str) -> tuple[str, str]:
    """``"a.b.JPG"`` -> ``("a.b", "jpg")``."""
    stem, dot, ext = name.rpartition(".")
    return (stem, ext.lower()) if dot and stem else (name, "")


def _list_files(src: str) -> tuple[str, list[tuple[str, int]]]:
    """(root, [(path, size)]) for a directory tree, glob pattern or single file."""
    if is_url(src):
        import fsspec

        fs, path = fsspec.core.url_to_fs(src)
        proto = src.split("://", 1)[0]
        if any(c in path for c in "*?["):
            root = path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
            found = fs.glob(path, detail=True)
        elif fs.isdir(path):
            root = path.rstrip("/")
            found = fs.find(path, detail=True)
        elif fs.exists(path):
            root = path.rsplit("/", 1)[0]
            found = {path: fs.info(path)}
        else:
            raise SourceError(f"source {src!r} does not exist")
        files = [(f"{proto}://{p}" if not p.startswith(proto) else p, int(i.get("size") or 0))
                 for p, i in sorted(found.items()) if i.get("type") != "directory"]
        return f"{proto}://{root}", files
    if any(c in src for c in "*?["):
        root = src.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
        root = root if root.endswith("/") else os.path.dirname(root)
        paths = sorted(p for p in globlib.glob(src, recursive=True) if not os.path.isdir(p))
        if not paths:
            raise SourceError(f"glob {src!r} matched no files")
        return os.path.abspath(root or "."), [(os.path.abspath(p), _size(p)) for p in paths]
    if os.path.isdir(src):
        files = []
        for d, dirs, names in os.walk(src):
            dirs.sort()
            for n in sorted(names):  # FIFOs, sockets, links too: checked by _tree_items
                p = os.path.join(d, n)
                files.append((os.path.abspath(p), _size(p)))
        return os.path.abspath(src), files
    if os.path.lexists(src):  # one file named on the command line: trusted, links resolved
        p = os.path.realpath(src)
        return os.path.dirname(p), [(p, _size(p))]
    raise SourceError(f"source {src!r} does not exist (not a file, folder, glob or URL)")


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or os.path.commonpath([real, real_root]) == real_root


def check_local_path(path: str, root: str, follow_symlinks: bool) -> tuple[str, str] | None:
    """None when ``path`` may be read as an input of the source rooted at ``root``; else
    the planned ``(reason, detail)``: ``unsafe_path`` (its real path leaves the root, or it
    goes through a symbolic link and ``follow_symlinks`` is off), ``missing_file``, or
    ``not_a_regular_file`` (FIFO, device, socket, directory).  Nothing is opened."""
    path = os.path.abspath(path)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not _inside(real, real_root):
        return ("unsafe_path", f"{path} resolves to {real}, outside the source root {root}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ("missing_file", f"{path} does not exist")
    except OSError as e:
        return ("read_error", f"cannot stat {path}: {e}")
    plain = os.path.normpath(os.path.join(real_root, os.path.relpath(path, os.path.abspath(root))))
    if real != plain:  # some component of the path is a symbolic link
        if not follow_symlinks:
            return ("unsafe_path", f"{path} is or goes through a symbolic link (to {real}); "
                                   "pass --follow-symlinks to allow links that stay inside "
                                   "the source root")
        try:
            st = os.stat(path)
        except OSError as e:
            return ("missing_file", f"{path} is a broken link: {e}")
    if not stat.S_ISREG(st.st_mode):
        return ("not_a_regular_file", f"{path} is a {file_kind(st.st_mode)}, not a regular "
                                      "file; only regular files are read")
    return None


def _size(p: str) -> int:
    try:
        st = os.stat(p)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    except OSError:
        return 0


def _rel(path: str, root: str) -> str:
    if is_url(root):
        return path[len(root):].lstrip("/")
    return os.path.relpath(path, root).replace(os.sep, "/")


# ---------------------------------------------------------------------- tree sources
def _tree_items(src: str, opts: SourceOptions, ignored: list[str]) -> list[InputItem]:
    root, files = _list_files(src)
    stems: dict[str, dict[str, tuple[str, int]]] = defaultdict(dict)
    for path, size in files:
        rel = _rel(path, root)
        d, _, name = rel.rpartition("/")
        if name.startswith("."):
            continue
        stem, ext = _split_name(name)
        stems[f"{d}/{stem}" if d else stem][ext] = (path, size)
    items = []
    for ident in sorted(stems):
        exts = stems[ident]
        sniffed = {e: _sniff_unknown(p, root, opts) for e, (p, _) in exts.items()
                   if not media_field(e) and e not in TEXT_SIDECARS}  # by magic bytes
        media = [(media_field(e) or sniffed[e], p) for e, (p, _) in exts.items()
                 if media_field(e) or sniffed.get(e)]
        side = [(e, p) for e, (p, _) in exts.items() if e in TEXT_SIDECARS]
        other = [p for e, (p, _) in exts.items() if e in sniffed and not sniffed[e]]
        error = None
        if media and not is_url(root):  # media first, then sidecars: the first problem wins
            error = next(filter(None, (check_local_path(p, root, opts.follow_symlinks)
                                       for p in sorted(p for _, p in media) +
                                       sorted(p for _, p in side))), None)
        ignored.extend(other)
        if not media:
            ignored.extend(p for _, p in side)
            continue
        fields = [f for f, _ in media]
        if len(set(fields)) != len(fields):  # cat.jpg + cat.jpeg: keep both, as 1.jpg
            seen: dict[str, int] = {}
            renamed = []
            for f, p in sorted(media, key=lambda x: x[1]):
                n = seen.get(f, 0)
                seen[f] = n + 1
                renamed.append((f if n == 0 else f"{n}.{f}", p))
            media = renamed
        key = _keyify(ident, opts.key_scheme)
        items.append(InputItem(
            key=key, source=(root + "/" + ident) if is_url(root) else os.path.join(root, ident),
            media=tuple(sorted(media)), sidecars=tuple(sorted(side)),
            group=_group_for(ident, key, opts),
            size=0 if error else sum(s for _, s in exts.values()), error=error,
        ))
    return items


def _sniff_unknown(path: str, root: str, opts: SourceOptions) -> str | None:
    """The media field of a file whose extension names no medium, from its first bytes
    (None: not media, or not safe to open, which the caller then ignores)."""
    from ...media.sniff import sniff_file

    if not is_url(root) and check_local_path(path, root, opts.follow_symlinks) is not None:
        return None
    return sniff_file(path)


def _no_media_error(src: str, ignored: list[str]) -> SourceError:
    shown = ", ".join(os.path.basename(p) for p in ignored[:3])
    return SourceError(
        f"source {src!r} holds no media: {len(ignored)} file(s) there are neither image, "
        f"audio nor video by extension or content{f' (e.g. {shown})' if shown else ''}; "
        "give a folder, glob or manifest of media files (supported: mmshard.keys."
        "IMAGE_EXTS, AUDIO_EXTS, VIDEO_EXTS)")


# ------------------------------------------------------------------ manifest sources
def _read_manifest(src: str):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    from ...storage import open_input

    lower = src.lower().split("?", 1)[0]
    try:
        with open_input(src) as f:
            if lower.endswith(".parquet"):
                return pq.read_table(f)
            if lower.endswith((".jsonl", ".ndjson")):
                return pajson.read_json(f)
            delim = "\t" if lower.endswith(".tsv") else ","
            return pacsv.read_csv(
                f, parse_options=pacsv.ParseOptions(delimiter=delim),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except FileNotFoundError as e:
        raise SourceError(f"manifest {src!r} not found") from e
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise SourceError(f"cannot read manifest {src!r}: {e}") from e


def _pick(columns: list[str], explicit: str | None, defaults: tuple[str, ...], what: str,
          src: str) -> str | None:
    if explicit is not None:
        if explicit not in columns:
            raise SourceError(f"manifest {src!r} has no {what} column {explicit!r}; "
                              f"columns: {', '.join(columns)}")
        return explicit
    return next((c for c in defaults if c in columns), None)


def _scheme_error(path: str, opts: SourceOptions) -> tuple[str, str] | None:
    """A planned error for a remote URL row whose scheme is not allowed (or chained)."""
    if "::" in path:
        return ("unsafe_path", f"{path!r} is a chained fsspec URL; manifests may name plain "
                               "URLs only")
    scheme = path.split("://", 1)[0].lower()
    if scheme not in opts.allow_schemes:
        return ("unsafe_path", f"URL scheme {scheme!r} of {path!r} is not allowed; allowed: "
                               f"{', '.join(opts.allow_schemes)} (add it with --allow-schemes)")
    return None


def _resolve(path: str, root: str, opts: SourceOptions) -> tuple[str, tuple[str, str] | None]:
    """Absolute path for a manifest entry, or a planned error (see the module doc)."""
    if is_url(path):
        return path, _scheme_error(path, opts)
    path = local_path(path)  # file:// and local:// rows are local paths under the root too
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))
    return full, check_local_path(full, root, opts.follow_symlinks)


@dataclass(frozen=True)
class ManifestColumns:
    """Which columns of one manifest mean what (decided once from its column names)."""

    src: str
    root: str
    path_cols: tuple[str, ...]
    key_col: str | None
    cap_col: str | None
    lab_col: str | None
    grp_col: str | None
    meta_cols: tuple[str, ...]


def manifest_columns(src: str, cols: list[str], opts: SourceOptions) -> ManifestColumns:
    """The column roles of manifest ``src`` with columns ``cols`` (SourceError if a
    named column is missing or no path column exists)."""
    if opts.path_columns:
        missing = [c for c in opts.path_columns if c not in cols]
        if missing:
            raise SourceError(f"manifest {src!r} has no path column(s) {missing}; "
                              f"columns: {', '.join(cols)}")
        path_cols = list(opts.path_columns)
    else:
        first = next((c for c in DEFAULT_PATH_COLUMNS if c in cols), None)
        if first is None:
            raise SourceError(f"manifest {src!r} has no path/url column; columns: "
                              f"{', '.join(cols)}; name one with --path-column")
        path_cols = [first]
    key_col = _pick(cols, opts.key_column, (), "key", src)
    cap_col = _pick(cols, opts.caption_column, DEFAULT_CAPTION_COLUMNS, "caption", src)
    lab_col = _pick(cols, opts.label_column, DEFAULT_LABEL_COLUMNS, "label", src)
    grp_col = _pick(cols, opts.group_column, (), "group", src)
    used = set(path_cols) | {c for c in (key_col, cap_col, lab_col, grp_col) if c}
    if is_url(src):
        root = opts.root or src.rsplit("/", 1)[0]
    else:
        root = os.path.abspath(opts.root or os.path.dirname(os.path.abspath(src)))
    return ManifestColumns(src, root, tuple(path_cols), key_col, cap_col, lab_col, grp_col,
                           tuple(c for c in cols if c not in used))


def manifest_row(row: dict[str, Any], i: int, mc: ManifestColumns, opts: SourceOptions
                 ) -> InputItem:
    """Row ``i`` (a dict of column values) of a manifest as an input (its key not yet
    checked: see :func:`bad_key`)."""
    src, root = mc.src, mc.root
    root_url = is_url(root)
    media, error, size, ident, ident_url, parts = [], None, 0, None, False, None
    for c in mc.path_cols:
        p = row.get(c)
        if p is None or str(p) == "":
            continue
        p = str(p)
        full, err = (urljoin_root(p, root, opts) if root_url else _resolve(p, root, opts))
        error = error or err
        url = is_url(full)
        split = urlsplit(full) if url else None
        name = split.path if split is not None else full
        fld = media_field(_split_name(name.rsplit("/", 1)[-1])[1]) or "auto"
        if media and fld in [f for f, _ in media]:
            fld = f"{c}.{fld}" if re.match(r"^[a-z0-9_]+$", c) else fld
        media.append((fld, full))
        if not url and err is None:
            size += _size(full)
        if ident is None:
            ident, ident_url, parts = (full, True, split) if url else \
                (os.path.relpath(full, root), False, None)
    ident_stem = _stem_identity(ident, parts) if media else None
    if not media:
        media, ident = [("auto", "")], f"{os.path.basename(src)}#row{i}"
        ident_stem = ident  # no file name to take a stem of
        error = error or ("missing_path", f"row {i} of {src} has an empty path")
    if mc.key_col:
        key = str(row[mc.key_col])
    else:
        key = _keyify(ident_stem, opts.key_scheme)
    grp_col, cap_col, lab_col = mc.grp_col, mc.cap_col, mc.lab_col
    group = str(row[grp_col]) if grp_col and row.get(grp_col) is not None else \
        _group_for(ident or "", key, opts)
    meta = {c: _jsonable(row[c]) for c in mc.meta_cols if row.get(c) is not None}
    return InputItem(
        key=key, source=ident if ident_url else os.path.join(root, ident or ""),
        media=tuple(media), caption=None if not cap_col or row.get(cap_col) is None
        else str(row[cap_col]),
        label=None if not lab_col or row.get(lab_col) is None else str(row[lab_col]),
        group=group, meta=meta, size=size, error=error,
    )


def bad_key(key: str) -> bool:
    """A ``--key-column`` value that is not a valid key."""
    return not KEY_RE.match(key) or len(key) > 80


def bad_keys_error(bad: list[str], count: int, mc: ManifestColumns) -> SourceError:
    return SourceError(f"{count} value(s) of key column {mc.key_col!r} in {mc.src!r} are "
                       f"not valid keys ([A-Za-z0-9_-]+, at most 80 chars): {bad[:5]}")


def _manifest_items(src: str, opts: SourceOptions) -> list[InputItem]:
    table = _read_manifest(src)
    mc = manifest_columns(src, table.column_names, opts)
    items = [manifest_row(row, i, mc, opts) for i, row in enumerate(table.to_pylist())]
    if mc.key_col:
        bad = [it.key for it in items if bad_key(it.key)]
        if bad:
            raise bad_keys_error(bad, len(bad), mc)
        return items  # explicit unique keys: rows naming the same media are distinct samples
    return resolve_repeated(items, opts.repeated_paths, opts.key_scheme, src)


def urljoin_root(p: str, root: str, opts: SourceOptions
                 ) -> tuple[str, tuple[str, str] | None]:
    """A manifest row of a manifest at a URL: a URL, or a path joined to the URL root."""
    if is_url(p):
        return p, _scheme_error(p, opts)
    if p != local_path(p):
        return p, ("unsafe_path", f"{p!r} is a local file but the manifest root {root!r} is "
                                  "remote")
    if p.startswith("/") or ".." in p.split("/"):
        return p, ("unsafe_path", f"{p!r} escapes the manifest root {root!r}")
    return posixpath.join(root, p), None


def _stem_identity(ident: str, parts: Any = None) -> str:
    """The identity a key is made from: the URL without extension (host, path, a hash
    of the query), or the relative path's stem.  ``parts``: ``urlsplit(ident)``, when
    the caller has it."""
    if parts is not None or is_url(ident):
        u = parts if parts is not None else urlsplit(ident)
        stem = _split_name(u.path)[0] if "." in u.path.rsplit("/", 1)[-1] else u.path
        base = f"{u.netloc}{stem}"
        return base + (f"_{hash_key(u.query)}" if u.query else "")
    d, _, name = ident.rpartition("/")  # the stem of the file name, not of a folder
    stem = _split_name(name)[0]
    return f"{d}/{stem}" if d else stem


def _separate_failed(items: list[InputItem]) -> list[InputItem]:
    """Give inputs that already failed at plan time and share a key with another input a
    key of their own (slug + hash of source and position among them), so a bad row
    never blocks the job with a duplicate-key error; the order of ``items`` is stable."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_key[it.key].append(i)
    out = list(items)
    for key, idx in by_key.items():
        if len(idx) < 2:
            continue
        failed = [i for i in idx if items[i].error]
        if len(failed) == len(idx):
            failed = failed[1:]  # the first keeps the key
        for n, i in enumerate(failed):
            it = items[i]
            new = disambiguate_key(key, f"{it.source}#{n}")
            out[i] = replace(it, key=new)
    return out


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def is_manifest(src: str) -> bool:
    """Whether source ``src`` is a manifest (by extension) rather than a tree/glob/file."""
    return src.lower().split("?", 1)[0].endswith(MANIFEST_EXTS)


def tree_source_items(src: str, opts: SourceOptions, ignored: list[str]) -> list[InputItem]:
    """The inputs of a folder tree, glob or single file (SourceError when it holds no
    media: nothing to ingest is a mistake in the arguments); ignored files are appended
    to ``ignored``."""
    before = len(ignored)
    found = _tree_items(src, opts, ignored)
    if not found:
        raise _no_media_error(src, ignored[before:])
    return found


# -------------------------------------------------------------------------- entry
def collect_inputs(sources: list[str] | tuple[str, ...], opts: SourceOptions
                   ) -> tuple[list[InputItem], list[str]]:
    """All inputs of all sources, sorted by key, plus the files that were ignored (in
    memory; ``ingest`` plans through :func:`.plan.plan_inputs`, which gives the same
    inputs in bounded memory).

    Raises SourceError before any work when a source cannot be listed or read, and when
    two inputs share a key (naming both, with the fix).
    """
    if not sources:
        raise SourceError("no sources given")
    items: list[InputItem] = []
    ignored: list[str] = []
    for src in sources:
        if is_manifest(src):
            items.extend(_manifest_items(src, opts))
        else:
            items.extend(tree_source_items(src, opts, ignored))
    items = _separate_failed(items)
    items.sort(key=lambda it: it.key)
    dups = [(a, b) for a, b in zip(items, items[1:]) if a.key == b.key]
    if dups:
        raise duplicate_keys_error(len(dups), dups[:5])
    return items, ignored


def duplicate_keys_error(count: int, shown_pairs: list[tuple[InputItem, InputItem]]
                         ) -> SourceError:
    """The refusal of two inputs sharing a key (the first pairs in key order, and how
    many pairs there are)."""
    shown = "; ".join(f"{a.key!r}: {a.source} and {b.source}" for a, b in shown_pairs[:5])
    return SourceError(
        f"{count} duplicate key(s) before any work started: {shown}. Keys come from "
        "paths relative to each source root (--key-scheme hash hashes that same relative "
        "path, so it does not separate them): give sources with distinct relative paths "
        "or one manifest with a --key-column of unique values; for manifest rows that "
        "name the same media, --group-captions or --sample-per-row"
    )
