"""``mmshard train-vq``: train a VQ-VAE image tokenizer on a dataset."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ._common import load_yaml

EXAMPLE = """\
examples:
  mmshard train-vq data/photos --k 1024 --steps 5000 --out vq1024.safetensors
  mmshard train-vq data/photos --k 8192 --steps 20000 --image-size 128 --batch-size 64 \\
      --device cuda --workers 8 --num-down 3 --code-dim 32 --out vq8192.safetensors
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
    p.add_argument("--k", type=int, required=True, help="codebook size (number of codes)")
    p.add_argument("--steps", type=int, required=True, help="optimiser steps")
    p.add_argument("--out", required=True, help="checkpoint path, must end in .safetensors")
    p.add_argument("--image-size", type=int, default=64,
                   help="square training size (multiple of 2**num-down; default 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", help="split to read (default train; 'all' "
                   "for every split)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0)")
    m = p.add_argument_group("model (defaults: VQVAEConfig)")
    m.add_argument("--code-dim", type=int, default=None)
    m.add_argument("--channels", default=None, help="encoder widths, e.g. 64,128")
    m.add_argument("--num-down", type=int, default=None, help="downsample factor 2**N")
    m.add_argument("--lr", type=float, default=None)
    m.add_argument("--restart-after", type=int, default=None,
                   help="restart codes unused for this many steps (0: never)")
    m.add_argument("--config", help="YAML mapping of more VQVAEConfig fields; flags win")
    p.add_argument("--log-every", type=int, default=None,
                   help="history stride in the summary (default: about 1000 rows)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def model_options(args: argparse.Namespace) -> dict:
    """VQVAEConfig overrides from ``--config`` and the model flags."""
    out = dict(load_yaml(args.config))
    if args.channels is not None:
        try:
            out["channels"] = [int(c) for c in args.channels.split(",") if c.strip()]
        except ValueError:
            raise ConfigError(f"--channels wants comma-separated ints, got "
                              f"{args.channels!r}") from None
    for flag, key in (("code_dim", "code_dim"), ("num_down", "num_down"), ("lr", "lr"),
                      ("restart_after", "restart_after")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    return out


def run(args: argparse.Namespace) -> int:
    from ..pipelines.train.vqvae import summary_path, train_vq

    summary = train_vq(args.dataset, args.out, k=args.k, steps=args.steps,
                       image_size=args.image_size, batch_size=args.batch_size,
                       seed=args.seed, device=None if args.device == "auto" else args.device,
                       split=None if args.split == "all" else args.split,
                       model=model_options(args), num_workers=args.workers,
                       log_every=args.log_every, progress=not args.no_progress).stats
    brief = {k: summary[k] for k in ("checkpoint", "device", "steps", "epochs", "skipped",
                                     "seconds", "first", "last", "usage")}
    brief["summary"] = summary_path(args.out)
    print(json.dumps(brief, indent=1, default=str))
    return 0
