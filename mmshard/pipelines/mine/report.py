"""Writing the mining job's outputs through :class:`~mmshard.storage.Storage` (so
``s3://`` works): the final Parquet from chunk parts, the failures table and the
score-histogram PNG.  Consumes the chunk part files of :mod:`.job`; knows nothing of
the job's config.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from ...storage import Storage
from ._arrow import str_array, table, to_numpy

__all__ = ["histogram_png", "write_failures", "write_negatives"]


def histogram_png(edges: np.ndarray, pos: np.ndarray, neg: np.ndarray, title: str) -> bytes:
    """Positive (blue) vs negative (red) score densities as a PNG, drawn with PIL."""
    from PIL import Image, ImageDraw

    w, h, ml, mr, mt, mb = 640, 360, 50, 20, 30, 40
    img = Image.new("RGB", (w, h), "white")
    dr = ImageDraw.Draw(img)
    pw, ph = w - ml - mr, h - mt - mb
    dens = [c / max(c.sum(), 1) for c in (pos, neg)]
    top = max(float(max(d.max(initial=0) for d in dens)), 1e-9)
    nb = len(edges) - 1
    for d, colour in zip(dens, ((40, 90, 220), (220, 50, 40)), strict=True):
        pts = []
        for i in range(nb):
            x0, x1 = ml + pw * i / nb, ml + pw * (i + 1) / nb
            y = mt + ph * (1 - d[i] / top)
            pts += [(x0, y), (x1, y)]
        dr.line(pts, fill=colour, width=2)
    dr.rectangle([ml, mt, ml + pw, mt + ph], outline="black")
    dr.text((ml, h - mb + 8), f"{edges[0]:.3f}", fill="black")
    dr.text((ml + pw - 40, h - mb + 8), f"{edges[-1]:.3f}", fill="black")
    dr.text((ml + pw // 2 - 20, h - mb + 8), "score", fill="black")
    dr.text((ml, 8), title, fill="black")
    dr.text((ml + pw - 150, mt + 6), "positive", fill=(40, 90, 220))
    dr.text((ml + pw - 150, mt + 20), "negative", fill=(220, 50, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _empty_schema(metadata: dict[str, str]):
    import pyarrow as pa

    return pa.schema([("query_key", pa.string()), ("negative_keys", pa.list_(pa.string())),
                      ("negative_scores", pa.list_(pa.float32())),
                      ("negative_ranks", pa.list_(pa.int32())),
                      ("positive_score", pa.float32())], metadata=metadata)


def write_negatives(storage: Storage, rel: str, parts: list[str], qkeys: np.ndarray,
                    ckeys: np.ndarray, metadata: dict[str, str], bins: int) -> dict[str, Any]:
    """Chunk parts (local files) -> the final Parquet at ``rel`` (atomic); returns counts
    and histograms.  Parts of lost chunks (no rows) add nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    metas = [json.loads(pq.read_schema(p).metadata[b"mmshard.chunk"]) for p in parts]
    lo = [m["score_min"] for m in metas if m["score_min"] is not None]
    hi = [m["score_max"] for m in metas if m["score_max"] is not None]
    lo_v, hi_v = (min(lo), max(hi)) if lo else (0.0, 1.0)
    if hi_v <= lo_v:
        hi_v = lo_v + 1e-6
    edges = np.linspace(lo_v, hi_v, bins + 1)
    hist_pos = np.zeros(bins, np.int64)
    hist_neg = np.zeros(bins, np.int64)
    removed: dict[str, int] = {}
    writer = None
    n_rows = n_negs = 0
    with storage.atomic_writer(rel) as f:
        for p, m in zip(parts, metas, strict=True):
            for g, c in m["removed"].items():
                removed[g] = removed.get(g, 0) + c
            if m.get("lost"):
                continue
            t = pq.ParquetFile(p).read()  # not read_table: that imports pandas
            qr = to_numpy(t.column("query_row"))
            cols: dict[str, Any] = {"query_key": str_array(qkeys[qr])}
            ids_col = t.column("negative_ids").combine_chunks()
            flat = to_numpy(ids_col.flatten())
            cols["negative_keys"] = pa.ListArray.from_arrays(ids_col.offsets,
                                                             str_array(ckeys[flat]))
            for name in ("negative_scores", "negative_ranks", "positive_score",
                         "negative_levels"):
                if name in t.column_names:
                    cols[name] = t.column(name).combine_chunks()
            out = table(cols)
            if writer is None:
                writer = pq.ParquetWriter(f, out.schema.with_metadata(metadata))
            writer.write_table(out.replace_schema_metadata(metadata))
            negs = to_numpy(cols["negative_scores"].flatten())
            pos = to_numpy(cols["positive_score"])
            pos = pos[np.isfinite(pos)]
            hist_neg += np.histogram(negs, edges)[0]
            hist_pos += np.histogram(pos, edges)[0]
            n_rows += len(t)
            n_negs += len(negs)
        if writer is None:  # no usable query: an empty file with the full schema
            pq.write_table(_empty_schema(metadata).empty_table(), f)
        else:
            writer.close()
    return {"edges": edges, "hist_pos": hist_pos, "hist_neg": hist_neg, "removed": removed,
            "rows": n_rows, "negatives": n_negs,
            "short": sum(m["short"] for m in metas),
            "no_positive": sum(m["no_positive"] for m in metas),
            "lost": sum(m.get("lost", 0) for m in metas)}


def write_failures(storage: Storage, rel: str, failures: list[dict[str, str]]) -> str | None:
    """The failure rows (key, role, reason, detail, status) at ``rel``; None (and no file)
    when there are none."""
    import pyarrow.parquet as pq

    if not failures:
        storage.remove(rel)
        return None
    cols = {c: str_array([f[c] for f in failures]) for c in ("key", "role", "reason", "detail")}
    cols["status"] = str_array(["failed"] * len(failures))
    with storage.atomic_writer(rel) as f:
        pq.write_table(table(cols), f)
    return storage.path(rel)
