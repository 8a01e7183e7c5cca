"""``mmshard demo``: the main job end to end on a corpus it makes itself."""

from __future__ import annotations

import argparse
import os

from ._common import make_executor_from_args

EXAMPLE = """\
example:
  mmshard demo /tmp/mmshard-demo            # embedded local Ray cluster
  mmshard demo /tmp/mmshard-demo --executor local
It writes <OUT>/corpus (photos with captions, speech-like and tonal audio, videos with
scene cuts, broken files), ingests it into <OUT>/dataset and verifies the result.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="make a small corpus and run the pipeline on it",
                       description="Run mmshard end to end on a corpus it generates.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for the corpus and the dataset")
    p.add_argument("--images", type=int, default=24)
    from ._common import add_executor_args

    add_executor_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..media.audio import AudioOptions
    from ..media.image import ImageOptions
    from ..pipelines.ingest import FailureRateError, IngestConfig, ingest
    from ..pipelines.sources import SourceOptions
    from ..pipelines.verify import verify_dataset
    from ..synth import make_demo_corpus
    from .ingest_cmd import summary

    corpus = os.path.join(args.out, "corpus")
    dataset = os.path.join(args.out, "dataset")
    counts = make_demo_corpus(corpus, images=args.images)
    print(f"[1/2] corpus: {counts} -> {corpus}")
    config = IngestConfig(
        sources=SourceOptions(group_regex=r"^[^/]+/([^/]+)/"),  # album / speaker folders
        image=ImageOptions(resize="shortest", size=256, format="jpg", quality=90),
        audio=AudioOptions(sample_rate=16000, mono=True, format="flac"),
        splits=(("train", 0.8), ("val", 0.2)), max_samples=16, name="demo",
    )
    executor = make_executor_from_args(args)
    try:
        try:
            result = ingest([corpus], dataset, config, executor=executor,
                            progress=not args.no_progress, overwrite=True)
        except FailureRateError as e:
            result = e.result
    finally:
        executor.close()
    print(f"[2/2] ingest ({type(executor).__name__}) -> {dataset}")
    print(summary(result.stats))
    problems = verify_dataset(dataset)
    print("verify: ok" if not problems else "verify: " + "; ".join(problems))
    return 1 if problems else 0
