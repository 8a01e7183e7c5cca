"""Render :func:`~.report.report_data` as one self-contained HTML page.

No network: styles are inline, images are ``data:`` URIs, histograms are inline SVG.
Every section is a ``<section id="...">`` named as in ``SECTIONS``; the thumbnail grid of
each split is ``<div class="grid" id="grid-<split>">``.  A page with only the
``samples`` section puts the first grid at the top left (the browser test relies on it).

>>> html = render_html({"name": "ds", "root": "/ds", "sections": ["counts"],
...                     "counts": {"present": True, "rows": [], "total": 0}})
>>> '<section id="counts">' in html and "http" not in html.split("<body>")[1]
True
"""

from __future__ import annotations

import html as _html
from collections.abc import Callable
from typing import Any

from ...storage import Storage

__all__ = ["render_html", "svg_histogram", "write_report"]

CSS = """
body{font-family:system-ui,sans-serif;margin:0;padding:8px 16px;color:#222;background:#fff}
h1{font-size:20px;margin:4px 0 8px}
h2{font-size:17px;margin:18px 0 6px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}
.cell{width:104px;font-size:11px;overflow:hidden}
.cell img{width:96px;height:96px;object-fit:cover;display:block;background:#eee}
.strip{display:flex;gap:3px;align-items:center;margin:3px 0}.strip img{height:60px}
.pair{display:flex;gap:6px;align-items:flex-start;margin:4px 0;font-size:11px}
.hists{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#888;font-size:12px}
.bad{color:#b00;font-weight:bold}.good{color:#070;font-weight:bold}
"""


def _e(x: Any) -> str:
    return _html.escape("" if x is None else str(x))


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"


def svg_histogram(h: dict[str, Any], title: str, width: int = 260, height: int = 120,
                  color: str = "#4a7bd0") -> str:
    """An inline SVG bar chart of a :func:`~.report.histogram` dict."""
    counts, edges = h["counts"], h["edges"]
    top = max(counts) or 1
    plot_h, bw = height - 34, (width - 10) / len(counts)
    bars = "".join(
        f'<rect x="{5 + i * bw:.1f}" y="{18 + plot_h * (1 - c / top):.1f}" '
        f'width="{max(bw - 1, 1):.1f}" height="{plot_h * c / top:.1f}" fill="{color}">'
        f"<title>{_fmt(edges[i])}..{_fmt(edges[i + 1])}: {c}</title></rect>"
        for i, c in enumerate(counts))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{_e(title)}">'
            f'<text x="5" y="12" font-size="12">{_e(title)} (n={h["n"]}, median '
            f'{_fmt(h["median"])})</text>{bars}'
            f'<text x="5" y="{height - 3}" font-size="10">{_fmt(h["min"])}</text>'
            f'<text x="{width - 5}" y="{height - 3}" font-size="10" text-anchor="end">'
            f'{_fmt(h["max"])}</text></svg>')


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(src: str | None, alt: str) -> str:
    return f'<img src="{src}" alt="{_e(alt)}">' if src else \
        f'<span class="muted">[{_e(alt)}: no image]</span>'


def _counts(d: dict) -> str:
    return f"<p>{d['total']} samples</p>" + _table(d["rows"], ["split", "modality", "samples"])


def _failures(d: dict) -> str:
    status = ", ".join(f"{k} {v}" for k, v in d["status"].items())
    rows = [{**r, "examples": "; ".join(r["examples"])} for r in d["rows"]]
    return (f"<p>{d['inputs']} inputs: {_e(status)}</p>"
            + (_table(rows, ["reason", "count", "examples"]) if rows else
               '<p class="good">no failures</p>'))


def _histograms(d: dict) -> str:
    return '<div class="hists">' + "".join(
        svg_histogram(h, name.replace("_", " ")) for name, h in d["histograms"].items()) + "</div>"


def _samples(d: dict) -> str:
    parts = []
    for split, cells in d["splits"].items():
        inner = "".join(
            f'<div class="cell" title="{_e(c["key"])}">{_img(c["src"], c["key"])}'
            f'<b>{_e(c["label"])}</b> {_e(c["caption"])}</div>' for c in cells)
        head = "" if d.get("bare") else f"<h3>{_e(split)}</h3>"
        parts.append(f'{head}<div class="grid" id="grid-{_e(split)}">{inner}</div>')
    return "".join(parts)


