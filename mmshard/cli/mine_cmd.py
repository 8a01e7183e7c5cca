"""``mmshard mine`` flags -> :class:`~mmshard.pipelines.mine.job.MineConfig` (strings become
objects here, once).

>>> import argparse
>>> p = argparse.ArgumentParser(epilog=EPILOG)
>>> add_cli_arguments(p)
>>> cfg = config_from_args(p.parse_args(["--queries", "emb.npy", "-k", "8"]))
>>> cfg.k, cfg.positives.kind
(8, 'same_key')
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import ConfigError

__all__ = ["EPILOG", "add_cli_arguments", "config_from_args", "parse_size"]

EPILOG = """\
example:
  # captions (queries) vs images (corpus), positives share a key, 16 hard negatives each,
  # keeping negatives below 95 % of the positive score (NV-Retriever TopK-PercPos):
  mmshard mine --queries text_emb.npy --corpus image_emb.parquet \\
      --positives same_key --out negatives.parquet -k 16 \\
      --strategy margin --relative-margin 0.95 --groups video_ids.parquet

  # 80 % hard / 20 % random negatives, pairs table, approximate index on a 2M corpus:
  mmshard mine --queries q.npy --corpus c.npy --positives pairs.parquet \\
      --out negatives.parquet --strategy mixed --hard-fraction 0.8 --index ivf_flat

writes negatives.parquet (query_key, negative_keys, negative_scores, negative_ranks,
positive_score), negatives.summary.json, negatives.scores.png and, on bad rows,
negatives.failures.parquet; a rerun after a crash resumes from negatives.parquet.parts/.
"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"16GiB"``, ``"512M"``, ``"1000000"`` -> bytes (binary units).

    >>> parse_size("2GiB"), parse_size("512M"), parse_size("10")
    (2147483648, 536870912, 10)
    """
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"cannot read size {text!r}; use e.g. 16GiB, 512MiB or bytes")
    unit = (m.group(2) or "B").upper()[:1]
    mult = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
    return int(float(m.group(1)) * mult)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mmshard mine`` flags to ``parser`` (use :data:`EPILOG` as its epilog)."""
    g = parser.add_argument_group("inputs")
    g.add_argument("--queries", required=True,
                   help="query embeddings: .npy (+ <stem>.keys.txt), .parquet (key, vector) "
                        "or an emb.npy shard folder")
    g.add_argument("--query-keys", help="keys file for a .npy --queries")
    g.add_argument("--corpus", help="corpus embeddings (default: the queries)")
    g.add_argument("--corpus-keys", help="keys file for a .npy --corpus")
    g.add_argument("--key-column", default="key")
    g.add_argument("--vector-column", default="vector")
    g.add_argument("--field", default="emb.npy", help="shard member suffix for shard inputs")
    g.add_argument("--positives", default="same_key",
                   help="same_key, or a Parquet/CSV table of (query_key, positive_key) pairs "
                        "or of (key, group)")
    g.add_argument("--positives-kind", choices=("auto", "pairs", "group"), default="auto",
                   help="how to read a --positives table (auto: from its columns)")
    g.add_argument("--groups", help="(key, group) table: same-group items are never negatives")
    g.add_argument("--labels", help="(key, label) table of label paths for --strategy semantic")
    o = parser.add_argument_group("output")
    o.add_argument("--out", default="negatives.parquet")
    o.add_argument("--no-plot", action="store_true", help="skip the score histogram PNG")
    s = parser.add_argument_group("selection")
    s.add_argument("-k", type=int, default=16, help="negatives per query")
    s.add_argument("--strategy", default="topk",
                   choices=("topk", "rank_window", "score_window", "margin", "mixed",
                            "semantic"))
    s.add_argument("--skip", type=int, default=0, help="rank_window: skip the r most similar")
    s.add_argument("--window", type=int, help="rank_window: take from the next R ranks")
    s.add_argument("--min-score", type=float, help="score_window lower bound")
    s.add_argument("--max-score", type=float,
                   help="score_window upper bound / absolute margin (score < max)")
    s.add_argument("--relative-margin", type=float, default=0.95,
                   help="margin: keep score < p - (1 - r) * |p| (p = positive score)")
    s.add_argument("--margin-mode", choices=("relative", "absolute"), default="relative")
    s.add_argument("--hard-fraction", type=float, default=0.8, help="mixed: share of hard")
    s.add_argument("--levels", nargs="+",
                   default=["unknown", "unrelated", "same_domain", "fine_grained"],
                   help="semantic: levels to keep")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--skip-unknown-keys", action="store_true",
                   help="record unknown positive keys as failures instead of stopping")
    s.add_argument("--max-failure-rate", type=float, default=0.1)
    x = parser.add_argument_group("index and search")
    x.add_argument("--index", default="auto",
                   choices=("auto", "flat", "ivf_flat", "ivf_pq", "hnsw"))
    x.add_argument("--nlist", type=int)
    x.add_argument("--nprobe", type=int)
    x.add_argument("--ef-search", type=int)
    x.add_argument("--gpu", choices=("auto", "never", "always"), default="auto")
    x.add_argument("--index-path", help="where the index is saved/reused (default <out>.index)")
    x.add_argument("--rebuild-index", action="store_true")
    x.add_argument("--require-index", action="store_true",
                   help="refuse to build: the saved index must match the corpus")
    x.add_argument("--metric", choices=("ip", "l2"), default="ip")
    x.add_argument("--no-normalize", action="store_true")
    x.add_argument("--memory-budget", default="16GiB", help="e.g. 24GiB")
    x.add_argument("--chunk-size", type=int, default=16384, help="queries per task")
    x.add_argument("--pool-size", type=int, help="candidates searched per query")


