"""``mmshard train-vq``: train a VQ-VAE image tokenizer on a dataset."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ._common import add_config_arg, job_config, non_negative_int, positive_int

EXAMPLE = """\
examples:
  mmshard train-vq data/photos --k 1024 --steps 5000 --out vq1024.safetensors
  mmshard train-vq data/photos --k 8192 --steps 20000 --image-size 128 --batch-size 64 \\
      --device cuda --loader-workers 8 --num-down 3 --code-dim 32 --out vq8192.safetensors
  mmshard tokenize data/photos --fields vqvae --option vqvae.path=vq1024.safetensors \\
      --option vqvae.image_size=64
Images are read with the streaming loader (seeded shuffle; shortest side scaled to
--image-size, then a centre square crop).  Writes the safetensors checkpoint (weights
only) and OUT-stem.summary.json with the loss and codebook-usage history.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train-vq`` on the ``mmshard`` subparsers."""
    p = sub.add_parser("train-vq", help="train a VQ-VAE image tokenizer on a dataset",
                       description="Train a VQ-VAE (EMA codebook, dead-code restarts) on the "
                                   "images of a dataset and save it as safetensors.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="checkpoint path, must end in .safetensors "
                                                "(may be s3://...)")
    add_config_arg(p, "TrainVQConfig: k, steps, image_size, batch_size, seed, split, "
                      "model: {VQVAEConfig fields}, log_every, usage_images")
    p.add_argument("--k", type=positive_int, help="codebook size (number of codes)")
    p.add_argument("--steps", type=positive_int, help="optimiser steps")
    p.add_argument("--image-size", type=positive_int,
                   help="square training size (multiple of 2**num-down; default 64)")
    p.add_argument("--batch-size", type=positive_int, help="default 32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")
    p.add_argument("--seed", type=int)
    p.add_argument("--split", help="split to read (default train; 'all' for every split)")
    p.add_argument("--loader-workers", type=non_negative_int, default=0,
                   help="the Loader's decoding processes (default 0; train-vq runs no "
                        "tasks, so it has no --workers)")
    m = p.add_argument_group("model (defaults: VQVAEConfig)")
    m.add_argument("--code-dim", type=int, default=None)
    m.add_argument("--channels", default=None, help="encoder widths, e.g. 64,128")
    m.add_argument("--num-down", type=int, default=None, help="downsample factor 2**N")
    m.add_argument("--lr", type=float, default=None)
    m.add_argument("--restart-after", type=int, default=None,
                   help="restart codes unused for this many steps (0: never)")
    p.add_argument("--log-every", type=positive_int, default=None,
                   help="history stride in the summary (default: about 1000 rows)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def model_options(args: argparse.Namespace) -> dict:
    """VQVAEConfig overrides from the model flags."""
    out: dict = {}
    if args.channels is not None:
        try:
            out["channels"] = [int(c) for c in args.channels.split(",") if c.strip()]
        except ValueError:
            raise ConfigError(f"--channels wants comma-separated ints, got "
                              f"{args.channels!r}") from None
    for flag in ("code_dim", "num_down", "lr", "restart_after"):
        if getattr(args, flag) is not None:
            out[flag] = getattr(args, flag)
    return out


FLAGS = {"k": "k", "steps": "steps", "image_size": "image_size", "batch_size": "batch_size",
         "seed": "seed", "log_every": "log_every"}


def train_config(args: argparse.Namespace):
    """The :class:`TrainVQConfig` of ``--config`` with the given flags applied."""
    from ..pipelines.train.vqvae import TrainVQConfig
    from ._common import load_yaml

    data = load_yaml(args.config)
    model = {**dict(data.get("model") or {}), **model_options(args)}
    if model:
        data["model"] = model
    if args.split is not None:
        data["split"] = None if args.split == "all" else args.split
    return job_config(TrainVQConfig.from_dict, args, FLAGS, base=data)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.train.vqvae import summary_path, train_vq

    result = train_vq(args.dataset, args.out, train_config(args),
                      device=None if args.device == "auto" else args.device,
                      num_workers=args.loader_workers, progress=not args.no_progress)
    summary = result.stats
    brief = {k: summary[k] for k in ("checkpoint", "device", "steps", "epochs", "skipped",
                                     "seconds", "first", "last", "usage")}
    brief["summary"] = summary_path(result.out)
    print(json.dumps(brief, indent=1, default=str))
    return 0
