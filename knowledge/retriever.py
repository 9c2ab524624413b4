"""What FAISS and pgvector retrievers share: versions, reloads, the hybrid ranking, the cache.

Per search: ask the store for each knowledge base's version (a stat of a file, or one small
query), reload a knowledge base whose version changed since it was loaded (so a worker sees a
re-ingest without a restart), then embed the question once and rank each knowledge base's
candidates: the dense top-N from the vector index plus the BM25 top-N, each scored with both
signals (knowledge.ranking). Results are cached per (question hash, knowledge bases and their
versions, k) in a small LRU, so a new version never serves an old answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knowledge.base import Embedder, KnowledgeError, Passage, check_kb_name
from knowledge.chunking import indexed_text
from knowledge.ingest import embedder_id, same_embedder
from knowledge.lexical import LexicalIndex, analyze, text_language
from knowledge.ranking import Calibration, FloatArray, calibration_for
from knowledge.store import StoredChunk

# Candidates taken from each signal before the hybrid ranking, at least.
MIN_CANDIDATES = 32


@dataclass(frozen=True, slots=True)
class Loaded:
    """One knowledge base as a retriever holds it between versions."""

    kb: str
    version: str
    embedder: str
    dimension: int
    chunks: Sequence[StoredChunk]
    lexical: LexicalIndex
    centroid: FloatArray | None
    backend: Any = None  # what the store's retriever keeps beside: FAISS's vectors and index


def build_lexical(chunks: Sequence[StoredChunk]) -> LexicalIndex:
    return LexicalIndex([analyze(indexed_text(c.title, c.section, c.text)) for c in chunks])


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    vector: FloatArray
    weight: float  # of the dense signal (knowledge.ranking)
    k: int


class LruCache:
    """A small thread-safe LRU of search results."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[object, tuple[Passage, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> tuple[Passage, ...] | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: object, value: tuple[Passage, ...]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class HybridRetriever(ABC):
    def __init__(
        self,
        embedder: Embedder,
        *,
        dense_languages: Collection[str] | None = None,
        cache_size: int = 256,
        calibration: Calibration | None = None,
    ) -> None:
        """dense_languages: the languages whose questions the dense signal may rank; None:
        the embedder's own `languages` (English for one that names none)."""
        self.embedder = embedder
        if dense_languages is None:
            dense_languages = getattr(embedder, "languages", ("en",))
        self.dense_languages = frozenset(dense_languages)
        self.calibration = calibration or calibration_for(embedder_id(embedder))
        self.cache = LruCache(cache_size)
        self._loaded: dict[str, Loaded] = {}
        # One load per knowledge base at a time, per event loop: a burst of questions after
        # a re-ingest loads the new index once, not once per question.
        self._load_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    @abstractmethod
    async def _versions(self, kbs: Sequence[str]) -> dict[str, str]:
        """The current version of each of these knowledge bases that exists."""

    @abstractmethod
    async def _load(self, kb: str) -> Loaded:
        """Read the knowledge base's current version."""

    @abstractmethod
    async def _search_loaded(self, loaded: Loaded, query: Query) -> list[Passage]:
        """The query.k best passages of one loaded knowledge base."""

    async def search(self, query: str, kbs: Sequence[str], k: int) -> list[Passage]:
        names = sorted({kb for kb in kbs if _valid(kb)})
        if k <= 0 or not names or not query.strip():
            return []
        versions = await self._versions(names)
        if not versions:
            return []
        key = (
            hashlib.sha256(query.encode()).hexdigest(),
            tuple(sorted(versions.items())),
            k,
        )
        cached = self.cache.get(key)
        if cached is not None:
            return list(cached)
        loaded = [await self._current(kb, version) for kb, version in sorted(versions.items())]
        vector = (await self.embedder.embed([query]))[0]
        prepared = Query(
            text=query,
            vector=np.asarray(vector, dtype=np.float32),
            weight=self.calibration.weight(text_language(query), self.dense_languages),
            k=k,
        )
        passages: list[Passage] = []
        for kb in loaded:
            passages.extend(await self._search_loaded(kb, prepared))
        passages.sort(key=lambda p: (-p.score, p.kb, p.source, p.chunk_id))
        result = tuple(passages[:k])
        self.cache.put(key, result)
        return list(result)

    async def _current(self, kb: str, version: str) -> Loaded:
        loaded = self._loaded.get(kb)
        if loaded is not None and loaded.version == version:
            return loaded
        locks = self._load_locks.setdefault(asyncio.get_running_loop(), {})
        async with locks.setdefault(kb, asyncio.Lock()):
            loaded = self._loaded.get(kb)
            if loaded is None or loaded.version != version:
                loaded = await self._load(kb)
                self._check_embedder(loaded)
                self._loaded[kb] = loaded
        return loaded

    def _check_embedder(self, loaded: Loaded) -> None:
        """Refuse vectors of another model (knowledge.ingest.same_embedder)."""
        if not same_embedder(loaded.embedder, loaded.dimension, self.embedder):
            configured = embedder_id(self.embedder)
            raise KnowledgeError(
                f"knowledge base {loaded.kb!r} was built with {loaded.embedder} "
                f"({loaded.dimension}-dimensional vectors) but the configured embedder is "
                f"{configured} ({self.embedder.dimension}): re-ingest it (parley ingest "
                f"<folder> --kb {loaded.kb}) or configure the embedder it was built with"
            )

    def rank(
        self,
        loaded: Loaded,
        query: Query,
        cosine_by_row: dict[int, float],
        lexical: FloatArray,
    ) -> list[Passage]:
        """Score the candidates with both signals; the k best as passages."""
        if not cosine_by_row:
            return []
        rows = np.fromiter(cosine_by_row.keys(), dtype=np.int64, count=len(cosine_by_row))
        cosine = np.fromiter(cosine_by_row.values(), dtype=np.float32, count=len(rows))
        calibration = self.calibration
        base = calibration.background(query.vector, loaded.centroid, len(loaded.chunks))
        scores = calibration.scores(cosine, lexical[rows], background=base, weight=query.weight)
        order = np.argsort(-scores, kind="stable")[: query.k]
        passages = []
        for i in order:
            chunk = loaded.chunks[int(rows[i])]
            passages.append(
                Passage(
                    kb=loaded.kb,
                    chunk_id=chunk.chunk_id,
                    text=chunk.text,
                    title=chunk.title,
                    section=chunk.section,
                    source=chunk.source,
                    score=round(float(scores[i]), 6),
                )
            )
        return passages

    @staticmethod
    def candidates(k: int) -> int:
        return max(MIN_CANDIDATES, 4 * k)

    @staticmethod
    def lexical_rows(lexical: FloatArray, n: int) -> list[int]:
        """Rows of the n best BM25 scores above zero."""
        hits = np.flatnonzero(lexical > 0)
        if len(hits) > n:
            hits = hits[np.argpartition(-lexical[hits], n - 1)[:n]]
        return [int(i) for i in hits]


def _valid(kb: str) -> bool:
    try:
        check_kb_name(kb)
    except KnowledgeError:
        return False
    return True