def _videos(d: dict) -> str:
    return "".join(
        f'<div class="strip"><span class="cell">{_e(s["key"])}<br>{s["duration"]:.1f} s</span>'
        + "".join(_img(f, f"{s['key']} kf{i}") for i, f in enumerate(s["frames"])) + "</div>"
        for s in d["strips"])


def _audio(d: dict) -> str:
    return "".join(
        f'<div class="pair"><span class="cell">{_e(c["key"])} ({_e(c["split"])}, '
        f'{_e(c["source"])})</span>{_img(c["src"], c["key"] + " mel")}</div>'
        for c in d["clips"])


def _mining(d: dict) -> str:
    charts = [svg_histogram(d[k], f"{k[:-1]} scores", color=col)
              for k, col in (("positives", "#3a9a4a"), ("negatives", "#c0504d")) if d.get(k)]
    return (f"<p>{d['queries']} queries from {_e(d['path'])}</p>"
            f'<div class="hists">{"".join(charts)}</div>')


def _dedup(d: dict) -> str:
    s = d.get("summary", {})
    head = (f"<p>method {_e(s.get('config', {}).get('method'))}: {d['duplicates']} duplicates "
            f"in {_e(s.get('duplicate_sets'))} sets; {_e(s.get('kept'))} of "
            f"{_e(s.get('samples'))} samples kept</p>")
    sets = "".join(
        '<div class="pair">' + "".join(
            f'<div class="cell">{_img(m["src"], m["key"])}{_e(m["key"])}<br>'
            + ("<b>kept</b>" if m["duplicate_of"] is None else
               f"{_e(m['method'])} {m['similarity']:.3f}") + "</div>"
            for m in st["members"]) + "</div>" for st in d["sets"])
    return head + sets


def _audit(d: dict) -> str:
    s = d["summary"]
    verdict = ('<p class="good">passed</p>' if s.get("passed") else
               f'<p class="bad">failed: {_e(s.get("leaks"))} leaks (max '
               f'{_e(s.get("config", {}).get("max_leaks"))})</p>')
    problems = "".join(f"<li>{_e(p)}</li>" for p in s.get("problems", []))
    pairs = "".join(
        f'<div class="pair">{_img(p["src_a"], p["key_a"])}{_img(p["src_b"], p["key_b"])}'
        f'<span>{_e(p["split_a"])}/{_e(p["key_a"])} ~ {_e(p["split_b"])}/{_e(p["key_b"])}: '
        f'{_e(p["method"])} {p["similarity"] if p["similarity"] is not None else ""}</span></div>'
        for p in d["pairs"])
    return (verdict + _table(s.get("by_pair", []), ["split_a", "split_b", "method", "pairs"])
            + (f"<p>contract problems:</p><ul>{problems}</ul>" if problems else
               '<p class="good">contract: whole groups per split; ledger accounts for every '
               "input</p>") + pairs)


RENDERERS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "counts": ("Counts per split and modality", _counts),
    "failures": ("Failures by reason", _failures),
    "histograms": ("Histograms", _histograms),
    "samples": ("Sample thumbnails per split", _samples),
    "videos": ("Keyframe strips", _videos),
    "audio": ("Log-mel spectrograms", _audio),
    "mining": ("Mining scores", _mining),
    "dedup": ("Duplicate sets", _dedup),
    "audit": ("Leakage audit", _audit),
}


def render_html(data: dict[str, Any]) -> str:
    """One HTML document from :func:`~.report.report_data`'s dict."""
    only_grid = data["sections"] == ["samples"]
    body = [] if only_grid else [f"<h1>mmshard report: {_e(data['name'])}</h1>"
                                 f'<p class="muted">{_e(data["root"])}</p>']
    for sid in data["sections"]:
        title, fn = RENDERERS[sid]
        d = data.get(sid) or {"present": False, "why": "not built"}
        if only_grid:
            d = {**d, "bare": True}
        inner = fn(d) if d.get("present") else f'<p class="muted">{_e(d.get("why"))}</p>'
        heading = "" if only_grid else f"<h2>{_e(title)}</h2>"
        body.append(f'<section id="{sid}">{heading}{inner}</section>')
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>mmshard report: {_e(data['name'])}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>")


def write_report(html: str, out: str, storage_options: dict | None = None) -> str:
    """Write ``html`` atomically to ``out`` (a local path or fsspec URL); return its path."""
    folder, _, name = out.rstrip("/").rpartition("/")
    st = Storage(folder or ".", storage_options)
    st.write_bytes(name, html.encode("utf-8"))
    return st.path(name)
