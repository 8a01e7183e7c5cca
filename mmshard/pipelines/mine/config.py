"""The mining job's configuration, result type and output file names (no job logic, so
the job and its report writer both import it without a circle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..._registry import config_from_dict, config_to_dict
from ...errors import ConfigError
from ...samplers.negatives import TopKConfig, build_strategy, strategy_from_dict, strategy_to_dict
from ..result import JobResult
from .embeddings_io import EmbeddingSource
from .faiss_index import IndexConfig

__all__ = ["MineConfig", "MineResult", "PositivesConfig", "mine_config_from_dict",
           "mine_config_to_dict", "output_paths"]

_POSITIVE_KINDS = ("same_key", "pairs", "group")


@dataclass(frozen=True, kw_only=True)
class PositivesConfig:
    """Which corpus items are a query's positives.

    ``same_key``: the corpus item with the query's key.  ``pairs``: a Parquet/CSV table
    of (``query_column``, ``positive_column``).  ``group``: a Parquet/CSV table of
    (``key_column``, ``group_column``): corpus items sharing the query's group (at most
    ``max_scored`` of them, in corpus order, are scored for ``positive_score``).

    >>> PositivesConfig(kind="pairs", path="pairs.csv").kind
    'pairs'
    """

    kind: str = "same_key"
    path: str | None = None
    query_column: str = "query_key"
    positive_column: str = "positive_key"
    key_column: str = "key"
    group_column: str = "group"
    max_scored: int = 64

    def __post_init__(self) -> None:
        if self.kind not in _POSITIVE_KINDS:
            raise ConfigError(f"unknown positives kind {self.kind!r}; allowed: "
                              f"{', '.join(_POSITIVE_KINDS)}")
        if self.kind != "same_key" and not self.path:
            raise ConfigError(f"positives kind {self.kind!r} needs a table path "
                              "(--positives pairs.parquet)")
        if self.max_scored < 1:
            raise ConfigError(f"max_scored must be >= 1, got {self.max_scored}")


@dataclass(frozen=True, kw_only=True)
class MineConfig:
    """One mining job.  ``corpus=None`` mines queries against themselves.

    ``groups``: optional (key, group) table; corpus items in the query's group are never
    negatives.  ``labels``: optional (key, label) table of paths like
    ``animal/dog/terrier`` for semantic levels.  ``index_reuse``: ``auto`` (reuse a
    matching saved index, rebuild a stale one), ``require`` (refuse a stale one),
    ``rebuild``, ``never`` (a one-shot run: build the index and neither read nor write
    ``index_path``; tasks in the driver's process share the built index, others read a
    temporary copy in the working folder).  ``pool_size``: candidates searched per query
    (default: what the strategy needs; it grows for queries left with fewer than ``k``
    negatives until they have ``k`` or the corpus is exhausted).  ``memory_budget``
    (bytes) drives the automatic index choice.  ``out`` (and ``index_path``) may be fsspec URLs
    (``s3://bucket/neg.parquet``): artifacts are written through ``Storage``; the working
    files (prepared vectors, chunk parts, a local copy of the index) then live in
    ``work_dir`` (default: a folder under the system temp dir), which every worker must
    see.  ``work_dir`` is not part of the job's fingerprint.
    """

    queries: EmbeddingSource
    corpus: EmbeddingSource | None = None
    out: str = "negatives.parquet"
    positives: PositivesConfig = field(default_factory=PositivesConfig)
    groups: str | None = None
    labels: str | None = None
    label_column: str = "label"
    k: int = 16
    strategy: Any = field(default_factory=TopKConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    index_path: str | None = None
    index_reuse: str = "auto"
    metric: str = "ip"
    normalize: bool = True
    seed: int = 0
    memory_budget: int = 16 << 30
    chunk_size: int = 16384
    pool_size: int | None = None
    on_unknown_keys: str = "error"
    max_failure_rate: float = 0.1
    histogram_bins: int = 50
    plot: bool = True
    work_dir: str | None = None

    def __post_init__(self) -> None:
        build_strategy(self.strategy)  # validates the strategy config type
        if self.metric not in ("ip", "l2"):
            raise ConfigError(f"unknown metric {self.metric!r}; allowed: ip, l2")
        if self.index_reuse not in ("auto", "require", "rebuild", "never"):
            raise ConfigError(f"index_reuse must be one of auto, require, rebuild, never; got "
                              f"{self.index_reuse!r}")
        if self.on_unknown_keys not in ("error", "skip"):
            raise ConfigError(f"on_unknown_keys must be error or skip, got "
                              f"{self.on_unknown_keys!r}")
        for name in ("k", "chunk_size", "memory_budget", "histogram_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pool_size is not None and self.pool_size < self.k:
            raise ConfigError(f"pool_size {self.pool_size} must be >= k {self.k}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if not isinstance(self.k, int) or isinstance(self.k, bool):
            raise ConfigError(f"k must be an int, got {self.k!r}")
        if not self.out.endswith(".parquet"):
            raise ConfigError(f"out must end in .parquet, got {self.out!r}")


@dataclass(frozen=True)
class MineResult(JobResult):
    """What :func:`mine` did; ``stats`` (also ``summary``) is the summary JSON's content."""

    summary_path: str
    plot_path: str | None
    failures_path: str | None
    n_queries: int
    n_mined: int
    chunks_total: int
    chunks_computed: int
    chunks_skipped: int
    index_kind: str

    @property
    def summary(self) -> dict[str, Any]:
        return self.stats


def output_paths(out: str) -> dict[str, str]:
    """The files a job writes for ``out`` (``x.parquet`` -> ``x.summary.json`` ...).

    >>> output_paths("neg.parquet")["summary"]
    'neg.summary.json'
    """
    stem = out[: -len(".parquet")]
    return {"out": out, "summary": f"{stem}.summary.json", "plot": f"{stem}.scores.png",
            "failures": f"{stem}.failures.parquet", "parts": f"{out}.parts",
            "index": f"{out}.index"}


def mine_config_to_dict(cfg: MineConfig) -> dict[str, Any]:
    """Plain JSON/YAML data for a MineConfig (inverse: :func:`mine_config_from_dict`)."""
    d = config_to_dict(cfg)
    d["strategy"] = strategy_to_dict(cfg.strategy)
    return d


def mine_config_from_dict(data: dict[str, Any]) -> MineConfig:
    """Build a MineConfig from :func:`mine_config_to_dict` output (or a YAML mapping)."""
    data = dict(data)
    strat = data.pop("strategy", None)
    for name, cls in (("queries", EmbeddingSource), ("corpus", EmbeddingSource),
                      ("positives", PositivesConfig), ("index", IndexConfig)):
        if isinstance(data.get(name), dict):
            data[name] = config_from_dict(cls, data[name])
    if strat is not None:
        data["strategy"] = strategy_from_dict(strat)
    return config_from_dict(MineConfig, data)
