"""``mmshard report``: the data behind the HTML report (rendering is in :mod:`.report_html`).

:func:`report_data` reads a dataset folder and returns one dict per section (``SECTIONS``),
all plain JSON-able values with images as ``data:`` URIs, so each section can be tested
without a browser:

- ``counts``: samples per split and modality (manifest);
- ``failures``: ledger failures by reason with up to three example sources each;
- ``histograms``: width, height, aspect ratio, duration, sample rate (manifest) and caption
  length in characters (captions of up to ``scan`` samples per split);
- ``samples``: up to ``grid`` image thumbnails per split with caption and label;
- ``videos``: keyframe strips from the ``keyframes/`` sidecar (first ``videos`` videos);
- ``audio``: log-mel images (``mel/`` sidecar, else computed from the audio);
- ``mining``: positive / negative score histograms of a ``negatives.parquet``;
- ``dedup``: ``dedup/summary.json`` and the first duplicate sets side by side;
- ``audit``: ``audit/summary.json`` (pairs per split pair and method, contract problems)
  and example leaking pairs side by side.

A section with nothing to show holds ``{"present": False, "why": ...}``.

>>> data = report_data("data/photos")             # doctest: +SKIP
>>> data["counts"]["rows"][0]                     # doctest: +SKIP
{'split': 'train', 'modality': 'image', 'samples': 900}
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...dataset import Dataset
from ...errors import ConfigError, MmshardError, ShardError
from .hashing import IMAGE_FIELDS, decode_errors

__all__ = ["SECTIONS", "ReportConfig", "report_data"]

SECTIONS = ("counts", "failures", "histograms", "samples", "videos", "audio", "mining",
            "dedup", "audit")
AUDIO_FIELDS = ("flac", "wav", "mp3", "ogg", "m4a")


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """What the report shows.  ``sections``: any of ``SECTIONS``; ``grid``: thumbnails per
    split; ``thumb``: thumbnail size in pixels; ``negatives``: a negatives.parquet (default
    ``<dataset>/negatives.parquet`` when present).

    >>> ReportConfig(grid=8).grid
    8
    """

    sections: tuple[str, ...] = SECTIONS
    grid: int = 12
    thumb: int = 96
    scan: int = 2000
    videos: int = 4
    audio: int = 4
    dedup_sets: int = 8
    audit_pairs: int = 8
    negatives: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", tuple(self.sections))
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ConfigError(f"unknown report section(s) {bad}; allowed: {', '.join(SECTIONS)}")
        for name in ("grid", "thumb", "scan", "videos", "audio", "dedup_sets", "audit_pairs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0 or (name == "thumb" and v < 16):
                raise ConfigError(f"{name} must be an int >= {16 if name == 'thumb' else 0}, "
                                  f"got {v!r}")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_uri(data: bytes, size: int) -> str | None:
    """A JPEG data URI of image bytes, longest side ``size``; None when it does not decode."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        im.thumbnail((size, size))
    except decode_errors():  # a broken image is shown as missing, not fatal
        return None
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


def _image_of(sample: dict) -> bytes | None:
    return next((sample[f] for f in IMAGE_FIELDS if f in sample), None)


def _text(b: bytes | None) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else ""


def _manifest(ds: Dataset) -> dict[str, list]:
    try:
        return ds.read_table("manifest").to_pydict()
    except ShardError:
        return {}


def _counts(m: dict[str, list]) -> dict[str, Any]:
    c = Counter(zip(m.get("split", []), m.get("modality", [])))
    rows = [{"split": s, "modality": mo, "samples": n} for (s, mo), n in sorted(c.items())]
    return {"present": bool(rows), "rows": rows, "total": sum(c.values()),
            "why": "" if rows else "no manifest.parquet"}


