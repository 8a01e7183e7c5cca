"""A tiny CLIP-style training loop on an mmshard dataset (images + captions).

    python examples/train_clip.py DATASET --steps 20 --out ckpt/
    python examples/train_clip.py DATASET --steps 40 --out ckpt/ --negatives negatives.parquet
    python examples/train_clip.py DATASET --steps 20 --out ckpt/ --packed --max-tokens 256

A small CNN image encoder and a bag-of-bytes caption encoder (no downloads) are trained
with a symmetric InfoNCE loss.  With ``--negatives`` (a Parquet from ``mmshard mine``)
each query's mined hard negatives are placed in its batch by the loader, and pairs of
the same group are masked out of the negatives (``__pos_mask__``).  A checkpoint
(model, optimizer, loader position, step) is written to ``OUT/last.pt`` and loaded with
``torch.load(weights_only=True)``; rerunning the same command with a larger ``--steps``
resumes exactly where it stopped.  Uses the GPU when there is one.

With ``--packed`` images keep their aspect and (up to ``--max-tokens`` patches of
``--patch`` pixels, Pix2Struct-style) their resolution: the loader packs each batch's
patch sequences NaViT-style (``PatchPacking``: segment ids, 2-D positions, a
block-diagonal attention mask) and a tiny ViT tower attends within each image and
mean-pools its tokens.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmshard.pipelines.stream.decode import DecodeConfig, ImageDecode, ShortestSideCrop
from mmshard.pipelines.stream.loader import Loader
from mmshard.pipelines.stream.packing import PatchPacking
from mmshard.samplers.batching import FixedBatching, NegativeCoBatching, NegativeTable


class ImageEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PackedImageEncoder(nn.Module):
    """A one-block ViT over packed patch sequences: patch embedding + factorised 2-D
    position embeddings, attention inside each image (``attention_mask``), then the mean
    of each image's tokens (``segment_ids``) -> one vector per sample."""

    def __init__(self, dim: int, patch: int, max_grid: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.row = nn.Embedding(max_grid, dim)
        self.col = nn.Embedding(max_grid, dim)
        self.heads = heads
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, dim)

    def forward(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        patches = batch["patches"].to(device, non_blocking=True)
        seg = batch["segment_ids"].to(device)
        pos = batch["positions"].to(device).clamp(min=0, max=self.row.num_embeddings - 1)
        x = self.embed(patches) + self.row(pos[..., 0]) + self.col(pos[..., 1])
        eye = torch.eye(seg.shape[1], dtype=torch.bool, device=device)
        blocked = ~(batch["attention_mask"].to(device) | eye)  # padding attends to itself
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=blocked.repeat_interleave(self.heads, 0),
                          need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        n = len(batch["grid"])
        flat, ids = x.reshape(-1, x.shape[-1]), seg.reshape(-1)
        sums = torch.zeros(n + 1, x.shape[-1], device=device).index_add_(0, ids, flat)
        counts = torch.bincount(ids, minlength=n + 1).clamp(min=1).unsqueeze(1)
        return self.out(sums[1:] / counts[1:])


class TextEncoder(nn.Module):
    """Mean of byte embeddings: enough to learn something, no tokenizer download."""

    def __init__(self, dim: int, max_len: int = 64) -> None:
        super().__init__()
        self.max_len = max_len
        self.emb = nn.EmbeddingBag(257, dim, mode="mean", padding_idx=256)

    def forward(self, texts: list[str], device: torch.device) -> torch.Tensor:
        ids = torch.full((len(texts), self.max_len), 256, dtype=torch.long)
        for i, t in enumerate(texts):
            b = list(t.encode("utf-8")[: self.max_len]) or [0]
            ids[i, : len(b)] = torch.tensor(b)
        return self.emb(ids.to(device))


class Clip(nn.Module):
    def __init__(self, dim: int = 64, packed_patch: int | None = None) -> None:
        super().__init__()
        self.image = ImageEncoder(dim) if packed_patch is None else \
            PackedImageEncoder(dim, packed_patch)
        self.text = TextEncoder(dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
              not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; ``not_negative`` (B, B) masks same-group pairs off the
    diagonal so they are not pushed apart."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = scale.exp().clamp(max=100) * img @ txt.t()
    if not_negative is not None:
        eye = torch.eye(len(img), dtype=torch.bool, device=img.device)
        logits = logits.masked_fill(not_negative & ~eye, float("-inf"))
    target = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="mmshard dataset folder with images and txt captions")
    ap.add_argument("--steps", type=int, default=20, help="total optimizer steps")
    ap.add_argument("--out", required=True, help="checkpoint folder (resumed when present)")
    ap.add_argument("--negatives", help="negatives.parquet from `mmshard mine`")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--packed", action="store_true",
                    help="variable-resolution NaViT-packed patch sequences (PatchPacking)")
    ap.add_argument("--patch", type=int, default=16, help="patch size with --packed")
    ap.add_argument("--max-tokens", type=int, default=256,
                    help="tokens per packed sequence (and patches per image) with --packed")
    ap.add_argument("--skip-corrupt", action="store_true",
                    help="skip (and count) samples that fail to decode instead of stopping")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    batching = FixedBatching()
    if args.negatives:
        batching = NegativeCoBatching(negatives=NegativeTable.from_parquet(args.negatives),
                                      per_query=1)
    if args.packed:
        decode = DecodeConfig(image=ImageDecode(), packing=PatchPacking(
            patch=args.patch, max_tokens=args.max_tokens))
    else:
        decode = DecodeConfig(image=ImageDecode(resize=ShortestSideCrop(size=args.image_size)))
    loader = Loader(args.dataset, batch_size=args.batch_size, seed=args.seed,
                    num_workers=args.workers, batching=batching,
                    on_error="skip" if args.skip_corrupt else "raise", decode=decode,
                    device="cuda" if device.type == "cuda" else None)
    model = Clip(packed_patch=args.patch if args.packed else None).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "last.pt")
    step = 0
    if os.path.exists(path):
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        loader.load_state_dict(ckpt["loader"])
        step = int(ckpt["step"])
        print(f"resumed from {path} at step {step} (epoch {loader.epoch})")

    def save() -> None:
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(),
                    "loader": loader.state_dict(), "step": step}, tmp)
        os.replace(tmp, path)

    losses: list[float] = []
    seen: list[list[str]] = []
    grids: list[list[list[int]]] = []
    while step < args.steps:
        for batch in loader:
            if args.packed:
                img_emb = model.image(batch, device)
            else:
                img_emb = model.image(batch["image"].to(device, non_blocking=True))
            mask = batch.get("__pos_mask__")
            loss = clip_loss(img_emb, model.text(batch["txt"], device),
                             model.logit_scale,
                             None if mask is None else mask.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            seen.append(list(batch["__key__"]))
            if args.packed:
                grids.append(batch["grid"].tolist())
            if step % 5 == 0 or step == args.steps:
                print(f"step {step} epoch {loader.epoch} loss {losses[-1]:.4f}")
            if step % args.save_every == 0:
                save()
            if step >= args.steps:
                break
    save()
    for rec in loader.audit:  # the stream audit: what the loader really delivered
        print(f"audit epoch {rec['epoch']} rank {rec['rank']}: delivered {rec['delivered']} "
              f"padded {rec['padded']} skipped {rec['skipped']} duplicates "
              f"{rec['duplicates']} order {rec['order_hash']}")
    return {"step": step, "losses": losses, "keys": seen, "stats": dict(loader.stats),
            "grids": grids, "audit": loader.audit}


if __name__ == "__main__":
    main()
