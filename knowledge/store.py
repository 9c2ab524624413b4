"""What ingest writes and retrievers read: chunks, their vectors, and a manifest per knowledge base.

The manifest lists every source file with the SHA-256 of its bytes and the ids of its
chunks; ingest compares it with the folder to find what changed. A commit replaces the
chunks of some sources with new ones in one atomic step (a new FAISS generation, or one
PostgreSQL transaction), and only if nobody committed in between (`base_version`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredChunk:
    chunk_id: str
    source: str  # path relative to the ingested folder, with "/" separators
    position: int  # the chunk's index within its source
    title: str
    section: str
    text: str


@dataclass(frozen=True, slots=True)
class SourceEntry:
    sha256: str
    chunk_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    embedder: str  # model id of the embedder that made the vectors
    dimension: int
    sources: Mapping[str, SourceEntry]
    version: str | None = None  # the store's version this manifest was read at
    # Where the ingested folder is published (an intranet, a wiki export): a source's link is
    # this address joined with its path (knowledge.base.source_link). None: no links.
    link_base: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """Replace every chunk of `replaced` sources by `added` (whose sources are all in
    `replaced`); leave the other sources' chunks as they are."""

    manifest: Manifest
    replaced: frozenset[str]
    added: Sequence[tuple[StoredChunk, Sequence[float]]] = field(default_factory=tuple)
    base_version: str | None = None


class ConcurrentIngest(Exception):
    """Another ingest committed to this knowledge base since this one read its manifest."""


class KnowledgeStore(Protocol):
    async def manifest(self, kb: str) -> Manifest | None:
        """The knowledge base's manifest, or None when it has never been ingested."""
        ...

    async def commit(self, kb: str, change: Change) -> str:
        """Apply the change atomically; return the new version. Raise ConcurrentIngest when
        the knowledge base is no longer at change.base_version."""
        ...

    async def knowledge_bases(self) -> list[str]: ...