def _failures(ds: Dataset) -> dict[str, Any]:
    try:
        led = ds.read_table("ledger").to_pydict()
    except ShardError:
        return {"present": False, "why": "no ledger.parquet"}
    by: dict[str, list[str]] = defaultdict(list)
    for src, status, reason in zip(led["source"], led["status"], led["reason"]):
        if status == "failed":
            by[reason or "unknown"].append(src)
    rows = [{"reason": r, "count": len(s), "examples": s[:3]}
            for r, s in sorted(by.items(), key=lambda x: (-len(x[1]), x[0]))]
    status = Counter(led["status"])
    return {"present": True, "rows": rows, "status": dict(sorted(status.items())),
            "inputs": len(led["source"])}


def histogram(values: Iterable[float], bins: int = 20) -> dict[str, Any] | None:
    """``{"edges": [...], "counts": [...], "n", "min", "max", "median"}`` or None if empty."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    counts, edges = np.histogram(v, bins=bins if hi > lo else 1,
                                 range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "n": int(v.size), "min": lo, "max": hi, "median": float(np.median(v))}


def _scan(ds: Dataset, config: ReportConfig, want_grid: bool) -> dict[str, Any]:
    """One pass over the first shards of each split: captions, grid thumbnails, audio."""
    captions, grid, audio = [], defaultdict(list), []
    per_split: Counter = Counter()
    for shard in ds.index.shards:
        if per_split[shard.split] >= config.scan:
            continue
        for s in ds.iter_shard(shard):
            per_split[shard.split] += 1
            cap = _text(s.get("txt"))
            if "txt" in s:
                captions.append(len(cap))
            img = _image_of(s)
            if want_grid and img is not None and len(grid[shard.split]) < config.grid:
                uri = thumbnail_uri(img, config.thumb)
                if uri:
                    grid[shard.split].append({"key": s["__key__"], "src": uri,
                                              "caption": cap[:120],
                                              "label": _text(s.get("cls")).strip()})
            a = next((f for f in AUDIO_FIELDS if f in s), None)
            if a and len(audio) < config.audio:
                audio.append((s["__key__"], shard.split, s[a]))
            if per_split[shard.split] >= config.scan:
                break
    return {"captions": captions, "grid": dict(grid), "audio": audio}


def _histograms(m: dict[str, list], captions: list[int]) -> dict[str, Any]:
    w, h = m.get("width", []), m.get("height", [])
    aspect = [a / b for a, b in zip(w, h) if a and b]
    hs = {"width": histogram(w), "height": histogram(h), "aspect": histogram(aspect),
          "duration": histogram(m.get("duration", [])),
          "sample_rate": histogram(m.get("sample_rate", [])),
          "caption_length": histogram(captions)}
    hs = {k: v for k, v in hs.items() if v is not None}
    return {"present": bool(hs), "histograms": hs, "why": "" if hs else "no media facts"}


def _samples(grid: dict[str, list]) -> dict[str, Any]:
    return {"present": bool(grid), "splits": grid, "why": "" if grid else "no images"}


def _videos(ds: Dataset, config: ReportConfig) -> dict[str, Any]:
    if "keyframes" not in ds.sidecars():
        return {"present": False, "why": "no keyframes/ sidecar (mmshard tokenize --fields "
                                         "keyframes)"}
    strips = []
    for shard in ds.sidecars()["keyframes"].shards:
        for s in ds.iter_shard(shard, field_set="keyframes"):
            kf = json.loads(s.get("kf.json", b"{}") or b"{}")
            frames = [thumbnail_uri(s[k], config.thumb) for k in sorted(s)
                      if k.startswith("kf.") and k.endswith(".jpg")]
            strips.append({"key": s["__key__"], "frames": [f for f in frames if f],
                           "times": [k.get("time") for k in kf.get("keyframes", [])],
                           "duration": (kf.get("num_frames") or 0) / (kf.get("fps") or 1)})
            if len(strips) >= config.videos:
                return {"present": True, "strips": strips}
    return {"present": bool(strips), "strips": strips, "why": "" if strips else "no videos"}


def mel_image_uri(mel: np.ndarray, height: int = 80) -> str:
    """A PNG data URI of a (bins, frames) log-mel array, low frequencies at the bottom."""
    from PIL import Image

    a = np.asarray(mel, dtype=np.float32)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
    # a small viridis-like ramp: dark blue -> teal -> yellow
    ramp = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                     [253, 231, 37]], np.float32)
    x = a[::-1] * (len(ramp) - 1)
    lo = np.floor(x).astype(int).clip(0, len(ramp) - 2)
    t = (x - lo)[..., None]
    rgb = (ramp[lo] * (1 - t) + ramp[lo + 1] * t).astype(np.uint8)
    im = Image.fromarray(rgb).resize((max(120, min(600, a.shape[1] * 2)), height))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return data_uri(buf.getvalue(), "image/png")


def _audio(ds: Dataset, clips: list[tuple[str, str, bytes]], config: ReportConfig
           ) -> dict[str, Any]:
    mels: dict[str, np.ndarray] = {}
    if "mel" in ds.sidecars():
        wanted = {k for k, _, _ in clips}
        for shard in ds.sidecars()["mel"].shards:
            for s in ds.iter_shard(shard, field_set="mel"):
                if s["__key__"] in wanted and "mel.npy" in s:
                    mels[s["__key__"]] = np.load(io.BytesIO(s["mel.npy"]), allow_pickle=False)
            if len(mels) == len(wanted):
                break
    out = []
    for key, split, data in clips:
        mel = mels.get(key)
        source = "mel/ sidecar"
        if mel is None:
            from ...media.audio import decode_audio
            from ...tokenizers.audio_features import log_mel_spectrogram

            try:  # frames x channels -> mono; the picture needs no exact resampling
                wav, sr, _ = decode_audio(data)
                mono = wav.mean(axis=1)
                if sr != 16000:  # linear resampling is plenty for a picture
                    t = np.arange(int(len(mono) * 16000 / sr)) * (sr / 16000)
                    mono = np.interp(t, np.arange(len(mono)), mono)
                mel = log_mel_spectrogram(np.ascontiguousarray(mono, np.float32)).numpy()
            except MmshardError:  # undecodable or too short: left out of the section
                continue
            source = "computed"
        out.append({"key": key, "split": split, "src": mel_image_uri(mel), "source": source,
                    "shape": list(mel.shape)})
    return {"present": bool(out), "clips": out, "why": "" if out else "no audio"}


def _mining(ds: Dataset, config: ReportConfig) -> dict[str, Any]:
    import pyarrow.parquet as pq

    path = config.negatives
    if path is None:
        if not ds.storage.exists("negatives.parquet"):
            return {"present": False, "why": "no negatives.parquet (pass --negatives)"}
        path = ds.storage.path("negatives.parquet")
    t = pq.read_table(path, columns=["negative_scores", "positive_score"]).to_pydict()
    neg = [x for xs in t["negative_scores"] if xs for x in xs]
    pos = [x for x in t["positive_score"] if x is not None]
    return {"present": True, "path": path, "queries": len(t["positive_score"]),
            "negatives": histogram(neg, 30), "positives": histogram(pos, 30)}


def _thumbs_by_key(ds: Dataset, keys: set[str], size: int) -> dict[str, str | None]:
    if not keys:
        return {}
    m = ds.read_table("manifest").select(["key", "shard"]).to_pydict()
    shards = {s for k, s in zip(m["key"], m["shard"]) if k in keys}
    out: dict[str, str | None] = {}
    for shard in ds.index.shards:  # manifest names shards by stem ("train-000000")
        stem = shard.url.rsplit("/", 1)[-1].removesuffix(".tar")
        if stem not in shards and shard.url not in shards:
            continue
        for s in ds.iter_shard(shard):
            if s["__key__"] in keys:
                img = _image_of(s)
                out[s["__key__"]] = thumbnail_uri(img, size) if img is not None else None
    return out


def _dedup(ds: Dataset, config: ReportConfig) -> dict[str, Any]:
    import pyarrow.parquet as pq

    if not ds.storage.exists("dedup/dedup.parquet"):
        return {"present": False, "why": "no dedup/ (run mmshard dedup)"}
    summary = json.loads(ds.storage.read_bytes("dedup/summary.json")) \
        if ds.storage.exists("dedup/summary.json") else {}
    with ds.storage.open_read("dedup/dedup.parquet") as f:
        rows = pq.read_table(f).to_pylist()
    sets: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if r["cluster"] < config.dedup_sets:
            sets[r["cluster"]].append(r)
    thumbs = _thumbs_by_key(ds, {r["key"] for rs in sets.values() for r in rs}, config.thumb)
    shown = [{"cluster": c, "members": [{**r, "src": thumbs.get(r["key"])} for r in rs]}
             for c, rs in sorted(sets.items())]
    return {"present": True, "summary": summary, "sets": shown,
            "duplicates": sum(r["duplicate_of"] is not None for r in rows)}


def _audit(ds: Dataset, config: ReportConfig) -> dict[str, Any]:
    import pyarrow.parquet as pq

    if not ds.storage.exists("audit/summary.json"):
        return {"present": False, "why": "no audit/ (run mmshard audit)"}
    summary = json.loads(ds.storage.read_bytes("audit/summary.json"))
    pairs = []
    if ds.storage.exists("audit/audit.parquet"):
        with ds.storage.open_read("audit/audit.parquet") as f:
            rows = [r for r in pq.read_table(f).to_pylist() if r["method"] != "group"]
        pairs = rows[:config.audit_pairs]
        ta = _thumbs_by_key(ds, {r["key_a"] for r in pairs}, config.thumb)
        local_b = {r["key_b"] for r in pairs if not r["dataset_b"]}
        tb = _thumbs_by_key(ds, local_b, config.thumb)
        for other in {r["dataset_b"] for r in pairs if r["dataset_b"]}:
            try:
                tb.update(_thumbs_by_key(Dataset(other), {r["key_b"] for r in pairs
                                                          if r["dataset_b"] == other},
                                         config.thumb))
            except ShardError:
                pass
        pairs = [{**r, "src_a": ta.get(r["key_a"]), "src_b": tb.get(r["key_b"])} for r in pairs]
    return {"present": True, "summary": summary, "pairs": pairs}


@dataclass
class _Inputs:
    """What the section builders share: the dataset, the config, the manifest columns and
    the one scan over the first shards."""

    ds: Dataset
    config: ReportConfig
    manifest: dict[str, list]
    scan: dict[str, Any]


BUILDERS: dict[str, Callable[[_Inputs], dict[str, Any]]] = {
    "counts": lambda x: _counts(x.manifest),
    "failures": lambda x: _failures(x.ds),
    "histograms": lambda x: _histograms(x.manifest, x.scan["captions"]),
    "samples": lambda x: _samples(x.scan["grid"]),
    "videos": lambda x: _videos(x.ds, x.config),
    "audio": lambda x: _audio(x.ds, x.scan["audio"], x.config),
    "mining": lambda x: _mining(x.ds, x.config),
    "dedup": lambda x: _dedup(x.ds, x.config),
    "audit": lambda x: _audit(x.ds, x.config),
}


def report_data(dataset: str, config: ReportConfig | None = None, *, progress: bool = False,
                storage_options: dict | None = None) -> dict[str, Any]:
    """Every section's data (see the module docstring); ``progress`` shows a tqdm bar."""
    from tqdm import tqdm

    config = config or ReportConfig()
    ds = Dataset(dataset, storage_options)
    want = [s for s in SECTIONS if s in config.sections]
    out: dict[str, Any] = {"name": ds.index.name or ds.root, "root": ds.root,
                           "sections": list(config.sections)}
    with tqdm(total=len(want) + 1, desc="report", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("scan", refresh=False)
        scan = _scan(ds, config, "samples" in want) if {"histograms", "samples", "audio"} \
            & set(want) else {"captions": [], "grid": {}, "audio": []}
        inputs = _Inputs(ds=ds, config=config, manifest=_manifest(ds), scan=scan)
        bar.update(1)
        for section in want:
            bar.set_postfix_str(section, refresh=False)
            out[section] = BUILDERS[section](inputs)
            bar.update(1)
    return out
