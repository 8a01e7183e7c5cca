"""The mining job: embeddings -> FAISS index -> hard negatives (``negatives.parquet``).

``config`` (MineConfig, MineResult, output names), ``embeddings_io`` reads query/corpus
vectors, ``plan`` prepares them and resolves positives, ``faiss_index`` builds and
searches the index, ``chunks`` is the task (one chunk of queries), ``job`` the driver,
``report`` writes the negatives file, failures, summary and plot.
"""

from .config import MineConfig, MineResult, PositivesConfig
from .embeddings_io import EmbeddingSource, load_embeddings
from .faiss_index import IndexConfig
from .job import mine

__all__ = [
    "EmbeddingSource",
    "IndexConfig",
    "MineConfig",
    "MineResult",
    "PositivesConfig",
    "load_embeddings",
    "mine",
]
