"""What FAISS and pgvector retrievers share: versions, reloads, the hybrid ranking, the cache.

Per search: ask the store for each knowledge base's version (a stat of a file, or one small
query), reload a knowledge base whose version changed since it was loaded (so a worker sees a
re-ingest without a restart), then embed the question once (with its words, for
knowledge.bridge) and rank each knowledge base's candidates: the dense top-N from the vector
index plus the BM25 top-N, each scored with both signals (knowledge.ranking). The best become
passages with their neighbouring chunks (knowledge.windows). Results are cached per (question
hash, knowledge bases and their versions, k) in a small LRU, so a new version never serves an
old answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from knowledge.base import (
    Embedder,
    KnowledgeError,
    KnowledgeMisconfigured,
    Passage,
    check_kb_name,
    source_link,
)
from knowledge.bridge import TRANSLATED_WEIGHT, TermBridge, build_bridge
from knowledge.chunking import indexed_text
from knowledge.ingest import embedder_id, identify, same_embedder
from knowledge.lexical import LANGUAGES, LexicalIndex, analyze, content_words, text_language
from knowledge.ranking import Calibration, FloatArray, calibration_for
from knowledge.store import StoredChunk
from knowledge.windows import DEFAULT_REACH, Positions, positions, window_text, windows

log = logging.getLogger(__name__)

# Candidates taken from each signal before the hybrid ranking, at least.
MIN_CANDIDATES = 32
# A knowledge base that could not be searched (another model's vectors, a damaged folder) is
# read again after this long, or at once when its version changes.
RECHECK_REFUSED_SECONDS = 60.0


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
    link_base: str | None = None  # the manifest's: sources become links (Passage.url)
    # Set by HybridRetriever._prepare:
    by_position: Positions = field(default_factory=dict)
    bridge: TermBridge | None = None


def build_lexical(chunks: Sequence[StoredChunk]) -> LexicalIndex:
    return LexicalIndex([analyze(indexed_text(c.title, c.section, c.text)) for c in chunks])


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    vector: FloatArray
    weight: float  # of the dense signal (knowledge.ranking)
    k: int
    language: str = "en"
    # For knowledge.bridge: the question's content words and a vector for each.
    words: tuple[str, ...] = ()
    word_vectors: FloatArray | None = None


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
        reach: int = DEFAULT_REACH,
        translate_words: bool | None = None,
    ) -> None:
        """dense_languages: the languages whose questions the dense signal may rank; None:
        the embedder's own `languages` (English for one that names none). reach: chunks on
        each side of a ranked chunk that its passage includes (knowledge.windows).
        translate_words: translate questions' words for BM25 (knowledge.bridge); None: when
        the dense languages hold two that the lexical index tells apart, i.e. the model maps
        both into one space."""
        self.embedder = embedder
        self.reach = reach
        if dense_languages is None:
            dense_languages = getattr(embedder, "languages", ("en",))
        self.dense_languages = frozenset(dense_languages)
        if translate_words is None:
            translate_words = len(self.dense_languages & LANGUAGES) >= 2
        self.bridging = translate_words
        self.calibration = calibration or calibration_for(embedder_id(embedder))
        self.cache = LruCache(cache_size)
        self._loaded: dict[str, Loaded] = {}
        # Versions that cannot be searched (kb -> version, why, until when), names not found.
        self._refused: dict[str, tuple[str, KnowledgeMisconfigured, float]] = {}
        self._missing: set[str] = set()
        # One load per knowledge base at a time, per event loop: a burst of questions after
        # a re-ingest loads the new index once, not once per question.
        self._load_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the knowledge bases are read from, and the setting that says so."""

    @abstractmethod
    async def knowledge_bases(self) -> list[str]:
        """Names of the knowledge bases that hold an index, sorted."""

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
        self._tell_missing(names, versions)
        if not versions:
            raise KnowledgeMisconfigured(
                f"{_listed(names)} {'is' if len(names) == 1 else 'are'} not in the knowledge "
                f"store this worker reads, {self.location}: ingest {_pronoun(names)} there "
                "(parley ingest <folder> --kb <name>), or give the workers and `parley ingest` "
                "the same setting"
            )
        key = (
            hashlib.sha256(query.encode()).hexdigest(),
            tuple(sorted(versions.items())),
            k,
        )
        cached = self.cache.get(key)
        if cached is not None:
            return list(cached)
        loaded = await self._usable(versions)
        prepared = await self._prepare_query(query, k, loaded)
        passages: list[Passage] = []
        for kb in loaded:
            passages.extend(await self._search_loaded(kb, prepared))
        passages.sort(key=lambda p: (-p.score, p.kb, p.source, p.chunk_id))
        result = tuple(passages[:k])
        self.cache.put(key, result)
        return list(result)

    async def preload(self) -> list[str]:
        """Load the embedding model and every knowledge base now (index, BM25, the bridge's
        vocabulary), so that the first question does not wait for them; the names loaded.
        One that cannot be loaded is logged and left for a question to report. Without any
        knowledge base nothing is loaded: a worker nobody asks about documents stays lean."""
        names = [kb for kb in await self.knowledge_bases() if _valid(kb)]
        if not names:
            return []
        await self.embedder.embed(["warm-up"])
        loaded = []
        for kb, version in sorted((await self._versions(names)).items()):
            try:
                await self._current(kb, version)
            except KnowledgeMisconfigured as exc:
                self._refuse(kb, version, exc)
            except KnowledgeError as exc:
                log.warning("knowledge base %s not loaded: %s", kb, exc)
            else:
                loaded.append(kb)
        return loaded

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Nothing to release here; a store with connections overrides it."""

    async def _usable(self, versions: dict[str, str]) -> list[Loaded]:
        """The knowledge bases loaded at these versions, without those that this embedder
        cannot search: one stale or damaged knowledge base must not silence a channel's
        others. Such a version is logged once and not read again for RECHECK_REFUSED_SECONDS.
        When none is left, the first refusal is raised."""
        loaded: list[Loaded] = []
        refusals: list[KnowledgeMisconfigured] = []
        for kb, version in sorted(versions.items()):
            refused = self._refused.get(kb)
            if refused is not None and refused[0] == version and time.monotonic() < refused[2]:
                refusals.append(refused[1])
                continue
            try:
                loaded.append(await self._current(kb, version))
            except KnowledgeMisconfigured as exc:
                self._refuse(kb, version, exc)
                refusals.append(exc)
        if not loaded and refusals:
            raise refusals[0]
        return loaded

    def _refuse(self, kb: str, version: str, exc: KnowledgeMisconfigured) -> None:
        """Leave this version out of searches for a while (an admin restoring a damaged
        folder in place keeps its version), logged once per version."""
        known = self._refused.get(kb)
        if known is None or known[0] != version:
            log.error("knowledge base %s left out of every search: %s", kb, exc)
        self._refused[kb] = (version, exc, time.monotonic() + RECHECK_REFUSED_SECONDS)

    def _tell_missing(self, names: Sequence[str], versions: dict[str, str]) -> None:
        """Log, once per knowledge base, one that a channel uses but the store lacks."""
        for kb in names:
            if kb in versions:
                self._missing.discard(kb)
            elif kb not in self._missing:
                self._missing.add(kb)
                log.warning(
                    "knowledge base %s is used by a channel but not in %s", kb, self.location
                )

    async def _prepare_query(self, text: str, k: int, loaded: Sequence[Loaded]) -> Query:
        """The question embedded, and its words too where a knowledge base has a bridge (in
        the same call; a word the bridge knows already has its vector)."""
        language = text_language(text)
        bridges = [kb.bridge for kb in loaded if kb.bridge is not None]
        words = tuple(content_words(text)) if bridges else ()
        known: dict[str, FloatArray] = {}
        for word in words:
            vector = next((v for b in bridges if (v := b.vector_of(word)) is not None), None)
            if vector is not None:
                known[word] = vector
        missing = [w for w in words if w not in known]
        vectors = np.asarray(await self.embedder.embed([text, *missing]), dtype=np.float32)
        known.update(zip(missing, vectors[1:], strict=True))
        return Query(
            text=text,
            vector=vectors[0],
            weight=self.calibration.weight(language, self.dense_languages),
            k=k,
            language=language,
            words=words,
            word_vectors=np.stack([known[w] for w in words]) if words else None,
        )

    async def _current(self, kb: str, version: str) -> Loaded:
        loaded = self._loaded.get(kb)
        if loaded is not None and loaded.version == version:
            return loaded
        locks = self._load_locks.setdefault(asyncio.get_running_loop(), {})
        async with locks.setdefault(kb, asyncio.Lock()):
            loaded = self._loaded.get(kb)
            if loaded is None or loaded.version != version:
                loaded = await self._load(kb)
                await identify(self.embedder)
                self._check_embedder(loaded)
                loaded = await self._prepare(loaded)
                self._loaded[kb] = loaded
        return loaded

    async def _prepare(self, loaded: Loaded) -> Loaded:
        """What ranking needs beside what the store loaded. The bridges loaded so far (the
        knowledge base's previous version among them) lend the new one their word vectors."""
        bridge = None
        if self.bridging:
            known = [kb.bridge for kb in self._loaded.values() if kb.bridge is not None]
            bridge = await build_bridge(loaded.chunks, self.embedder, self.dense_languages, known)
        return replace(loaded, by_position=positions(loaded.chunks), bridge=bridge)

    def lexical_scores(self, loaded: Loaded, query: Query) -> FloatArray:
        """BM25 of every chunk for the question's words and, through the knowledge base's
        bridge, for their translations, counted at TRANSLATED_WEIGHT (knowledge.bridge)."""
        lexical = loaded.lexical
        scores = lexical.scores(lexical.query_terms(query.text))
        if loaded.bridge is None or query.word_vectors is None:
            return scores
        translated = loaded.bridge.translate(query.words, query.word_vectors, query.language)
        for terms in translated.values():
            other = lexical.scores(terms) * np.float32(TRANSLATED_WEIGHT)
            scores = np.maximum(scores, other)
        return scores

    def _check_embedder(self, loaded: Loaded) -> None:
        """Refuse vectors of another model (knowledge.ingest.same_embedder)."""
        if not same_embedder(loaded.embedder, loaded.dimension, self.embedder):
            configured = embedder_id(self.embedder)
            raise KnowledgeMisconfigured(
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
        order = np.argsort(-scores, kind="stable")
        ranked = (int(rows[i]) for i in order)
        score_of = {int(rows[i]): float(scores[i]) for i in order}
        passages = []
        for window in windows(
            ranked, loaded.chunks, loaded.by_position, k=query.k, reach=self.reach
        ):
            chunk = loaded.chunks[window.anchor]
            passages.append(
                Passage(
                    kb=loaded.kb,
                    chunk_id=chunk.chunk_id,
                    text=window_text(window, loaded.chunks),
                    title=chunk.title,
                    section=chunk.section,
                    source=chunk.source,
                    score=round(score_of[window.anchor], 6),
                    url=source_link(loaded.link_base, chunk.source),
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


def _listed(names: Sequence[str]) -> str:
    return ("knowledge base " if len(names) == 1 else "knowledge bases ") + ", ".join(names)


def _pronoun(names: Sequence[str]) -> str:
    return "it" if len(names) == 1 else "them"


def _valid(kb: str) -> bool:
    try:
        check_kb_name(kb)
    except KnowledgeError:
        return False
    return True
