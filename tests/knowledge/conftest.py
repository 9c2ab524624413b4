"""Fixtures of the knowledge tests: a PostgreSQL schema of their own, corpora on disk."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from knowledge.base import Embedder
from knowledge.faiss_store import FaissRetriever, FaissStore
from tests.support.postgres import connect, has_pgvector

WriteFiles = Callable[[Mapping[str, str | bytes]], Path]


@pytest.fixture
def docs(tmp_path: Path) -> WriteFiles:
    """Write {relative path: text or bytes} under tmp_path/docs (again: overwrite, add)."""
    root = tmp_path / "docs"
    root.mkdir()

    def write(files: Mapping[str, str | bytes]) -> Path:
        for name, content in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return root

    return write


@pytest.fixture
def faiss_root(tmp_path: Path) -> Path:
    return tmp_path / "knowledge-data"


@pytest.fixture
def store(faiss_root: Path) -> FaissStore:
    return FaissStore(faiss_root)


def retriever_for(root: Path, embedder: Embedder) -> FaissRetriever:
    """A retriever whose dense signal counts in both languages (the hashing embedder's
    letter trigrams know no language). The test embedders do not place words by meaning, so
    questions' words are not translated (knowledge.bridge; tests/knowledge/test_bridge.py)."""
    return FaissRetriever(root, embedder, dense_languages=("en", "es"), translate_words=False)


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema in the real PostgreSQL (dropped afterwards), with pgvector available.

    Skips only when the server lacks the extension (.ci/run installs it); fails when the
    server is not running, as the Redis fixture does."""
    conn = await connect()
    schema = f"parley_test_{uuid.uuid4().hex[:12]}"
    try:
        available = await has_pgvector(conn)
        if not available:
            pytest.skip(
                "the pgvector extension is not installed in the local PostgreSQL; install it "
                "(Debian: postgresql-15-pgvector, or .ci/run, which builds Debian's package "
                "where the release lacks it)"
            )
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
