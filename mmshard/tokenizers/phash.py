"""Perceptual hashes (64-bit pHash, dHash) and a near-duplicate search by multi-index hashing.

- :func:`phash`: grey image -> 32x32 (area resampling) -> 2-D DCT -> the 8x8 lowest
  frequencies -> one bit per coefficient, set when above their median (the classic pHash;
  robust to resizing, re-encoding and mild crops or colour changes).
- :func:`dhash`: grey image -> 9x8 -> one bit per horizontally adjacent pair, set when
  the left pixel is brighter (cheaper, a little less robust to crops).
- :func:`near_pairs`: every pair of hashes within a Hamming ``threshold`` without
  comparing all pairs.  The 64 bits are cut into ``bands`` bands; by the pigeonhole rule
  two hashes within distance ``t`` agree within ``t // bands`` bits on at least one band,
  so each band is a sorted table searched for every value within that small radius
  (:func:`band_masks` enumerates the flips).  Candidates are then checked exactly with a
  popcount.  Cost grows with the number of true neighbours, not with n**2.

Hashes are ``numpy.uint64``; pure numpy + OpenCV, no model weights.

>>> import numpy as np
>>> y, x = np.mgrid[0:64, 0:48]
>>> img = (127 + 100 * np.sin(y / 9) * np.cos(x / 7)).astype(np.uint8)
>>> h, h2 = phash(img), phash(img[:, :46])          # a 2-pixel crop
>>> bool(hamming(h, h2) <= 10), int(hamming(h, ~h))
(True, 64)
>>> i, j, d = near_pairs(np.array([h, h2, ~h], dtype=np.uint64), threshold=10)
>>> list(zip(i.tolist(), j.tolist()))
[(0, 1)]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError

__all__ = ["HASHES", "band_masks", "choose_bands", "dhash", "hamming", "near_pairs", "phash"]

_BITS = 1 << np.arange(64, dtype=np.uint64)


def _grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif a.ndim != 2:
        raise ConfigError(f"an image must be (H, W) grey or (H, W, 3|4), got shape {a.shape}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise ConfigError(f"image too small to hash: shape {a.shape}")
    return a.astype(np.float32, copy=False)


def _pack(bits: np.ndarray) -> np.uint64:
    return np.uint64(np.bitwise_or.reduce(_BITS[: bits.size][bits.ravel()], initial=0))


def phash(image: np.ndarray) -> np.uint64:
    """64-bit DCT perceptual hash of an (H, W) or (H, W, 3) uint8/float image."""
    import cv2

    small = cv2.resize(_grey(image), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8]
    return _pack(low > np.median(low))


def dhash(image: np.ndarray) -> np.uint64:
    """64-bit difference hash of an (H, W) or (H, W, 3) image."""
    import cv2

    small = cv2.resize(_grey(image), (9, 8), interpolation=cv2.INTER_AREA)
    return _pack(small[:, :-1] > small[:, 1:])


HASHES: dict[str, Callable[[np.ndarray], np.uint64]] = {"dhash": dhash, "phash": phash}


def hamming(a: np.ndarray | np.uint64 | int, b: np.ndarray | np.uint64 | int) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


def band_masks(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``radius`` bits set (the flips searched)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << b for b in c) for c in itertools.combinations(range(width), r))
    return np.array(masks, dtype=np.uint64)


def _volume(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def choose_bands(n_ref: int, threshold: int) -> int:
    """The number of bands minimising probes + expected candidates per query, for
    ``n_ref`` uniformly spread hashes (real hashes cluster, so this is a lower bound)."""
    best, best_cost = 4, float("inf")
    for m in range(1, 9):
        widths = [64 // m + (b < 64 % m) for b in range(m)]
        r = threshold // m
        vols = [_volume(w, r) for w in widths]
        if max(vols) > 200_000:
            continue
        cost = sum(v * (1 + n_ref / 2.0 ** w) for v, w in zip(vols, widths))
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _band_candidates(q: np.ndarray, ref: np.ndarray, shift: int, width: int,
                     masks: np.ndarray, threshold: int, self_pairs: bool,
                     budget: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) whose band values are within the masks' radius and whose full hashes
    are within ``threshold``; filtered chunk by chunk so memory stays ~``budget``."""
    full = np.uint64((1 << width) - 1)
    rv = (ref >> np.uint64(shift)) & full
    order = np.argsort(rv, kind="stable")
    sv = rv[order]
    table = width <= 22  # dense start/count table: O(1) lookups instead of binary search
    if table:
        bucket_n = np.bincount(sv.astype(np.int64), minlength=1 << width)
        bucket_lo = np.cumsum(bucket_n) - bucket_n
    per_query = masks.size * (1 + ref.size / 2.0 ** width)
    chunk = max(1, int(budget // per_query))
    qi_out, rj_out = [], []
    for start in range(0, q.size, chunk):
        qv = (q[start:start + chunk] >> np.uint64(shift)) & full
        targets = (qv[:, None] ^ masks[None, :]).ravel()
        if table:
            t = targets.astype(np.int64)
            lo, counts = bucket_lo[t], bucket_n[t]
        else:
            lo = np.searchsorted(sv, targets, "left")
            counts = np.searchsorted(sv, targets, "right") - lo
        hit = counts > 0
        if not hit.any():
            continue
        lo, counts = lo[hit], counts[hit]
        qi = (np.nonzero(hit)[0] // masks.size + start)
        ends = np.cumsum(counts)
        offs = np.arange(ends[-1]) - np.repeat(ends - counts, counts) + np.repeat(lo, counts)
        i, j = np.repeat(qi, counts), order[offs]
        keep = hamming(q[i], ref[j]) <= threshold  # exact check before anything is kept
        if self_pairs:
            keep &= i < j
        qi_out.append(i[keep])
        rj_out.append(j[keep])
    if not qi_out:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(qi_out).astype(np.int64), np.concatenate(rj_out).astype(np.int64)


def near_pairs(hashes: np.ndarray, threshold: int, *, ref: np.ndarray | None = None,
               bands: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of hashes within Hamming ``threshold``: ``(i, j, distance)`` int64 arrays.

    Without ``ref``: pairs inside ``hashes`` with ``i < j``.  With ``ref``: pairs
    ``(i into hashes, j into ref)``.  Sorted by (i, j); each pair once.  ``bands``
    (1..8; default :func:`choose_bands`: 4 bands of 16 bits searched within
    ``threshold // 4`` bits for up to ~100k hashes, 3 bands of 21-22 bits beyond) trades
    lookups per band against candidates per lookup.
    """
    if not isinstance(threshold, int) or not 0 <= threshold <= 32:
        raise ConfigError(f"hamming threshold must be an int in [0, 32], got {threshold!r}")
    q = np.ascontiguousarray(hashes, dtype=np.uint64).ravel()
    r = q if ref is None else np.ascontiguousarray(ref, dtype=np.uint64).ravel()
    m = bands or choose_bands(r.size, threshold)
    if not isinstance(m, int) or not 1 <= m <= 8:
        raise ConfigError(f"bands must be an int in [1, 8]; got {m!r}")
    widths = [64 // m + (b < 64 % m) for b in range(m)]
    radius = threshold // m
    found_i, found_j = [], []
    shift = 0
    for width in widths:
        i, j = _band_candidates(q, r, shift, width, band_masks(width, radius), threshold,
                                ref is None)
        shift += width
        found_i.append(i)
        found_j.append(j)
    n = np.int64(max(r.size, 1))
    code = np.unique(np.concatenate(found_i) * n + np.concatenate(found_j))
    i, j = code // n, code % n
    return i, j, hamming(q[i], r[j])
