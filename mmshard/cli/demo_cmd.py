"""``mmshard demo``: the whole path end to end on a corpus it makes itself."""

from __future__ import annotations

import argparse
import json
import os
import time

from ._common import add_executor_args, make_executor_from_args, table

EXAMPLE = """\
example:
  mmshard demo /tmp/mmshard-demo            # embedded local Ray cluster
  mmshard demo /tmp/mmshard-demo --executor local --stages ingest,tokenize
Stages (default: all):
  ingest    corpus (captioned photos, speech-like/tonal audio, videos with scene cuts,
            broken files) -> <OUT>/dataset, then verify
  tokenize  Whisper log-mel, spectral features, MFCC, keyframes; a 32-unit codebook fit
            on the MFCC frames and discrete units
  mine      photos -> <OUT>/photos; caption and image embeddings (built-in encoders);
            hard negatives for captions with the album as false-negative guard
  train     a few steps of examples/train_clip.py on the photos with those negatives
            (streaming Loader; skipped when the example file is not there)
"""
STAGES = ("ingest", "tokenize", "mine", "train")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="make a small corpus and run the pipeline on it",
                       description="Run mmshard end to end on a corpus it generates.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for the corpus and the datasets")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    add_executor_args(p)
    p.set_defaults(func=run)


def _say(step: str, text: str) -> None:
    print(f"\n== {step}: {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown demo stage(s) {unknown}; allowed: {', '.join(STAGES)}")
    corpus = os.path.join(args.out, "corpus")
    dataset = os.path.join(args.out, "dataset")
    photos = os.path.join(args.out, "photos")
    executor = make_executor_from_args(args)
    status = 0
    try:
        if "ingest" in stages:
            status |= _ingest(args, corpus, dataset, executor)
        if "tokenize" in stages:
            _tokenize(args, dataset, executor)
        if "mine" in stages:
            _mine(args, corpus, photos, executor)
        if "train" in stages:
            _train(args, photos)
    finally:
        executor.close()
    return status


def _ingest(args, corpus: str, dataset: str, executor) -> int:
    from ..media.audio import AudioOptions
    from ..media.image import ImageOptions
    from ..pipelines.ingest.job import FailureRateError, IngestConfig, ingest
    from ..pipelines.ingest.sources import SourceOptions
    from ..synth import make_demo_corpus
    from ..verify import verify_dataset
    from .ingest_cmd import summary

    counts = make_demo_corpus(corpus, images=args.images)
    _say("corpus", f"{counts} -> {corpus}")
    config = IngestConfig(
        sources=SourceOptions(group_regex=r"^[^/]+/([^/]+)/"),  # album / speaker folders
        image=ImageOptions(resize="shortest", size=256, format="jpg", quality=90),
        audio=AudioOptions(sample_rate=16000, mono=True, format="flac"),
        splits=(("train", 0.8), ("val", 0.2)), max_samples=16, name="demo",
    )
    try:
        result = ingest([corpus], dataset, config, executor=executor,
                        progress=not args.no_progress, overwrite=True)
    except FailureRateError as e:
        result = e.result
    _say("ingest", f"{type(executor).__name__} -> {dataset}")
    print(summary(result.stats))
    problems = verify_dataset(dataset)
    print("verify: ok" if not problems else "verify: " + "; ".join(problems))
    return 1 if problems else 0


def _tokenize(args, dataset: str, executor) -> None:
    from ..pipelines.train.codebook import fit_codebook
    from ..pipelines.transform.job import tokenize

    t0 = time.perf_counter()
    r = tokenize(dataset, {"mel": {}, "spectral": {}, "mfcc": {}, "keyframes": {}},
                 executor=executor, overwrite=True, progress=not args.no_progress)
    cb = os.path.join(dataset, "units32.safetensors")
    info = fit_codebook(dataset, cb, field="mfcc", k=32).stats
    r2 = tokenize(dataset, {"units": {"codebook_path": cb, "frame_rate_reduction": 4}},
                  executor=executor, overwrite=True, progress=not args.no_progress)
    stats = {**r.stats, **r2.stats}
    _say("tokenize", f"sidecar field sets in {time.perf_counter() - t0:.1f} s")
    print(table([(n, s["ok"], s["failed"], s["skipped"], s["bytes"]) for n, s in stats.items()],
                ("field set", "ok", "failed", "skipped", "bytes")))
    print(f"units codebook: k={info['k']} on {info['vectors']} MFCC frames, "
          f"perplexity {info['usage']['perplexity']:.1f}")


