"""Build small mmshard dataset folders for tests (TarWriter + DatasetIndex + manifest).

>>> info = make_dataset(tmp_path / "ds", shard_sizes={"train": (3, 5, 1)})  # doctest: +SKIP
>>> info.keys["train"][:2]                                                   # doctest: +SKIP
['train_00000', 'train_00001']

Samples are numbered per split in write order; sample ``i`` has caption ``"caption i"``,
label ``cls = i``, group ``g{i // group_size}`` and (``image=True``) an RGB image of
one of several aspect ratios whose pixels all equal ``i % 256`` (PNG for even ``i``,
JPEG for odd).  ``audio=True`` adds a 0.05 s FLAC sine; ``mel=True`` a ``mel/``
sidecar with ``mel.npy`` = full((4, 6 + i % 3), i).  ``corrupt`` keys get bytes that no
decoder reads.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmshard.dataset import DatasetIndex, ShardInfo
from mmshard.tario import TarWriter

SIZES = ((16, 16), (24, 12), (12, 24), (20, 16), (32, 16))  # (width, height)


@dataclass
class DatasetInfo:
    root: str
    keys: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    size: dict[str, tuple[int, int]] = field(default_factory=dict)


def image_bytes(i: int, w: int, h: int, fmt: str) -> bytes:
    from PIL import Image

    arr = np.full((h, w, 3), i % 256, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def flac_bytes(i: int, sr: int = 8000, seconds: float = 0.05) -> bytes:
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    wav = (0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="FLAC")
    return buf.getvalue()


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def make_dataset(root: str | Path, *, shard_sizes: Mapping[str, Iterable[int]],
                 group_size: int = 1, image: bool = False, audio: bool = False,
                 mel: bool = False, corrupt: Iterable[str] = (), name: str = "test",
                 manifest: bool = True) -> DatasetInfo:
    """Write a dataset folder; ``shard_sizes`` maps split -> samples per shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    if mel:
        (root / "mel").mkdir(exist_ok=True)
    bad = set(corrupt)
    info = DatasetInfo(root=str(root))
    shards: list[ShardInfo] = []
    mel_shards: list[ShardInfo] = []
    rows: dict[str, list] = {c: [] for c in ("key", "split", "shard", "group", "modality",
                                             "width", "height", "sample_rate", "duration")}
    for split, sizes in shard_sizes.items():
        i = 0
        info.keys[split] = []
        for n, count in enumerate(sizes):
            url = f"shards/{split}-{n:06d}.tar"
            with TarWriter(str(root / url)) as w:
                mw = TarWriter(str(root / "mel" / f"{split}-{n:06d}.tar")) if mel else None
                for _ in range(count):
                    key = f"{split}_{i:05d}"
                    group = f"g{i // group_size}"
                    wd, ht = SIZES[i % len(SIZES)]
                    meta = {"source": f"src/{key}", "modality": "image" if image else "text",
                            "sha256": "0" * 64, "size": 0, "group": group, "split": split}
                    sample: dict = {"__key__": key, "txt": f"caption {i}", "cls": str(i)}
                    if image:
                        fmt, fld = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
                        sample[fld] = b"not an image" if key in bad else \
                            image_bytes(i, wd, ht, fmt)
                        meta.update(width=wd, height=ht)
                    if audio:
                        sample["flac"] = b"not audio" if key in bad and not image else \
                            flac_bytes(i)
                        meta.update(sample_rate=8000, channels=1, duration=0.05)
                    sample["json"] = json.dumps(meta)
                    w.write(sample)
                    if mw is not None:
                        mw.write({"__key__": key, "mel.npy": npy_bytes(
                            np.full((4, 6 + i % 3), float(i), dtype=np.float32))})
                    info.keys[split].append(key)
                    info.groups[key] = group
                    info.size[key] = (wd, ht)
                    rows["key"].append(key)
                    rows["split"].append(split)
                    rows["shard"].append(url)
                    rows["group"].append(group)
                    rows["modality"].append(meta["modality"])
                    rows["width"].append(wd if image else None)
                    rows["height"].append(ht if image else None)
                    rows["sample_rate"].append(8000 if audio else None)
                    rows["duration"].append(0.05 if audio else None)
                    i += 1
                if mw is not None:
                    mw.close()
            shards.append(ShardInfo(url=url, split=split, nsamples=count,
                                    filesize=(root / url).stat().st_size, sha256=""))
            if mel:
                mel_shards.append(ShardInfo(url=f"{split}-{n:06d}.tar", split=split,
                                            nsamples=count, filesize=0, sha256=""))
    index = DatasetIndex(name=name, shards=tuple(shards))
    (root / "index.json").write_bytes(index.to_json())
    if mel:
        (root / "mel" / "index.json").write_bytes(
            DatasetIndex(name=name, shards=tuple(mel_shards), field_set="mel").to_json())
    if manifest:
        pq.write_table(pa.table(rows), str(root / "manifest.parquet"))
    return info