def _positives(args: argparse.Namespace) -> Any:
    from ..pipelines.mine.job import PositivesConfig

    if args.positives == "same_key":
        return PositivesConfig()
    kind = args.positives_kind
    if kind == "auto":
        import os

        if not os.path.exists(args.positives):
            raise ConfigError(f"--positives {args.positives!r} is neither same_key nor an "
                              "existing .parquet/.csv table")
        cols = _columns(args.positives)
        if {"query_key", "positive_key"} <= cols:
            kind = "pairs"
        elif {"key", "group"} <= cols:
            kind = "group"
        else:
            raise ConfigError(f"cannot tell the kind of {args.positives}: columns {sorted(cols)};"
                              " need (query_key, positive_key) or (key, group), or pass "
                              "--positives-kind")
    return PositivesConfig(kind=kind, path=args.positives)


def _columns(path: str) -> set[str]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return set(pq.read_schema(path).names)
    with open(path, encoding="utf-8") as f:
        return {c.strip() for c in f.readline().split(",")}


def _strategy(args: argparse.Namespace) -> Any:
    from ..samplers import negatives as n

    if args.strategy == "rank_window":
        return n.RankWindowConfig(skip=args.skip, window=args.window)
    if args.strategy == "score_window":
        return n.ScoreWindowConfig(min_score=args.min_score, max_score=args.max_score)
    if args.strategy == "margin":
        return n.MarginConfig(mode=args.margin_mode, relative=args.relative_margin,
                              max_score=args.max_score)
    if args.strategy == "mixed":
        return n.MixedConfig(hard_fraction=args.hard_fraction)
    if args.strategy == "semantic":
        return n.SemanticLevelConfig(levels=tuple(args.levels))
    return n.TopKConfig()


def config_from_args(args: argparse.Namespace) -> Any:
    """Build the :class:`~mmshard.pipelines.mine.job.MineConfig` for parsed ``mmshard mine``
    flags (the lead's CLI then calls ``mine(config, executor=...)``)."""
    from ..pipelines.mine.embeddings_io import EmbeddingSource
    from ..pipelines.mine.faiss_index import IndexConfig
    from ..pipelines.mine.job import MineConfig

    def src(path: str, keys: str | None) -> EmbeddingSource:
        return EmbeddingSource(path=path, keys=keys, key_column=args.key_column,
                               vector_column=args.vector_column, field=args.field)

    if args.rebuild_index and args.require_index:
        raise ConfigError("--rebuild-index and --require-index exclude each other")
    return MineConfig(
        queries=src(args.queries, args.query_keys),
        corpus=src(args.corpus, args.corpus_keys) if args.corpus else None,
        out=args.out, positives=_positives(args), groups=args.groups, labels=args.labels,
        k=args.k, strategy=_strategy(args),
        index=IndexConfig(kind=args.index, nlist=args.nlist, nprobe=args.nprobe,
                          ef_search=args.ef_search, gpu=args.gpu),
        index_path=args.index_path,
        index_reuse="rebuild" if args.rebuild_index else (
            "require" if args.require_index else "auto"),
        metric=args.metric, normalize=not args.no_normalize, seed=args.seed,
        memory_budget=parse_size(args.memory_budget), chunk_size=args.chunk_size,
        pool_size=args.pool_size,
        on_unknown_keys="skip" if args.skip_unknown_keys else "error",
        max_failure_rate=args.max_failure_rate, plot=not args.no_plot)
