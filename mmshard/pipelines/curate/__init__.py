"""Curation jobs: near-duplicate dedup, leakage audit, and the HTML report."""

from .dedup import DedupConfig, DedupResult, dedup

__all__ = ["DedupConfig", "DedupResult", "dedup"]
