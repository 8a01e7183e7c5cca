"""``mmshard.Loader``: deterministic, exactly resumable, equal-per-rank batch streaming.

The main process plans every batch of the epoch (:mod:`.stream_plan`: a pure function
of ``(seed, epoch, rank, world_size)``); workers (torch DataLoader processes over an
IterableDataset) decode the batches assigned to them round-robin (batch ``i`` goes to
worker ``i % num_workers``) and the main process puts them back in plan order.  So the
batches do not depend on ``num_workers``, and ``state_dict()`` is just a position.

A batch is a dict: decoded fields (``"image"`` (B, 3, H, W), ``"audio"``, ``"mel"``,
``"cls"`` tensors; ``"txt"`` / ``"json"`` lists), ``"__key__"`` (list of str),
``"__pad__"`` (bool tensor: True where the sample repeats one only to even out ranks,
or replaces a skipped corrupt one), ``"__source__"`` (int64 dataset index, when
mixing) and, with :class:`~mmshard.samplers.batching.NegativeCoBatching`,
``"__neg_mask__"`` (B, B: ``[i, j]`` = j is a mined negative of i) and
``"__pos_mask__"`` (B, B: same sample or same group, i.e. not a negative).

>>> loader = Loader("data/ds", batch_size=32, seed=0,                 # doctest: +SKIP
...                 decode=DecodeConfig(image=ImageDecode()), num_workers=4)
>>> for epoch in range(3):                                            # doctest: +SKIP
...     loader.set_epoch(epoch)
...     for batch in loader:
...         train_step(batch["image"], batch["txt"])
>>> ckpt = loader.state_dict()  # later: loader.load_state_dict(ckpt)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError, ShardError
from ...samplers.batching import Batching, FixedBatching, PlannedBatch, SampleMeta
from ...samplers.mixing import Mixing
from ...samplers.order import EpochOrder
from .audit import EpochAudit, check_epoch
from .cache import CacheConfig, cache_stats, fetch_first, prefetch_batches, with_cache
from .decode import DecodeConfig, collate, decode_sample
from .filters import filter_fingerprint, keep_mask
from .plan import EpochPlanner
from .source import (
    MEDIA_BITS,
    DatasetSource,
    ResolvedSource,
    ShardListSource,
    ShardReader,
    media_bits,
    resolve_source,
)

__all__ = ["ON_ERROR", "Loader"]

ON_ERROR = ("raise", "skip")
STATE_VERSION = 1
SourceLike = str | DatasetSource | ShardListSource


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    r, w = 0, 1
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return (r if rank is None else rank), (w if world_size is None else world_size)


def _merge_meta(sources: Sequence[ResolvedSource]) -> SampleMeta:
    metas = [s.meta for s in sources]
    total = sum(m.num_samples for m in metas)
    if len(metas) == 1:
        return metas[0]

    def cat(name: str, fill: int | None) -> np.ndarray | None:
        parts = []
        for m in metas:
            a = getattr(m, name)
            if a is None:
                if fill is None:
                    return None
                a = np.full(m.num_samples, fill, dtype=np.int64)
            parts.append(a)
        return np.concatenate(parts)

    groups = None
    if all(m.groups is not None for m in metas):
        off, parts = 0, []
        for m in metas:
            g = m.groups.copy()  # type: ignore[union-attr]
            g[g >= 0] += off
            off = max(off, int(g.max()) + 1) if g.size else off
            parts.append(g)
        groups = np.concatenate(parts)
    source = np.concatenate([np.full(m.num_samples, d, dtype=np.int64)
                             for d, m in enumerate(metas)])
    return SampleMeta(num_samples=total, keys=cat("keys", None), groups=groups,
                      width=cat("width", 0), height=cat("height", 0), source=source)


class _BatchWork:
    """Decodes planned batches; picklable into DataLoader workers (readers reopen)."""

    def __init__(self, sources: Sequence[ResolvedSource], decode: DecodeConfig,
                 on_error: str, meta: SampleMeta, mixing: bool,
                 labels: Sequence[list[str] | None] | None = None,
                 expect: Sequence[str] = (), lacks: np.ndarray | None = None) -> None:
        self.readers = [ShardReader(s) for s in sources]
        self.decode = decode
        self.on_error = on_error
        self.meta_groups = meta.groups
        self.meta_keys = meta.keys
        self.mixing = mixing
        self.labels = labels
        self.expect = tuple(expect)
        self.lacks = lacks  # per global id: MEDIA_BITS of media it legitimately lacks
        starts, owner, local = [0], [], []
        for d, s in enumerate(sources):
            for i, c in enumerate(s.counts):
                starts.append(starts[-1] + c)
                owner.append(d)
                local.append(i)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.owner = owner
        self.local = local

    def load(self, pb: PlannedBatch) -> dict[str, Any]:
        import torch

        decoded: list[dict[str, Any] | None] = []
        keys: list[str] = []
        pads = pb.pad.tolist()
        errors: Counter[str] = Counter()
        per_shard: dict[str, Counter[str]] = {}
        bad_keys: list[str] = []
        for gid in pb.ids.tolist():
            key, dec, err = self._one(gid, pb.size)
            keys.append(key)
            decoded.append(dec)
            if err is not None:
                errors[err[1]] += 1
                per_shard.setdefault(err[0], Counter())[err[1]] += 1
                bad_keys.append(f"{err[0]}:{key}")
        good = [i for i, d in enumerate(decoded) if d is not None]
        if not good:  # nothing readable in this batch: stand in the next readable sample
            good = self._stand_in(pb, decoded, keys, bad_keys)
            pads[good[0]] = True
        for n, i in enumerate(i for i, d in enumerate(decoded) if d is None):
            src = good[n % len(good)]  # keep the batch shape: repeat a good one, flag it
            decoded[i] = decoded[src]
            keys[i] = keys[src]
            pads[i] = True
        packed = None
        if self.decode.packing is not None:  # variable resolution: images -> patch sequences
            decoded, packed = self.decode.packing.pack_decoded(decoded)
        batch = collate(decoded, self.expect)  # type: ignore[arg-type]
        if packed is not None:
            batch.update(packed)
        batch["__key__"] = keys
        batch["__pad__"] = torch.tensor(pads, dtype=torch.bool)
        if self.mixing:
            batch["__source__"] = torch.as_tensor(self._sources(pb.ids))
        if pb.neg_pairs is not None:
            b = len(keys)
            neg = torch.zeros(b, b, dtype=torch.bool)
            if pb.neg_pairs.size:
                p = torch.as_tensor(pb.neg_pairs)
                neg[p[:, 0], p[:, 1]] = True
            if self.meta_groups is not None:
                g = torch.as_tensor(self.meta_groups[pb.ids])
                pos = (g[:, None] == g[None, :]) & (g[:, None] >= 0)
            else:
                pos = torch.zeros(b, b, dtype=torch.bool)
            ids = torch.as_tensor(pb.ids)
            pos |= ids[:, None] == ids[None, :]
            batch["__neg_mask__"] = neg
            batch["__pos_mask__"] = pos
        batch["__stats__"] = {"skipped": sum(errors.values()), "errors": dict(errors),
                              "cache": cache_stats(self)}
        batch["__stats__"]["shards"] = {u: dict(c) for u, c in per_shard.items()}
        return batch

    def _one(self, gid: int, size: tuple[int, int] | None
             ) -> tuple[str, dict[str, Any] | None, tuple[str, str] | None]:
        """``(key, decoded or None, (shard, reason) of a skip)`` of one sample."""
        sh = int(np.searchsorted(self.starts, gid, side="right") - 1)
        d, reader = self.owner[sh], self.readers[self.owner[sh]]
        url = reader.source.urls[self.local[sh]]
        key = "" if self.meta_keys is None else str(self.meta_keys[gid])
        try:
            raw = reader.read(self.local[sh], gid - int(self.starts[sh]))
            key = raw["__key__"]
            absent = () if self.lacks is None else _ABSENT[int(self.lacks[gid])]
            dec = decode_sample(raw, self.decode, size_hint=size, absent=absent)
            if self.labels is not None and "cls" in dec:
                names = self.labels[d]
                if names is None or not 0 <= dec["cls"] < len(names):
                    raise DataError("bad_label", f"label id {dec['cls']} is not in labels.json "
                                    f"({0 if names is None else len(names)} names)",
                                    key=key, shard=url)
                dec["label_name"] = names[dec["cls"]]
        except (DataError, ShardError) as e:
            if self.on_error == "raise":
                raise
            shard = getattr(e, "shard", None) if isinstance(e, ShardError) else None
            return key, None, (shard or url, getattr(e, "reason", "unreadable_shard"))
        return key, dec, None

    def _stand_in(self, pb: PlannedBatch, decoded: list[Any], keys: list[str],
                  bad_keys: list[str]) -> list[int]:
        """A whole batch failed (``on_error="skip"``): decode the first readable sample
        after it in id order (same dataset), flagged as padding; deterministic."""
        gid = int(pb.ids[0])
        sh = int(np.searchsorted(self.starts, gid, side="right") - 1)
        d = self.owner[sh]
        first = [i for i, o in enumerate(self.owner) if o == d]
        lo, hi = int(self.starts[first[0]]), int(self.starts[first[-1] + 1])
        for step in range(1, min(64, hi - lo) + 1):
            cand = lo + (gid - lo + step) % (hi - lo)
            key, dec, _ = self._one(cand, pb.size)
            if dec is not None:
                decoded[0], keys[0] = dec, key
                return [0]
        raise DataError("batch_all_corrupt", f"every sample of a batch failed and no "
                        f"readable sample was found near it: {bad_keys[:5]}")

    def _sources(self, ids: np.ndarray) -> np.ndarray:
        shards = np.searchsorted(self.starts, ids, side="right") - 1
        return np.asarray(self.owner, dtype=np.int64)[shards]


class Loader:
    """Stream batches from one dataset or a weighted mixture, equal work on every rank.

    ``datasets``: a dataset folder path, a :class:`DatasetSource` /
    :class:`ShardListSource`, or a list of them (mixed with ``weights``, default
    equal).  ``batching``: :class:`FixedBatching` (default), ``BucketBatching``,
    ``GroupAwareBatching`` or ``NegativeCoBatching``.  ``shuffle=False`` is evaluation
    mode: shard order, and with ``pad_policy="wrap"`` every sample exactly once across
    ranks, the padding flagged in ``"__pad__"``.  ``on_error="skip"`` replaces a sample
    that fails to decode by a flagged copy of another one in its batch and counts it in
    ``stats``; ``"raise"`` stops with a DataError naming the shard and key.
    ``pin_memory=None`` pins when CUDA is available; ``device="cuda"`` copies each
    batch on a side stream one batch ahead.  ``len(loader)`` is the number of batches
    this rank yields per epoch.  ``filter`` (``"dedup"``, a keep-list path or a
    callable on manifest rows, :mod:`.filters`) plans the epoch without the removed
    samples; ``label_names=True`` adds ``"label_name"`` from ``labels.json``; fields
    some samples lack come with ``"__has__<field>"`` masks (:func:`.decode.collate`);
    ``audit`` / :meth:`audit_check` report what was delivered (:mod:`.audit`).
    Skips are counted in ``stats`` by reason and by shard (``stats["shards"]``),
    damaged shards and refused tar members included.  ``cache_dir`` (with
    ``cache_limit``, e.g. ``"20GB"``)
    reads a remote dataset (``s3://...``) through a local shard cache shared by workers
    and ranks, fetching the next shards in plan order (see :mod:`.cache`); cache counters
    are in ``stats["cache"]``; ``cache_verify="sha256"`` re-hashes each cached file the
    first time a process uses it (default ``"stat"``: size, inode and mtime).
    ``shuffle_window`` (shards): ``"auto"`` (default) keeps the shuffle buffer for local
    data and, through a cache, shuffles samples within windows of shards that fit a third
    of ``cache_limit`` (shared by the ``LOCAL_WORLD_SIZE`` ranks of a node and the mixed
    datasets), so each shard is downloaded once per epoch
    (:func:`~mmshard.samplers.order.block_shuffle`); an int forces that window, None the
    shuffle buffer.  Changing ``world_size`` between ``state_dict`` and
    ``load_state_dict`` continues the epoch with no sample lost or repeated (single
    dataset).
    """

    def __init__(self, datasets: SourceLike | Sequence[SourceLike], *, batch_size: int,
                 seed: int, rank: int | None = None, world_size: int | None = None,
                 num_workers: int = 0, split: str | None = "train", shuffle: bool = True,
                 shuffle_buffer: int | None = 2000, pad_policy: str = "wrap",
                 drop_last: bool = False, weights: Sequence[float] | None = None,
                 stratify: bool = False, samples_per_epoch: int | None = None,
                 batching: Batching | None = None, decode: DecodeConfig | None = None,
                 filter: str | Callable[[dict[str, Any]], bool] | None = None,  # noqa: A002
                 label_names: bool = False,
                 on_error: str = "raise", pin_memory: bool | None = None, prefetch: int = 2,
                 device: str | None = None, cache_dir: str | None = None,
                 cache_limit: int | str = "20GB", cache_verify: str = "stat",
                 shuffle_window: int | str | None = "auto") -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if prefetch < 1:
            raise ConfigError(f"prefetch must be >= 1, got {prefetch}")
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got {self.rank}/{self.world_size}")
        srcs = [datasets] if isinstance(datasets, (str, DatasetSource, ShardListSource)) \
            else list(datasets)
        if not srcs:
            raise ConfigError("Loader needs at least one dataset")
        self.sources = [resolve_source(s, split=split) for s in srcs]
        if cache_dir is not None:  # remote shards are read from a local cache (stream/cache.py)
            cfg = CacheConfig(cache_dir=cache_dir, cache_limit=cache_limit, verify=cache_verify)
            self.sources = [with_cache(r, s, cfg) for r, s in zip(self.sources, srcs, strict=True)]
        self.shuffle_window = _shuffle_window(shuffle_window, self.sources)
        mixing = None
        if len(self.sources) > 1 or weights is not None:
            w = tuple(weights) if weights is not None else (1.0,) * len(self.sources)
            if len(w) != len(self.sources):
                raise ConfigError(f"{len(w)} weights for {len(self.sources)} datasets")
            mixing = Mixing(weights=w, stratify=stratify, samples_per_epoch=samples_per_epoch)
        if mixing is not None and mixing.stratify and batching is not None and \
                not isinstance(batching, FixedBatching):
            raise ConfigError("stratify=True needs FixedBatching (quotas are per batch)")
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.on_error = on_error
        self.decode = decode or DecodeConfig()
        self.batching = batching or FixedBatching()
        self.pin_memory = pin_memory
        self.prefetch = prefetch
        self.device = device
        self.meta = _merge_meta(self.sources)
        self._keep = [keep_mask(s, filter) for s in self.sources]
        self.filter = filter
        labels = [_label_names(s) for s in self.sources] if label_names else None
        self.planner = EpochPlanner(
            counts=[s.counts for s in self.sources], meta=self.meta,
            order=EpochOrder(seed=seed, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
                             pad_policy=pad_policy, shuffle_window=self.shuffle_window),
            batching=self.batching, batch_size=batch_size, drop_last=drop_last,
            mixing=mixing, keep=self._keep)
        lacks, media_expect = _lacking_media(self.sources, self.decode)
        self._work = _BatchWork(self.sources, self.decode, on_error, self.meta,
                                mixing is not None, labels=labels, lacks=lacks,
                                expect=tuple(sorted({*_optional_outputs(
                                    self.sources, self.decode, label_names), *media_expect})))
        self._audits: dict[int, EpochAudit] = {}
        self._epoch = 0
        self._done = 0
        self._segments: list[tuple[int, int]] = []
        self.stats: dict[str, Any] = {"batches": 0, "samples": 0, "padded": 0, "skipped": 0,
                                      "errors": {}, "shards": {},
                                      "time_to_first_batch_s": None,
                                      "cache": {}}

    # -- plan and position ---------------------------------------------------------------
    def _plan(self) -> list[PlannedBatch]:
        return self.planner.rank_plan(epoch=self._epoch, rank=self.rank,
                                      world_size=self.world_size, segments=self._segments)

    def __len__(self) -> int:
        return len(self._plan())

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning; the current epoch keeps its position (so a
        resumed loop may call ``set_epoch`` with the resumed epoch)."""
        if epoch != self._epoch:
            self._epoch, self._done, self._segments = int(epoch), 0, []

    def _fingerprint(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "seed": self.seed,
                "num_samples": [s.num_samples for s in self.sources],
                "batching": type(self.batching).__name__,
                "order": [self.planner.order.shuffle, self.planner.order.shuffle_buffer,
                          self.planner.order.pad_policy, self.planner.drop_last,
                          *([f"shuffle_window={self.shuffle_window}"]
                            if self.shuffle_window is not None else [])],
                **({"filter": filter_fingerprint(self._keep)} if self.filter is not None
                   else {})}

    def state_dict(self) -> dict[str, Any]:
        """The position: epoch, batches yielded this epoch, world size, elastic segments."""
        return {"version": STATE_VERSION, "epoch": self._epoch, "batches_done": self._done,
                "world_size": self.world_size,
                "segments": [list(s) for s in self._segments],
                "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a :meth:`state_dict` position (any ``num_workers``; another world
        size continues the epoch over the samples not yet read)."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"loader state version {state.get('version')!r} is not "
                              f"{STATE_VERSION}: it comes from another mmshard version")
        mine, theirs = self._fingerprint(), state.get("fingerprint", {})
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise ConfigError(f"loader state was saved with other settings ({', '.join(diff)}"
                              f"): saved {[theirs.get(k) for k in diff]}, now "
                              f"{[mine[k] for k in diff]}")
        self._epoch = int(state["epoch"])
        self._done = int(state["batches_done"])
        self._segments = [(int(a), int(b)) for a, b in state.get("segments", [])]
        old_ws = int(state["world_size"])
        if old_ws != self.world_size and self._done:
            old = self.planner.rank_plan(epoch=self._epoch, rank=0, world_size=old_ws,
                                         segments=self._segments)
            if self._done >= len(old):  # that epoch was finished: start the next one
                self._epoch, self._done, self._segments = self._epoch + 1, 0, []
            else:
                self._segments.append((old_ws, self._done))
                self._done = 0

    # -- iteration -----------------------------------------------------------------------
    def _fetch(self, plan: list[PlannedBatch], start: int) -> Iterator[dict[str, Any]]:
        # remote shards: every worker's first shards at once, on this process's client
        first = fetch_first(self._work, plan, start, max(1, self.num_workers))
        if self.num_workers == 0:
            self._add_cache_stats(first)
            for i in range(start, len(plan)):
                prefetch_batches(self._work, plan, i)
                yield self._work.load(plan[i])
            return
        import torch
        import torch.utils.data as tud

        from .worker import PlannedBatches, warm_up

        if start < len(plan):  # decoders imported once here, inherited by the workers
            warm_up(self._work, plan[start])
        self._add_cache_stats(first, cache_stats(self._work))

        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        dl = tud.DataLoader(PlannedBatches(self._work, plan, start), batch_size=None,
                            num_workers=self.num_workers, pin_memory=pin,
                            prefetch_factor=self.prefetch, persistent_workers=False)
        waiting: dict[int, dict[str, Any]] = {}
        nxt = start
        for i, batch in dl:  # round-robin already; the buffer makes the order certain
            waiting[int(i)] = batch
            while nxt in waiting:
                yield waiting.pop(nxt)
                nxt += 1
        if nxt != len(plan):
            raise DataError("lost_batch", f"workers delivered batches up to {nxt}, plan "
                            f"has {len(plan)}")

    def _add_cache_stats(self, *counters: dict[str, float]) -> None:
        for c in counters:
            for k, v in c.items():
                self.stats["cache"][k] = self.stats["cache"].get(k, 0) + v

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan = self._plan()
        if self._done >= len(plan):  # finished epoch: the next pass is the next epoch
            self._epoch, self._done, self._segments = self._epoch + 1, 0, []
            plan = self._plan()
        self._work.decode = self.decode.at_epoch(self._epoch)  # a resolution schedule's draw
        t0 = time.perf_counter()
        first = True
        it = self._audited(self._stats_and_strip(self._fetch(plan, self._done)), plan)
        if self.device is not None and str(self.device).startswith("cuda"):
            it = _cuda_prefetch(it, self.device)
        for batch in it:
            self._done += 1
            if first:
                self.stats["time_to_first_batch_s"] = time.perf_counter() - t0
                first = False
            yield batch

    def _stats_and_strip(self, it: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in it:
            st = batch.pop("__stats__")
            self.stats["batches"] += 1
            self.stats["samples"] += len(batch["__key__"])
            self.stats["padded"] += int(batch["__pad__"].sum())
            self.stats["skipped"] += st["skipped"]
            for k, v in st["errors"].items():
                self.stats["errors"][k] = self.stats["errors"].get(k, 0) + v
            for url, counts in st.get("shards", {}).items():
                mine = self.stats["shards"].setdefault(url, {})
                for k, v in counts.items():
                    mine[k] = mine.get(k, 0) + v
            for k, v in st.get("cache", {}).items():
                self.stats["cache"][k] = self.stats["cache"].get(k, 0) + v
            yield batch


    # -- stream audit --------------------------------------------------------------------
    def _audited(self, it: Iterator[dict[str, Any]], plan: list[PlannedBatch]
                 ) -> Iterator[dict[str, Any]]:
        audit = self._audits.get(self._epoch)
        if audit is None or audit.world_size != self.world_size:
            audit = self._audits[self._epoch] = EpochAudit(
                epoch=self._epoch, rank=self.rank, world_size=self.world_size,
                start_batch=self._done)
        i = self._done  # its own count: the CUDA prefetch pulls one batch ahead
        for batch in it:
            pb = plan[i]
            i += 1
            audit.add(pb.ids, batch["__pad__"].numpy(), pb.pad)
            yield batch

    @property
    def audit(self) -> list[dict[str, Any]]:
        """Per epoch iterated on this rank: ``batches``, ``delivered`` (real samples),
        ``padded``, ``skipped``, ``duplicates`` (a real sample twice this epoch on this
        rank), ``order_hash`` (same hash = same stream) and ``start_batch`` (> 0 after a
        resume)."""
        return [a.record() for _, a in sorted(self._audits.items())]

    def audit_check(self, epoch: int | None = None) -> dict[str, Any]:
        """Check an epoch over all ranks: ``overlap`` (samples delivered on two ranks),
        ``missing`` (samples of the epoch nobody delivered; equal to ``skipped`` when
        all is well), ``ok``.  With ``world_size > 1`` it all-gathers over
        torch.distributed: call it on every rank.  Batches before a resume point are
        taken from the plan.  Coverage is checked for a single dataset with
        ``pad_policy="wrap"`` and no ``drop_last`` (otherwise ``missing`` is None);
        with ``NegativeCoBatching`` negatives repeat samples by design.

        >>> loader.audit_check()["ok"]                                # doctest: +SKIP
        True
        """
        epoch = max(self._audits) if epoch is None and self._audits else epoch
        if epoch not in self._audits:
            raise ConfigError(f"no audit for epoch {epoch}: iterate the loader first "
                              f"(audited epochs: {sorted(self._audits) or 'none'})")
        audit = self._audits[epoch]
        plan = self.planner.rank_plan(epoch=epoch, rank=self.rank, world_size=self.world_size,
                                      segments=self._segments if epoch == self._epoch else ())
        before = [b.ids[~b.pad] for b in plan[:audit.start_batch]]
        if self._segments and epoch == self._epoch:
            before.append(self.planner.consumed(epoch=epoch, segments=self._segments)
                          if self.rank == 0 else np.zeros(0, dtype=np.int64))
        expected = None
        order = self.planner.order
        if len(self.sources) == 1 and order.pad_policy == "wrap" and not self.planner.drop_last:
            keep = self._keep[0]
            expected = np.arange(self.meta.num_samples) if keep is None else np.flatnonzero(keep)
        return check_epoch(audit, before=np.concatenate([np.zeros(0, np.int64), *before]),
                           expected=expected)


_ABSENT = [tuple(m for m, b in MEDIA_BITS.items() if v & b) for v in range(8)]


def _lacking_media(sources: Sequence[ResolvedSource], decode: DecodeConfig
                   ) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Per global id, the media a sample legitimately lacks (its manifest row's fields,
    else its dataset's index fields; unknown: none, so a missing medium is an error),
    and the decoded outputs some samples lack (they get ``__has__`` masks, C6)."""
    parts, known = [], True
    for s in sources:
        if s.media is not None:
            parts.append(np.bitwise_and(np.bitwise_not(s.media), 7).astype(np.uint8))
        elif s.fields:
            parts.append(np.full(s.num_samples, 7 & ~media_bits(s.fields), dtype=np.uint8))
        else:
            parts.append(np.zeros(s.num_samples, dtype=np.uint8))
            known = False
    lacks = np.concatenate(parts)
    wanted = {"image": decode.image is not None, "audio": decode.audio is not None,
              "video": decode.video is not None, "mel": decode.mel is not None}
    expect = []
    for name, on in wanted.items():
        if not on:
            continue
        bit = MEDIA_BITS["audio" if name == "mel" else name]
        some = bool((lacks & bit).any())
        if known and lacks.size and bool((lacks & bit).all()) and name != "mel":
            names = ", ".join(s.name for s in sources)
            raise ConfigError(f"{name} decoding is on but no sample of {names} has a {name} "
                              f"field (per manifest / index.json): drop DecodeConfig({name}=...)")
        if some:
            expect.append(name)
    return (lacks if lacks.any() else None), tuple(expect)


def _shuffle_window(value: int | str | None, sources: Sequence[ResolvedSource]) -> int | None:
    """Shards per block-shuffle window (None: the shuffle buffer); see the Loader."""
    import os

    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        if value is not None and value < 1:
            raise ConfigError(f"shuffle_window must be >= 1 shards, 'auto' or None, got {value}")
        return value
    if value != "auto":
        raise ConfigError(f"shuffle_window must be an int >= 1, 'auto' or None, got {value!r}")
    caches = [s.cache for s in sources if s.cache is not None]
    if not caches:
        return None  # local data: the shuffle buffer (unchanged default)
    biggest = 0
    for s in sources:
        if s.cache is None:
            continue
        for j, u in enumerate(s.urls):  # a shard and its sidecar shards are cached together
            size = s.cache.expected.get(u, (-1, ""))[0]
            side = [s.cache.expected.get(v[j], (-1, ""))[0] for v in s.sidecars.values()]
            if size < 0 or min(side, default=0) < 0:
                return None  # sizes unknown (a bare shard list): keep the shuffle buffer
            biggest = max(biggest, size + sum(side))
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    share = min(c.limit for c in caches) // (3 * local * len(caches))
    return max(1, share // max(biggest, 1))


def _label_names(src: ResolvedSource) -> list[str] | None:
    """labels.json names (C5) of a dataset source; ConfigError when it has none."""
    import json

    from ...storage import Storage

    if src.root is None:
        raise ConfigError(f"label_names=True needs dataset folders; {src.name!r} is a shard list")
    store = Storage(src.root, src.storage_options)
    if not store.exists("labels.json"):
        raise ConfigError(f"label_names=True but {store.path('labels.json')} does not exist "
                          "(the dataset has no string labels): drop label_names")
    try:
        names = json.loads(store.read_bytes("labels.json"))["names"]
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{store.path('labels.json')} is not {{\"names\": [...]}}: {e}") from e
    return [str(n) for n in names]


def _optional_outputs(sources: Sequence[ResolvedSource], decode: DecodeConfig,
                      label_names: bool) -> tuple[str, ...]:
    """Decoded names some sources offer and others lack (C6: their ``__has__`` mask is
    in every batch, so a batch drawn only from the lacking source still carries them)."""
    def outputs(fields: Sequence[str]) -> set[str]:
        out = set()
        for f in fields:
            if f == "txt" and decode.text:
                out.add("txt")
            elif f == "cls" and decode.label:
                out.update(("cls", "label_name") if label_names else ("cls",))
            elif f == "json" and decode.json:
                out.add("json")
            elif f.endswith(".npy") and (decode.npy or f == "emb.npy") and \
                    not (decode.mel is not None and f == decode.mel.field):
                out.add(f[:-4])
        return out

    known = [outputs(s.fields) for s in sources if s.fields]
    if len(known) < 2:
        return ()
    return tuple(sorted(set.union(*known) - set.intersection(*known)))


def _cuda_prefetch(it: Iterator[dict[str, Any]], device: str) -> Iterator[dict[str, Any]]:
    """Copy batch i+1 to the GPU on a side stream while batch i is in use."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available: use device=None")
    stream = torch.cuda.Stream(device=device)

    def move(b: dict[str, Any]) -> dict[str, Any]:
        with torch.cuda.stream(stream):
            return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in b.items()}

    ready: dict[str, Any] | None = None
    for b in it:
        nxt = move(b)
        if ready is not None:
            yield _sync(ready, stream)
        ready = nxt
    if ready is not None:
        yield _sync(ready, stream)


def _sync(b: dict[str, Any], stream: Any) -> dict[str, Any]:
    import torch

    cur = torch.cuda.current_stream(stream.device)
    cur.wait_stream(stream)
    for v in b.values():
        if isinstance(v, torch.Tensor):
            v.record_stream(cur)
    return b
