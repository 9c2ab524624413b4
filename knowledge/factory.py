"""The embedder, store and retriever that the settings name.

Heavy modules (torch, faiss, psycopg) are imported only when the object that needs them is
made, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knowledge.base import Embedder, Retriever
    from knowledge.store import KnowledgeStore
    from parley.settings import Settings


def create_embedder(settings: Settings, *, threads: int | None = None) -> Embedder:
    """PARLEY_EMBEDDINGS: use (default), local, tei, or hashing (tests). `threads` sets a local
    model's CPU threads when PARLEY_EMBEDDINGS_THREADS does not; the default is 1, which
    suits a worker answering many questions at once."""
    if settings.embeddings == "tei":
        from knowledge.embeddings import TeiEmbedder

        return TeiEmbedder(settings.tei_url, dimension=settings.tei_dimension)
    if settings.embeddings == "hashing":
        from knowledge.embeddings import HashingEmbedder

        return HashingEmbedder()
    count = settings.embeddings_threads or threads or 1
    if settings.embeddings == "use":
        from knowledge.use_embedder import UseEmbedder

        return UseEmbedder(threads=count)
    from knowledge.embeddings import LocalEmbedder

    return LocalEmbedder(settings.embeddings_model, threads=count)


def ingest_threads() -> int:
    """Threads for a one-off `parley ingest`: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def create_store(settings: Settings) -> KnowledgeStore:
    if settings.knowledge_store == "pgvector":
        from knowledge.pgvector_store import PgStore

        return PgStore(_database_url(settings))
    from knowledge.faiss_store import FaissStore

    return FaissStore(settings.knowledge_dir)


def create_retriever(settings: Settings, embedder: Embedder | None = None) -> Retriever:
    """A retriever over the configured store; nothing is loaded until the first search."""
    embedder = embedder if embedder is not None else create_embedder(settings)
    # PARLEY_EMBEDDINGS_LANGUAGES, else the languages the embedder itself declares.
    languages = sorted(settings.embeddings_language_set) or None
    if settings.knowledge_store == "pgvector":
        from knowledge.pgvector_store import PgRetriever

        return PgRetriever(_database_url(settings), embedder, dense_languages=languages)
    from knowledge.faiss_store import FaissRetriever

    return FaissRetriever(settings.knowledge_dir, embedder, dense_languages=languages)


def _database_url(settings: Settings) -> str:
    from knowledge.base import KnowledgeError

    if settings.knowledge_database_url is None:
        raise KnowledgeError("PARLEY_KNOWLEDGE_STORE=pgvector needs PARLEY_KNOWLEDGE_DATABASE_URL")
    return settings.knowledge_database_url.get_secret_value()
