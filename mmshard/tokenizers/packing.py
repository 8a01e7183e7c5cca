"""NaViT packing plans: images of mixed sizes into fixed-length token sequences.

Pure arithmetic on ``(height, width)`` through a :mod:`mmshard.media.resize` policy's
``plan`` (no pixels): :func:`plan_packing` returns which images share a sequence, where
each starts, its patch grid, and (per sequence) segment ids and 2-D patch positions.
The Loader's packed mode (:mod:`mmshard.pipelines.stream.packing`) builds its batches
from these plans.

>>> from mmshard.media.resize import PadToMultiple
>>> plan = plan_packing([(224, 224), (112, 224), (112, 112)], seq_len=256,
...                     policy=PadToMultiple(patch=14))
>>> [s.items for s in plan.sequences], plan.padding
([(0,), (1, 2)], 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..media.resize import MaxPatches, Resize, ResizePlan

__all__ = ["PackedSequence", "PackingPlan", "plan_packing"]

_PACK_ALGOS = ("ffd", "greedy")
_OVERSIZE = ("error", "shrink")


@dataclass(frozen=True)
class PackedSequence:
    """One fixed-length sequence: which images, where each starts, how much padding.

    ``items[i]`` is an index into the input list; its tokens occupy
    ``offsets[i] : offsets[i] + lengths[i]``. The tail ``padding`` tokens are empty.
    """

    seq_len: int
    items: tuple[int, ...]
    lengths: tuple[int, ...]
    offsets: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    extra_tokens: int = 0

    @property
    def used(self) -> int:
        return sum(self.lengths)

    @property
    def padding(self) -> int:
        return self.seq_len - self.used

    def segment_ids(self) -> np.ndarray:
        """``int32 [seq_len]``: 1..n for the n images in order, 0 for padding.

        Build an attention mask with ``ids[:, None] == ids[None, :] & (ids > 0)``.
        """
        out = np.zeros(self.seq_len, np.int32)
        for seg, (off, n) in enumerate(zip(self.offsets, self.lengths), start=1):
            out[off: off + n] = seg
        return out

    def patch_positions(self) -> np.ndarray:
        """``int32 [seq_len, 2]``: each token's (row, col) in its image's patch grid.

        Extra tokens (CLS ...) come first in each segment at ``(-1, -1)``; padding too.
        NaViT uses these as factorised 2D position indices.
        """
        out = np.full((self.seq_len, 2), -1, np.int32)
        for off, (rows, cols) in zip(self.offsets, self.grids):
            start = off + self.extra_tokens
            rr, cc = np.divmod(np.arange(rows * cols, dtype=np.int32), cols)
            out[start: start + rows * cols, 0] = rr
            out[start: start + rows * cols, 1] = cc
        return out


@dataclass(frozen=True)
class PackingPlan:
    """All sequences of one packing, and each input's final plan (after any shrink)."""

    seq_len: int
    sequences: tuple[PackedSequence, ...]
    plans: tuple[ResizePlan, ...]
    shrunk: tuple[int, ...] = ()

    @property
    def padding(self) -> int:
        return sum(s.padding for s in self.sequences)

    @property
    def efficiency(self) -> float:
        """Share of token slots holding image tokens (1.0 = no padding)."""
        total = self.seq_len * len(self.sequences)
        return 1.0 if total == 0 else 1.0 - self.padding / total

    def location(self) -> dict[int, tuple[int, int]]:
        """``{image index: (sequence index, position in sequence)}``."""
        return {item: (s, j) for s, seq in enumerate(self.sequences)
                for j, item in enumerate(seq.items)}


def plan_packing(sizes: Sequence[tuple[int, int]], *, seq_len: int, policy: Resize,
                 algorithm: str = "ffd", oversize: str = "error") -> PackingPlan:
    """NaViT-style packing: images of mixed sizes into sequences of ``seq_len`` tokens.

    Each ``(height, width)`` goes through ``policy.plan`` to get its token count
    (``num_tokens``: patches plus the policy's ``extra_tokens``). Then:

    - ``algorithm="ffd"``: first-fit-decreasing (longest first, ties by input index;
      each image goes into the first sequence with room). Fewest sequences in practice.
    - ``algorithm="greedy"``: next-fit in input order (start a new sequence when the next
      image does not fit). Keeps the input order; suits streaming.

    An image longer than ``seq_len``: ``oversize="error"`` raises :class:`DataError`
    (reason ``too_many_patches``, naming the image and its count); ``oversize="shrink"``
    re-plans it with Pix2Struct :class:`MaxPatches` at the policy's patch size and a
    budget of ``seq_len - extra_tokens`` patches (indices listed in ``shrunk``).
    Deterministic: the same sizes and arguments give the same plan.

    >>> from mmshard.media.resize import PadToMultiple
    >>> plan = plan_packing([(224, 224), (112, 224), (112, 112)], seq_len=256,
    ...                     policy=PadToMultiple(patch=14))
    >>> [s.items for s in plan.sequences], plan.padding
    ([(0,), (1, 2)], 64)
    """
    if algorithm not in _PACK_ALGOS:
        raise ConfigError(f"packing algorithm {algorithm!r} unknown; allowed: "
                          f"{', '.join(_PACK_ALGOS)}")
    if oversize not in _OVERSIZE:
        raise ConfigError(f"oversize policy {oversize!r} unknown; allowed: {', '.join(_OVERSIZE)}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len <= 0:
        raise ConfigError(f"seq_len must be a positive int, got {seq_len!r}")
    extra = policy.extra_tokens
    if oversize == "shrink" and seq_len - extra < 1:
        raise ConfigError(f"seq_len {seq_len} leaves no room for patches after "
                          f"{extra} extra tokens")
    plans: list[ResizePlan] = []
    shrunk: list[int] = []
    for i, (h, w) in enumerate(sizes):
        plan = policy.plan(h, w)
        if plan.num_tokens > seq_len:
            if oversize == "error":
                raise DataError(
                    "too_many_patches",
                    f"image {i} ({h}x{w}) needs {plan.num_tokens} tokens > seq_len {seq_len}; "
                    "raise seq_len, use a smaller policy, or pass oversize='shrink'")
            fallback = MaxPatches(max_patches=seq_len - extra, patch=policy.patch,
                                  extra_tokens=extra)
            plan = fallback.plan(h, w)
            shrunk.append(i)
        plans.append(plan)

    lengths = [p.num_tokens for p in plans]
    bins: list[list[int]] = []
    room: list[int] = []
    if algorithm == "ffd":
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            for b, free in enumerate(room):
                if lengths[i] <= free:
                    bins[b].append(i)
                    room[b] -= lengths[i]
                    break
            else:
                bins.append([i])
                room.append(seq_len - lengths[i])
    else:
        for i, n in enumerate(lengths):
            if not bins or n > room[-1]:
                bins.append([])
                room.append(seq_len)
            bins[-1].append(i)
            room[-1] -= n
    seqs = []
    for items in bins:
        lens = tuple(lengths[i] for i in items)
        offs = tuple(int(x) for x in np.concatenate([[0], np.cumsum(lens)[:-1]]))
        seqs.append(PackedSequence(seq_len, tuple(items), lens, offs,
                                   tuple(plans[i].grid for i in items), extra))
    return PackingPlan(seq_len, tuple(seqs), tuple(plans), tuple(shrunk))


