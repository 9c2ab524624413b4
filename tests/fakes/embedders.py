"""Embedders for tests, behind knowledge.base.Embedder: a counting wrapper, a constant one
(so that only BM25 ranks), and one that fails after some texts (an ingest dying midway)."""

from __future__ import annotations

from collections.abc import Sequence

from knowledge.base import Embedder, EmbeddingError
from knowledge.embeddings import HashingEmbedder


class CountingEmbedder:
    """Passes through to another embedder and records every text it was asked to embed."""

    def __init__(self, inner: Embedder | None = None) -> None:
        self.inner = inner if inner is not None else HashingEmbedder()
        self.dimension = self.inner.dimension
        self.model_id = getattr(self.inner, "model_id", "counting")
        self.texts: list[str] = []
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        return await self.inner.embed(texts)


class ConstantEmbedder:
    """Every text gets the same unit vector: the dense signal says nothing."""

    def __init__(self, dimension: int = 8) -> None:
        self.dimension = dimension
        self.model_id = f"constant-{dimension}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * (self.dimension - 1) for _ in texts]


class FailingEmbedder:
    """Embeds `allowed` texts, then fails as a crashed embeddings server would."""

    def __init__(self, allowed: int = 0, inner: Embedder | None = None) -> None:
        self.inner = inner if inner is not None else HashingEmbedder()
        self.dimension = self.inner.dimension
        self.model_id = getattr(self.inner, "model_id", "failing")
        self.allowed = allowed

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if len(texts) > self.allowed:
            raise EmbeddingError("the embeddings server went away")
        self.allowed -= len(texts)
        return await self.inner.embed(texts)
