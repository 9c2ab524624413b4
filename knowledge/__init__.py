"""Knowledge bases: documents ingested, embedded and indexed; passages retrieved for questions.

The interface is knowledge.base (Passage, Retriever, Embedder); create_retriever and
create_embedder build what the settings name. Imports nothing from bots/ or workers/, and
nothing heavy until an embedder, store or retriever is made.
"""

from knowledge.base import (
    DEFAULT_MIN_SCORE,
    Embedder,
    EmbeddingError,
    KnowledgeError,
    Passage,
    Retriever,
)
from knowledge.factory import create_embedder, create_retriever, create_store

__all__ = [
    "DEFAULT_MIN_SCORE",
    "Embedder",
    "EmbeddingError",
    "KnowledgeError",
    "Passage",
    "Retriever",
    "create_embedder",
    "create_retriever",
    "create_store",
]
