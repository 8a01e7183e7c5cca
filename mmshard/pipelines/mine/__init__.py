"""The mining job: embeddings -> FAISS index -> hard negatives (``negatives.parquet``).

``embeddings_io`` reads query/corpus vectors, ``faiss_index`` builds and searches the
index, ``job`` runs the chunks, ``report`` writes the summary and plots.
"""

from .embeddings_io import EmbeddingSource, load_embeddings
from .faiss_index import IndexConfig
from .job import MineConfig, MineResult, PositivesConfig, mine

__all__ = [
    "EmbeddingSource",
    "IndexConfig",
    "MineConfig",
    "MineResult",
    "PositivesConfig",
    "load_embeddings",
    "mine",
]
