"""``mmshard mine``: ``--config FILE.yaml`` (a whole :class:`MineConfig`, as written by
:func:`~mmshard.pipelines.mine.config.mine_config_to_dict`) plus flag overrides ->
:func:`~mmshard.pipelines.mine.job.mine` (strings become objects here, once).

>>> import argparse
>>> p = argparse.ArgumentParser(epilog=EPILOG)
>>> add_cli_arguments(p)
>>> cfg = config_from_args(p.parse_args(["--queries", "emb.npy", "-k", "8"]))
>>> cfg.k, cfg.positives.kind
(8, 'same_key')
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from ..errors import ConfigError
from ._common import add_config_arg, add_executor_args, load_yaml, positive_int, set_path

__all__ = ["EPILOG", "add_cli_arguments", "add_parser", "config_from_args", "parse_size"]

EPILOG = """\
example:
  # captions (queries) vs images (corpus) of one dataset, embedded by `mmshard embed`
  # (sidecars DATASET/emb_txt and DATASET/emb_jpg); positives share a key; 16 hard
  # negatives each, kept below 95 % of the positive score (NV-Retriever TopK-PercPos):
  mmshard mine --queries DATASET/emb_txt --query-field emb_txt.npy \\
      --corpus DATASET/emb_jpg --corpus-field emb_jpg.npy \\
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``mmshard mine``."""
    p = sub.add_parser("mine", help="FAISS hard-negative mining with false-negative guards",
                       description="Mine hard negatives for contrastive training from query "
                                   "and corpus embeddings.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(p)
    add_config_arg(p, "MineConfig")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..pipelines.mine.job import mine
    from ._common import make_executor_from_args

    config = config_from_args(args)
    executor = make_executor_from_args(args)
    try:
        result = mine(config, executor=executor, progress=not args.no_progress)
    finally:
        executor.close()
    print(json.dumps(result.summary, indent=1, default=str))
    return 0


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mmshard mine`` job flags to ``parser`` (use :data:`EPILOG` as its epilog).

    Every flag defaults to None: not given means "the --config file's value, else the
    MineConfig default"."""
    g = parser.add_argument_group("inputs")
    g.add_argument("--queries",
                   help="query embeddings: .npy (+ <stem>.keys.txt), .parquet (key, vector) "
                        "or a sidecar shard folder (required unless --config names them)")
    g.add_argument("--query-keys", help="keys file for a .npy --queries")
    g.add_argument("--corpus", help="corpus embeddings (default: the queries)")
    g.add_argument("--corpus-keys", help="keys file for a .npy --corpus")
    g.add_argument("--key-column", help="Parquet key column (default key)")
    g.add_argument("--vector-column", help="Parquet vector column (default vector)")
    g.add_argument("--field", help="shard member suffix for shard inputs, both sides "
                   "(default: <folder name>.npy for an emb_* sidecar folder, else emb.npy)")
    g.add_argument("--query-field", help="shard member suffix of the queries (overrides --field)")
    g.add_argument("--corpus-field", help="shard member suffix of the corpus (overrides --field)")
    g.add_argument("--positives",
                   help="same_key (default), or a Parquet/CSV table of (query_key, "
                        "positive_key) pairs or of (key, group)")
    g.add_argument("--positives-kind", choices=("auto", "pairs", "group"), default="auto",
                   help="how to read a --positives table (auto: from its columns)")
    g.add_argument("--groups", help="(key, group) table: same-group items are never negatives")
    g.add_argument("--labels", help="(key, label) table of label paths for --strategy semantic")
    o = parser.add_argument_group("output")
    o.add_argument("--out", help="negatives file, .parquet (default negatives.parquet; may be "
                                 "s3://...)")
    o.add_argument("--no-plot", action="store_const", const=True,
                   help="skip the score histogram PNG")
    s = parser.add_argument_group("selection")
    s.add_argument("-k", type=positive_int, help="negatives per query (default 16)")
    s.add_argument("--strategy", choices=("topk", "rank_window", "score_window", "margin",
                                          "mixed", "semantic"), help="default topk")
    s.add_argument("--skip", type=int, help="rank_window: skip the r most similar")
    s.add_argument("--window", type=int, help="rank_window: take from the next R ranks")
    s.add_argument("--min-score", type=float, help="score_window lower bound")
    s.add_argument("--max-score", type=float,
                   help="score_window upper bound / absolute margin (score < max)")
    s.add_argument("--relative-margin", type=float,
                   help="margin: keep score < p - (1 - r) * |p| (p = positive score; "
                        "default 0.95)")
    s.add_argument("--margin-mode", choices=("relative", "absolute"))
    s.add_argument("--hard-fraction", type=float, help="mixed: share of hard (default 0.8)")
    s.add_argument("--levels", nargs="+", help="semantic: levels to keep")
    s.add_argument("--seed", type=int)
    s.add_argument("--skip-unknown-keys", action="store_const", const=True,
                   help="record unknown positive keys as failures instead of stopping")
    s.add_argument("--max-failure-rate", type=float, help="default 0.1")
    x = parser.add_argument_group("index and search")
    x.add_argument("--index", choices=("auto", "flat", "ivf_flat", "ivf_pq", "hnsw"))
    x.add_argument("--nlist", type=positive_int)
    x.add_argument("--nprobe", type=positive_int)
    x.add_argument("--ef-search", type=positive_int)
    x.add_argument("--gpu", choices=("auto", "never", "always"))
    x.add_argument("--index-path", help="where the index is saved/reused (default <out>.index)")
    x.add_argument("--rebuild-index", action="store_true")
    x.add_argument("--require-index", action="store_true",
                   help="refuse to build: the saved index must match the corpus")
    x.add_argument("--metric", choices=("ip", "l2"))
    x.add_argument("--no-normalize", action="store_const", const=True)
    x.add_argument("--memory-budget", help="e.g. 24GiB (default 16GiB)")
    x.add_argument("--chunk-size", type=positive_int, help="queries per task (default 16384)")
    x.add_argument("--pool-size", type=positive_int, help="candidates searched per query")
    x.add_argument("--work-dir", help="working files for an s3:// --out (default: temp dir)")


