"""Variable-resolution batches: images as patch sequences packed NaViT-style.

``DecodeConfig(image=ImageDecode(), packing=PatchPacking(patch=16, max_tokens=256))``
makes the Loader decode each image through ``PatchPacking.resize`` (default: Pix2Struct
``MaxPatches`` with a budget of ``max_tokens`` patches, so any photo fits one sequence
at about its own aspect), cut it into ``patch x patch`` patches, and pack the images
of a batch into ``S`` sequences of ``max_tokens`` tokens (first-fit decreasing over
token counts: :func:`mmshard.tokenizers.packing.plan_packing`).  The batch then holds,
instead of ``"image"``:

- ``"patches"`` (S, L, 3*p*p): each patch flattened channel-major ``(3, p, p)`` (so an
  ``nn.Linear`` on it equals a stride-``p`` ``Conv2d``); padding slots are zeros;
- ``"segment_ids"`` (S, L) int64: ``1 + b`` for a token of batch sample ``b``, 0 for
  padding (pool an image's tokens with ``segment_ids == b + 1``);
- ``"positions"`` (S, L, 2) int64: each token's (row, col) in its image's patch grid
  (factorised 2-D position embeddings), ``-1`` for padding;
- ``"attention_mask"`` (S, L, L) bool: True where query and key belong to the same
  image (block diagonal; padding attends to nothing, so a softmax attention should OR in
  the diagonal);
- ``"grid"`` (B, 2) int64 patch rows/cols of each sample, ``"sequence"`` (B,) and
  ``"offset"`` (B,) where its tokens start.

Everything is a pure function of the decoded image sizes, so packed batches are as
deterministic and resumable (``state_dict``) as plain ones.

>>> import torch
>>> pk = PatchPacking(patch=4, max_tokens=8)
>>> out = pk.pack([torch.zeros(3, 8, 8), torch.zeros(3, 4, 8), torch.zeros(3, 4, 4)])
>>> out["patches"].shape, out["segment_ids"].tolist()
(torch.Size([1, 8, 48]), [[1, 1, 1, 1, 2, 2, 3, 0]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from ...media.resize import MaxPatches, NoResize, Resize
from ...tokenizers.packing import plan_packing

__all__ = ["PatchPacking"]

_ALGOS = ("ffd", "greedy")


@dataclass(frozen=True, kw_only=True)
class PatchPacking:
    """How images become packed patch sequences (see the module docstring).

    ``resize``: a :mod:`mmshard.media.resize` policy applied at decode (None:
    ``MaxPatches(max_patches=max_tokens, patch=patch)``); an image whose plan still has
    more than ``max_tokens`` patches is re-planned with that ``MaxPatches`` bound.
    Sides that are not a multiple of ``patch`` lose the remainder (bottom/right).
    ``algorithm``: ``ffd`` (fewest sequences) or ``greedy`` (keeps batch order).
    """

    patch: int = 16
    max_tokens: int = 256
    resize: Resize | None = None
    algorithm: str = "ffd"

    def __post_init__(self) -> None:
        for name in ("patch", "max_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"PatchPacking {name} must be a positive int, got {v!r}")
        if self.algorithm not in _ALGOS:
            raise ConfigError(f"packing algorithm {self.algorithm!r} unknown; allowed: "
                              f"{', '.join(_ALGOS)}")
        if self.resize is not None and not isinstance(self.resize, Resize):
            raise ConfigError("PatchPacking resize must be a mmshard.media.resize policy "
                              f"(Longest, MaxPatches, PadToMultiple ...), got {self.resize!r}")

    @property
    def policy(self) -> Resize:
        return self.resize or MaxPatches(max_patches=self.max_tokens, patch=self.patch)

    def at_resolution(self, resolution: int) -> PatchPacking:
        """The same packing with its resize policy at a schedule's resolution."""
        from dataclasses import replace

        return replace(self, resize=self.policy.at_resolution(resolution))

    def resize_image(self, img: Any) -> Any:
        """PIL image -> PIL image within the token budget (the decode step)."""
        policy = self.policy
        plan = policy.plan(img.height, img.width)
        if (plan.canvas_height // self.patch) * (plan.canvas_width // self.patch) > \
                self.max_tokens:
            policy = MaxPatches(max_patches=self.max_tokens, patch=self.patch,
                                resample=policy.resample)
            plan = policy.plan(img.height, img.width)
        return policy.apply_pil(img, plan)

    def __call__(self, img: Any, hint: tuple[int, int] | None = None) -> Any:
        """The decode signature (``ImageDecode.resize``); a bucket hint does not apply."""
        return self.resize_image(img)

    def pack(self, images: list[Any]) -> dict[str, Any]:
        """Decoded images ((3, H, W) tensors) -> the packed tensors of one batch."""
        import torch

        p, n_tok = self.patch, self.max_tokens
        grids = []
        for b, im in enumerate(images):
            rows, cols = int(im.shape[-2]) // p, int(im.shape[-1]) // p
            if rows * cols == 0:
                raise DataError("too_small", f"sample {b}: image {tuple(im.shape)} is smaller "
                                f"than one {p}x{p} patch")
            grids.append((rows, cols))
        sizes = [(r * p, c * p) for r, c in grids]
        plan = plan_packing(sizes, seq_len=n_tok, policy=NoResize(patch=p),
                            algorithm=self.algorithm)
        dim = int(images[0].shape[0]) * p * p
        s_count = len(plan.sequences)
        patches = torch.zeros(s_count, n_tok, dim, dtype=images[0].dtype)
        seg = torch.zeros(s_count, n_tok, dtype=torch.int64)
        pos = torch.full((s_count, n_tok, 2), -1, dtype=torch.int64)
        sequence = torch.zeros(len(images), dtype=torch.int64)
        offset = torch.zeros(len(images), dtype=torch.int64)
        for s, packed in enumerate(plan.sequences):
            seg_np = np.zeros(n_tok, np.int64)
            for b, off, n in zip(packed.items, packed.offsets, packed.lengths, strict=True):
                rows, cols = grids[b]
                patches[s, off: off + n] = _patchify(images[b], p, rows, cols)
                seg_np[off: off + n] = b + 1
                sequence[b], offset[b] = s, off
            seg[s] = torch.from_numpy(seg_np)
            pos[s] = torch.from_numpy(packed.patch_positions().astype(np.int64))
        mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
        return {"patches": patches, "segment_ids": seg, "positions": pos,
                "attention_mask": mask, "grid": torch.tensor(grids, dtype=torch.int64),
                "sequence": sequence, "offset": offset}

    def pack_decoded(self, decoded: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Split the ``"image"`` of decoded samples off into packed tensors; the rest of
        each sample goes on to the usual collate (the Loader's hook)."""
        rest = [{k: v for k, v in d.items() if k != "image"} for d in decoded]
        images = [d["image"] for d in decoded if "image" in d]
        if len(images) != len(decoded):
            raise DataError("missing_field", "packed batches need an image in every sample")
        return rest, self.pack(images)


def _patchify(img: Any, p: int, rows: int, cols: int) -> Any:
    """(C, H, W) -> (rows*cols, C*p*p), row-major patches, channel-major inside."""
    c = img.shape[0]
    x = img[:, : rows * p, : cols * p].reshape(c, rows, p, cols, p)
    return x.permute(1, 3, 0, 2, 4).reshape(rows * cols, c * p * p)
