"""``mmshard report``: one self-contained HTML page about a dataset."""

from __future__ import annotations

import argparse

EXAMPLE = """\
example:
  mmshard report data/photos --out report.html             # open it in any browser
  mmshard report data/speech --out speech.html --grid 24 --negatives negatives.parquet
sections: counts, failures, histograms, samples, videos, audio, mining, dedup, audit
(dedup and audit appear after `mmshard dedup` / `mmshard audit`). No network needed.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..pipelines.curate.report import SECTIONS

    p = sub.add_parser("report", help="a self-contained HTML report of a dataset",
                       description="Counts, failures, histograms, thumbnails, keyframe "
                                   "strips, log-mel images, mining scores, duplicate sets and "
                                   "audit results in one HTML file (images embedded).",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of sections")
    p.add_argument("--grid", type=int, default=12, help="thumbnails per split")
    p.add_argument("--thumb", type=int, default=96, help="thumbnail size in pixels")
    p.add_argument("--negatives", default=None, help="a negatives.parquet from mmshard mine")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.curate.report import ReportConfig, report_data
    from ..pipelines.curate.report_html import render_html, write_report

    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    config = ReportConfig(sections=sections, grid=args.grid, thumb=args.thumb,
                          negatives=args.negatives)
    html = render_html(report_data(args.dataset, config, progress=not args.no_progress))
    path = write_report(html, args.out)
    print(f"wrote {path} ({len(html) / 1e6:.1f} MB)")
    return 0
