"""A tiny corpus with planted near duplicates across splits, ingested for real.

Groups are directories (``--group-level 0``) whose split under ``train=0.5,val=0.5``
(seed 0) is known in advance, so each planted copy lands where the test says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from PIL import Image

from mmshard import synth
from mmshard.samplers.splits import assign_split

SPEC = (("train", 0.5), ("val", 0.5))


def groups_in(split: str, n: int) -> list[str]:
    out = [g for g in (f"album{i}" for i in range(50)) if assign_split(g, SPEC) == split]
    return out[:n]


def _save(path: str, im: Image.Image, fmt: str = "JPEG", quality: int = 92) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path, fmt, **({"quality": quality} if fmt == "JPEG" else {}))


@dataclass
class Corpus:
    src: str
    planted: dict[str, str] = field(default_factory=dict)  # copy key -> original key
    kinds: dict[str, str] = field(default_factory=dict)    # copy key -> how it was made


def make_corpus(root: str, *, leaks: bool = True, per_group: int = 3) -> Corpus:
    """Distinct photos in two train and two val albums; with ``leaks`` the val albums
    also hold a resized, a re-encoded, a cropped and a byte-identical copy of train
    photos, and train holds one resized copy of its own photo (a dedup-only case)."""
    src = os.path.join(root, "src")
    tr, va = groups_in("train", 2), groups_in("val", 2)
    seed = 0
    originals = {}
    for g in tr + va:
        for i in range(per_group):
            im = synth.photo_like(64, 48, seed=100 + seed)
            seed += 1
            _save(os.path.join(src, g, f"p{i}.jpg"), im)
            originals[f"{g}__p{i}"] = im
    c = Corpus(src=src)
    if not leaks:
        return c
    t0, t1 = tr
    a = originals[f"{t0}__p0"]
    _save(os.path.join(src, va[0], "resized.jpg"), a.resize((48, 36), Image.Resampling.LANCZOS))
    c.planted[f"{va[0]}__resized"], c.kinds[f"{va[0]}__resized"] = f"{t0}__p0", "resized"
    b = originals[f"{t0}__p1"]
    _save(os.path.join(src, va[0], "reencoded.jpg"), b, quality=35)
    c.planted[f"{va[0]}__reencoded"], c.kinds[f"{va[0]}__reencoded"] = f"{t0}__p1", "reencoded"
    d = originals[f"{t1}__p0"]
    _save(os.path.join(src, va[1], "cropped.png"), d.crop((2, 2, 62, 46)), fmt="PNG")
    c.planted[f"{va[1]}__cropped"], c.kinds[f"{va[1]}__cropped"] = f"{t1}__p0", "cropped"
    with open(os.path.join(src, t1, "p1.jpg"), "rb") as f:
        data = f.read()
    with open(os.path.join(src, va[1], "copy.jpg"), "wb") as f:
        f.write(data)
    c.planted[f"{va[1]}__copy"], c.kinds[f"{va[1]}__copy"] = f"{t1}__p1", "exact"
    e = originals[f"{t1}__p2"]
    _save(os.path.join(src, t1, "small.jpg"), e.resize((32, 24), Image.Resampling.BILINEAR))
    c.planted[f"{t1}__small"], c.kinds[f"{t1}__small"] = f"{t1}__p2", "same-split"
    return c


def ingest_corpus(corpus: Corpus, out: str) -> str:
    from mmshard import IngestConfig, SourceOptions, ingest, make_executor

    ingest([corpus.src], out, IngestConfig(sources=SourceOptions(group_level=0), splits=SPEC,
                                           max_samples=4), executor=make_executor("local"))
    return out