def _mine(args, corpus: str, photos: str, executor) -> None:
    from ..media.image import ImageOptions
    from ..pipelines.ingest.job import IngestConfig, ingest
    from ..pipelines.ingest.sources import SourceOptions
    from ..pipelines.mine.config import MineConfig
    from ..pipelines.mine.embeddings_io import EmbeddingSource
    from ..pipelines.mine.job import mine
    from ..pipelines.transform.job import TokenizeConfig, tokenize
    from ..samplers.negatives import MarginConfig

    ingest([os.path.join(corpus, "photos")], photos, IngestConfig(
        sources=SourceOptions(group_level=0), max_samples=8, name="photos",
        image=ImageOptions(resize="shortest", size=64, format="jpg")),
        executor=executor, overwrite=True)
    # captions and images in one 256-d space (the built-in encoders need no weights)
    tokenize(photos, TokenizeConfig(field_sets={
        "emb_txt": {"kind": "emb", "encoder": "hashing", "field": "txt", "dim": 256},
        "emb_jpg": {"kind": "emb", "encoder": "pixels", "field": "jpg"}}),
        executor=executor, overwrite=True, progress=not args.no_progress)
    import pyarrow.parquet as pq

    groups = os.path.join(photos, "groups.parquet")
    pq.write_table(pq.read_table(os.path.join(photos, "manifest.parquet"),
                                 columns=["key", "group"]), groups)
    cfg = MineConfig(  # caption -> image: queries emb_txt, corpus emb_jpg, same-key positives
        queries=EmbeddingSource(path=os.path.join(photos, "emb_txt"), field="emb_txt.npy"),
        corpus=EmbeddingSource(path=os.path.join(photos, "emb_jpg"), field="emb_jpg.npy"),
        groups=groups, out=os.path.join(photos, "negatives.parquet"), k=4,
        strategy=MarginConfig(relative=0.95))
    result = mine(cfg, executor=executor, progress=False)
    _say("mine", f"{result.n_mined} of {result.n_queries} captions got hard image negatives "
                 f"({result.index_kind} index) -> {result.out}")
    s = result.summary
    print(json.dumps({k: s[k] for k in ("queries", "corpus", "negatives", "removed")},
                     indent=1, default=str))


def _train(args, photos: str) -> None:
    import runpy

    here = os.path.dirname(os.path.abspath(__file__))
    example = os.path.join(here, "..", "..", "examples", "train_clip.py")
    if not os.path.exists(example):
        _say("train", "examples/train_clip.py is not installed with the package: skipped "
                      "(install with `pip install -e .` from a checkout)")
        return
    mod = runpy.run_path(example)
    ckpt = os.path.join(args.out, "clip-ckpt")
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)  # the demo trains from scratch every time
    negatives = os.path.join(photos, "negatives.parquet")
    argv = [photos, "--steps", "6", "--out", ckpt, "--batch-size", "4", "--save-every", "3"]
    if os.path.exists(negatives):
        argv += ["--negatives", negatives]
    t0 = time.perf_counter()
    out = mod["main"](argv)
    _say("train", f"6 CLIP steps with the streaming Loader in {time.perf_counter() - t0:.1f} s")
    losses = ", ".join(f"{x:.3f}" for x in out["losses"])
    print(f"losses: {losses}\nloader: {json.dumps(out['stats'], default=str)}")
