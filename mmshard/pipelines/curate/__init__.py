"""Curation jobs: near-duplicate dedup, leakage audit, and the HTML report.

>>> from mmshard.pipelines.curate import DedupConfig, dedup
>>> dedup("data/photos", DedupConfig(method="phash"))   # doctest: +SKIP
"""

from .audit import AuditConfig, AuditResult, audit, contract_problems
from .dedup import DedupConfig, DedupResult, dedup
from .report import SECTIONS, ReportConfig, report_data
from .report_html import render_html, write_report

__all__ = ["AuditConfig", "AuditResult", "DedupConfig", "DedupResult", "ReportConfig",
           "SECTIONS", "audit", "contract_problems", "dedup", "render_html", "report_data",
           "write_report"]