def _positives(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.positives is None:
        return None
    if args.positives == "same_key":
        return {"kind": "same_key"}
    kind = args.positives_kind
    if kind == "auto":
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
    return {"kind": kind, "path": args.positives}


def _columns(path: str) -> set[str]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return set(pq.read_schema(path).names)
    with open(path, encoding="utf-8") as f:
        return {c.strip() for c in f.readline().split(",")}


_STRATEGY_FLAGS = {"skip": "skip", "window": "window", "min_score": "min_score",
                   "max_score": "max_score", "relative_margin": "relative",
                   "margin_mode": "mode", "hard_fraction": "hard_fraction", "levels": "levels"}
_STRATEGY_FIELDS = {"rank_window": ("skip", "window"),
                    "score_window": ("min_score", "max_score"),
                    "margin": ("mode", "relative", "max_score"), "mixed": ("hard_fraction",),
                    "semantic": ("levels",), "topk": ()}


def _strategy(args: argparse.Namespace, base: dict[str, Any] | None) -> dict[str, Any] | None:
    """The strategy mapping: --strategy (or the config's) with the given strategy flags."""
    given = {f: getattr(args, d) for d, f in _STRATEGY_FLAGS.items()
             if getattr(args, d) is not None}
    if args.strategy is None and not given:
        return None
    name = args.strategy or (base or {}).get("name") or "topk"
    out = dict(base or {}) if (base or {}).get("name") == name else {}
    out["name"] = name
    for f in _STRATEGY_FIELDS.get(name, ()):
        if f in given:
            out[f] = tuple(given[f]) if f == "levels" else given[f]
    return out


def _source(args: argparse.Namespace, role: str, base: dict[str, Any] | None
            ) -> dict[str, Any] | None:
    path = getattr(args, role)
    src = dict(base or {})
    if path is not None:
        src = {**src, "path": path}
    if not src:
        return None
    keys = getattr(args, "query_keys" if role == "queries" else "corpus_keys")
    side_field = getattr(args, "query_field" if role == "queries" else "corpus_field")
    for k, v in (("keys", keys), ("key_column", args.key_column),
                 ("vector_column", args.vector_column), ("field", side_field or args.field)):
        if v is not None:
            src[k] = v
    if "field" not in src and os.path.isdir(src["path"]):
        name = os.path.basename(os.path.normpath(src["path"]))
        if name.startswith("emb_"):  # an `mmshard embed` sidecar: members <key>.<name>.npy
            src["field"] = f"{name}.npy"
    return src


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~mmshard.pipelines.mine.config.MineConfig` of ``--config`` (if any)
    with every given flag applied."""
    from ..pipelines.mine.config import mine_config_from_dict

    if args.rebuild_index and args.require_index:
        raise ConfigError("--rebuild-index and --require-index exclude each other")
    data: dict[str, Any] = load_yaml(getattr(args, "config", None))
    for role in ("queries", "corpus"):
        src = _source(args, role, data.get(role))
        if src is not None:
            data[role] = src
    if "queries" not in data:
        raise ConfigError("mine needs --queries (or queries: in --config)")
    flags = {"out": "out", "groups": "groups", "labels": "labels", "k": "k", "seed": "seed",
             "max_failure_rate": "max_failure_rate", "index": "index.kind",
             "nlist": "index.nlist", "nprobe": "index.nprobe", "ef_search": "index.ef_search",
             "gpu": "index.gpu", "index_path": "index_path", "metric": "metric",
             "chunk_size": "chunk_size", "pool_size": "pool_size", "work_dir": "work_dir"}
    for dest, path in flags.items():
        if getattr(args, dest) is not None:
            set_path(data, path, getattr(args, dest))
    pos = _positives(args)
    if pos is not None:
        data["positives"] = {**(data.get("positives") or {}), **pos}
    strat = _strategy(args, data.get("strategy"))
    if strat is not None:
        data["strategy"] = strat
    if args.rebuild_index or args.require_index:
        data["index_reuse"] = "rebuild" if args.rebuild_index else "require"
    if args.no_normalize:
        data["normalize"] = False
    if args.no_plot:
        data["plot"] = False
    if args.skip_unknown_keys:
        data["on_unknown_keys"] = "skip"
    if args.memory_budget is not None:
        data["memory_budget"] = parse_size(args.memory_budget)
    elif isinstance(data.get("memory_budget"), str):
        data["memory_budget"] = parse_size(data["memory_budget"])
    try:
        return mine_config_from_dict(data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad mine config: {e}") from e
