"""mmshard: the data layer for training multimodal models.

>>> import mmshard
>>> cfg = mmshard.IngestConfig(max_samples=500)
>>> cfg.max_samples
500

Public names are imported on first use, so ``import mmshard`` stays cheap (no torch,
no Ray) until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AudioOptions": "mmshard.media.audio",
    "AuditConfig": "mmshard.pipelines.curate.audit",
    "ConfigError": "mmshard.errors",
    "DataError": "mmshard.errors",
    "Dataset": "mmshard.dataset",
    "DedupConfig": "mmshard.pipelines.curate.dedup",
    "DatasetIndex": "mmshard.dataset",
    "DependencyMissingError": "mmshard.errors",
    "FailureRateError": "mmshard.pipelines.result",
    "ClipsConfig": "mmshard.pipelines.clips.config",
    "EmbeddingSource": "mmshard.pipelines.mine.embeddings_io",
    "FitCodebookConfig": "mmshard.pipelines.train.codebook",
    "JobResult": "mmshard.pipelines.result",
    "TokenizeConfig": "mmshard.pipelines.transform.job",
    "TrainVQConfig": "mmshard.pipelines.train.vqvae",
    "ImageOptions": "mmshard.media.image",
    "ReportConfig": "mmshard.pipelines.curate.report",
    "IngestConfig": "mmshard.pipelines.ingest.job",
    "IngestResult": "mmshard.pipelines.ingest.job",
    "JobError": "mmshard.errors",
    "Loader": "mmshard.pipelines.stream.loader",
    "MineConfig": "mmshard.pipelines.mine.config",
    "extract_clips": "mmshard.pipelines.clips.job",
    "fit_codebook": "mmshard.pipelines.train.codebook",
    "mine": "mmshard.pipelines.mine.job",
    "tokenize": "mmshard.pipelines.transform.job",
    "train_vq": "mmshard.pipelines.train.vqvae",
    "MmshardError": "mmshard.errors",
    "ShardError": "mmshard.errors",
    "ShardInfo": "mmshard.dataset",
    "SourceError": "mmshard.errors",
    "SourceOptions": "mmshard.pipelines.ingest.sources",
    "VideoOptions": "mmshard.media.video",
    "ingest": "mmshard.pipelines.ingest.job",
    "audit": "mmshard.pipelines.curate.audit",
    "dedup": "mmshard.pipelines.curate.dedup",
    "inspect_dataset": "mmshard.verify",
    "make_executor": "mmshard.pipelines.executor",
    "report_data": "mmshard.pipelines.curate.report",
    "open_dataset": "mmshard.dataset",
    "verify_dataset": "mmshard.verify",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmshard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
