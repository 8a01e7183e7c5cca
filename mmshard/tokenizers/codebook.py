"""A generic k-means codebook over any float vectors (audio frames, image patches ...).

``Codebook.fit`` runs ``faiss.Kmeans`` (on the GPU when asked, or when ``gpu=None`` and
faiss sees one); ``encode`` maps vectors to their nearest centroid id (exact search with a
flat index: L2, or inner product for spherical codebooks); ``decode`` maps ids back to
centroids; ``usage`` summarises how the codes are used.

Files are safetensors (``.safetensors``; the centroids as tensor ``centroids``) or
``.npz`` (``centroids`` plus a JSON string ``metadata``), never pickles. Both carry
``format = "mmshard.codebook"``, the fit config and provenance (fit data shape, seed, faiss
version, a free-text ``created_from``) as JSON strings. Loading sniffs the bytes, not the
file name, and anything else (a pickle, garbage, a safetensors file of something else)
is a ``ConfigError`` that says what was found.

The same data, config and seed give identical centroids (faiss' k-means is seeded and its
CPU reductions have a fixed order).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> cb = Codebook.fit(x, k=4, seed=0)
    >>> ids = cb.encode(x)
    >>> ids.dtype, ids.shape, cb.decode(ids).shape
    (dtype('int32'), (500,), (500, 8))
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._registry import config_from_dict, config_to_dict
from ..errors import ConfigError, DependencyMissingError

__all__ = ["CODEBOOK_FORMAT", "Codebook", "CodebookConfig"]

CODEBOOK_FORMAT = "mmshard.codebook"
_FORMAT_VERSION = "1"
_SUFFIXES = (".safetensors", ".npz")


@dataclass(frozen=True, kw_only=True)
class CodebookConfig:
    """How a codebook was (or will be) fit.

    >>> CodebookConfig(k=256).niter
    20
    """

    k: int
    niter: int = 20
    seed: int = 0
    max_points_per_centroid: int = 256
    spherical: bool = False
    nredo: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k (number of codes) must be an int >= 1, got {self.k!r}")
        if not isinstance(self.niter, int) or self.niter < 1:
            raise ConfigError(f"niter must be an int >= 1, got {self.niter!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.max_points_per_centroid, int) or self.max_points_per_centroid < 1:
            raise ConfigError(
                f"max_points_per_centroid must be an int >= 1, got {self.max_points_per_centroid!r}"
            )
        if not isinstance(self.nredo, int) or self.nredo < 1:
            raise ConfigError(
                f"nredo (k-means restarts, best kept) must be >= 1, got {self.nredo!r}"
            )
        if not isinstance(self.spherical, bool):
            raise ConfigError(f"spherical must be true or false, got {self.spherical!r}")


def _as_vectors(vectors: Any, what: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array [N, D], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ConfigError(f"{what} have dimension {x.shape[1]}, the codebook has {dim}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{what} must be float vectors, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(f"{what} contain NaN or infinite values; clean them first")
    return x


def _use_gpu(gpu: bool | None) -> bool:
    import faiss

    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu is None:
        return n > 0
    if gpu and n == 0:
        raise DependencyMissingError(
            "gpu=True but faiss sees no GPU (faiss-cpu is installed or no CUDA device); "
            "install faiss-gpu (pip install 'mmshard[gpu]') or pass gpu=None/False"
        )
    return bool(gpu)


class Codebook:
    """``k`` centroids of dimension ``dim`` plus how they were made.

    Build with :meth:`fit` or :meth:`load`; ``Codebook(centroids, config, provenance)``
    wraps centroids you already have.

    >>> cb = Codebook(np.eye(3, dtype=np.float32), CodebookConfig(k=3))
    >>> cb.encode(np.array([[0.9, 0.1, 0.0]], np.float32)).tolist()
    [0]
    """

    def __init__(
        self,
        centroids: np.ndarray,
        config: CodebookConfig,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        c = _as_vectors(centroids, "centroids").copy()
        if c.shape[0] != config.k:
            raise ConfigError(f"config.k={config.k} but centroids has {c.shape[0]} rows")
        c.setflags(write=False)
        self.centroids = c
        self.config = config
        self.provenance = dict(provenance or {})
        self._index: Any = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def fingerprint(self) -> str:
        """sha256 of the centroid bytes, shape and metric: names a codebook in provenance."""
        h = hashlib.sha256()
        h.update(f"{self.k}x{self.dim}:{'ip' if self.config.spherical else 'l2'}:".encode())
        h.update(self.centroids.tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"Codebook(k={self.k}, dim={self.dim}, fingerprint={self.fingerprint[:12]})"

    def __getstate__(self) -> dict[str, Any]:  # faiss indexes do not pickle; rebuild lazily
        state = self.__dict__.copy()
        state["_index"] = None
        return state

    # ------------------------------------------------------------------ fit

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        *,
        k: int,
        niter: int = 20,
        seed: int = 0,
        max_points_per_centroid: int = 256,
        gpu: bool | None = None,
        spherical: bool = False,
        nredo: int = 1,
        created_from: str = "",
    ) -> Codebook:
        """k-means with faiss on ``vectors`` ``[N, D]`` (N >= k); deterministic per seed.

        ``max_points_per_centroid`` caps the training sample (faiss subsamples
        ``k * max_points_per_centroid`` points with ``seed``). ``nredo`` restarts k-means
        that many times and keeps the lowest-error run (random init can merge clusters).
        ``gpu=None`` uses a GPU when
        faiss has one. ``created_from`` is free text stored in the provenance (e.g. the
        dataset and field the vectors came from).

        >>> x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
        >>> Codebook.fit(x, k=8, niter=5).centroids.shape
        (8, 4)
        """
        import faiss

        config = CodebookConfig(
            k=k, niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid,
            spherical=spherical, nredo=nredo,
        )
        x = _as_vectors(vectors, "fit vectors")
        if x.shape[0] < k:
            raise ConfigError(
                f"k-means needs at least k={k} vectors, got {x.shape[0]}; lower k or add data"
            )
        use_gpu = _use_gpu(gpu)
        km = faiss.Kmeans(
            x.shape[1], k, niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid,
            min_points_per_centroid=1, spherical=spherical, nredo=nredo, gpu=use_gpu,
            verbose=False,
        )
        km.train(x)
        provenance = {
            "created_from": created_from,
            "faiss_version": faiss.__version__,
            "fit_shape": [int(x.shape[0]), int(x.shape[1])],
            "gpu": use_gpu,
            "seed": seed,
        }
        return cls(np.asarray(km.centroids, dtype=np.float32), config, provenance)

    # ------------------------------------------------------------------ use

    def _get_index(self) -> Any:
        if self._index is None:
            import faiss

            index = faiss.IndexFlatIP(self.dim) if self.config.spherical else faiss.IndexFlatL2(
                self.dim
            )
            index.add(np.ascontiguousarray(self.centroids))
            self._index = index
        return self._index

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Nearest-centroid ids ``int32 [N]`` of ``vectors`` ``[N, D]``.

        Distances are exact L2 (inner product for a spherical codebook).

        >>> cb = Codebook(np.eye(2, dtype=np.float32), CodebookConfig(k=2))
        >>> cb.encode(np.array([[0., 1.], [2., 0.]], np.float32)).tolist()
        [1, 0]
        """
        x = _as_vectors(vectors, "vectors", self.dim)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        _, ids = self._get_index().search(x, 1)
        return ids[:, 0].astype(np.int32)

    def _check_ids(self, ids: Any) -> np.ndarray:
        a = np.asarray(ids)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ConfigError(f"code ids must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 0 or a.max() >= self.k):
            raise ConfigError(
                f"code ids must be in [0, {self.k}), got values in [{a.min()}, {a.max()}]"
            )
        return a

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Centroids of ``ids`` (any shape) -> ``float32 [*ids.shape, D]``.

        >>> Codebook(np.eye(2, dtype=np.float32), CodebookConfig(k=2)).decode([1]).tolist()
        [[0.0, 1.0]]
        """
        return self.centroids[self._check_ids(ids)]

    def usage(self, ids: np.ndarray) -> dict[str, float | int]:
        """How ``ids`` use the codes: ``perplexity`` (exp of the code entropy, 1..k),
        ``used`` (distinct codes seen), ``dead_codes`` (k - used), ``k`` and ``count``.

        >>> Codebook(np.eye(4, dtype=np.float32), CodebookConfig(k=4)).usage([0, 1, 0, 1])
        {'perplexity': 2.0, 'used': 2, 'dead_codes': 2, 'k': 4, 'count': 4}
        """
        a = self._check_ids(ids).ravel()
        counts = np.bincount(a, minlength=self.k)
        total = int(counts.sum())
        if total == 0:
            perplexity = 0.0
        else:
            p = counts[counts > 0] / total
            perplexity = float(np.exp(-(p * np.log(p)).sum()))
        used = int((counts > 0).sum())
        return {
            "perplexity": round(perplexity, 9), "used": used, "dead_codes": self.k - used,
            "k": self.k, "count": total,
        }

    # ------------------------------------------------------------------ files

    def _metadata(self) -> dict[str, str]:
        return {
            "format": CODEBOOK_FORMAT,
            "format_version": _FORMAT_VERSION,
            "config": json.dumps(config_to_dict(self.config), sort_keys=True),
            "provenance": json.dumps(self.provenance, sort_keys=True),
            "fingerprint": self.fingerprint,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the codebook to ``path`` (``.safetensors`` or ``.npz``), atomically.

        >>> import tempfile
        >>> cb = Codebook(np.eye(2, dtype=np.float32), CodebookConfig(k=2))
        >>> p = cb.save(Path(tempfile.mkdtemp()) / "cb.safetensors")
        >>> Codebook.load(p).fingerprint == cb.fingerprint
        True
        """
        p = Path(path)
        if p.suffix not in _SUFFIXES:
            raise ConfigError(
                f"codebook file must end in one of {list(_SUFFIXES)}, got {str(p)!r}"
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            if p.suffix == ".safetensors":
                from safetensors.numpy import save

                tmp.write_bytes(save({"centroids": self.centroids}, metadata=self._metadata()))
            else:
                meta = np.array(json.dumps(self._metadata(), sort_keys=True))
                with open(tmp, "wb") as f:
                    np.savez(f, centroids=self.centroids, metadata=meta)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Codebook:
        """Read a codebook written by :meth:`save`; anything else is a ``ConfigError``.

        The format is recognised from the file's first bytes; pickles are never loaded.
        """
        p = Path(path)
        try:
            with open(p, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise ConfigError(f"cannot read codebook file {str(p)!r}: {e}") from e
        if head.startswith(b"PK\x03\x04"):
            centroids, meta = _read_npz(p)
        elif len(head) >= 9 and head[8:9] == b"{":
            centroids, meta = _read_safetensors(p)
        else:
            kind = "a Python pickle" if head[:1] == b"\x80" else "not a codebook"
            raise ConfigError(
                f"{str(p)!r} is {kind} (first bytes {head[:8]!r}); a codebook file is "
                "safetensors or .npz written by Codebook.save, and pickles are never loaded"
            )
        return _from_parts(p, centroids, meta)


def _read_npz(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if "centroids" not in z.files or "metadata" not in z.files:
                raise ConfigError(
                    f"{str(p)!r} is an .npz without 'centroids' and 'metadata' arrays "
                    f"(has {sorted(z.files)}); it was not written by Codebook.save"
                )
            centroids = z["centroids"]
            meta = json.loads(str(z["metadata"][()]))
    except ConfigError:
        raise
    except Exception as e:  # zip, npy or JSON errors, or an object (pickled) array
        raise ConfigError(f"cannot read codebook .npz {str(p)!r}: {e}") from e
    if not isinstance(meta, dict):
        raise ConfigError(f"{str(p)!r}: codebook metadata must be a JSON object")
    return centroids, meta


def _read_safetensors(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="np") as f:
            meta = dict(f.metadata() or {})
            if "centroids" not in f.keys():
                raise ConfigError(
                    f"{str(p)!r} is safetensors without a 'centroids' tensor "
                    f"(has {sorted(f.keys())}); it was not written by Codebook.save"
                )
            centroids = f.get_tensor("centroids")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot read codebook safetensors {str(p)!r}: {e}") from e
    return centroids, meta


def _from_parts(p: Path, centroids: np.ndarray, meta: dict[str, Any]) -> Codebook:
    if meta.get("format") != CODEBOOK_FORMAT:
        raise ConfigError(
            f"{str(p)!r} has format {meta.get('format')!r}, expected {CODEBOOK_FORMAT!r}"
        )
    if meta.get("format_version") != _FORMAT_VERSION:
        raise ConfigError(
            f"{str(p)!r} has codebook format_version {meta.get('format_version')!r}; this "
            f"mmshard reads version {_FORMAT_VERSION!r} (upgrade mmshard or refit)"
        )
    try:
        config = config_from_dict(CodebookConfig, json.loads(meta["config"]))
        provenance = json.loads(meta.get("provenance", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{str(p)!r}: bad codebook config/provenance metadata: {e}") from e
    if centroids.dtype != np.float32:
        raise ConfigError(f"{str(p)!r}: centroids must be float32, got {centroids.dtype}")
    cb = Codebook(centroids, config, provenance)
    if "fingerprint" in meta and meta["fingerprint"] != cb.fingerprint:
        raise ConfigError(f"{str(p)!r}: centroids do not match the stored fingerprint (corrupt)")
    return cb
