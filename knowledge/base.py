"""The interface other packages build on: passages, retrievers and embedders.

Nothing here imports a model, an index or a database: the pipeline can type against these
names without installing the `knowledge` extra.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

# Below this Passage.score the documents do not cover the question: the hybrid ranker
# (knowledge.ranking) is calibrated to put that boundary at 0.5.
DEFAULT_MIN_SCORE = 0.5

_KB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Passage:
    kb: str  # knowledge base name, e.g. "hr-policies"
    chunk_id: str  # stable: hash of source path, chunk index and content
    text: str  # the chunk's text
    title: str  # document title (first heading, or the file name)
    section: str  # the heading path of the chunk, e.g. "Vacation > Carry-over"
    source: str  # the file's path relative to the ingested folder (for citations)
    score: float  # relevance in [0, 1], comparable across questions
    url: str = ""  # where people can read the source (a link base was set at ingest), or ""


class Retriever(Protocol):
    async def search(self, query: str, kbs: Sequence[str], k: int) -> list[Passage]:
        """The k most relevant passages of these knowledge bases, best first. An empty one,
        or one the store lacks or cannot search beside others, contributes nothing; when
        none of them can be searched, KnowledgeMisconfigured says why."""
        ...

    async def knowledge_bases(self) -> list[str]:
        """Names of the knowledge bases that hold an index, sorted."""
        ...

    async def preload(self) -> list[str]:
        """Load the model and every knowledge base before the first question; their names."""
        ...

    async def aclose(self) -> None:
        """Release connections (a worker shutting down)."""
        ...


class Embedder(Protocol):
    dimension: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector of `dimension` floats per text, L2-normalized."""
        ...


class KnowledgeError(Exception):
    """A knowledge base cannot be read or written; the message says what to do."""


class EmbeddingError(KnowledgeError):
    """The embedding model is missing or its server failed."""


class StoreUnavailable(KnowledgeError):
    """The knowledge store (PostgreSQL) cannot be reached."""


class KnowledgeMisconfigured(KnowledgeError):
    """Only an admin can fix this (a knowledge base built with another embedding model, one
    this worker cannot see): asking again will not help."""


def source_link(link_base: str | None, source: str) -> str:
    """The web address of a source under a knowledge base's link base, or "" without one.
    Both are percent-encoded (an escape already there is kept): Slack shows no link whose
    address holds a parenthesis or an angle bracket."""
    if not link_base:
        return ""
    return f"{quote(link_base.rstrip('/'), safe=_URL_SAFE)}/{quote(source, safe='/')}"


_URL_SAFE = ":/%!$&'*+,;=~@"
_LINK_BASE = re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?", re.IGNORECASE)


def check_link_base(value: str) -> str:
    """A link base: an http(s) address without a query, a fragment or credentials (which
    every answer would show), without its trailing slash; "" means none."""
    value = value.strip()
    if value and not _LINK_BASE.fullmatch(value):
        raise KnowledgeError(
            f"{value!r} is not a web address for the documents: give the http(s) address the "
            "folder is published at, without a user name or password, e.g. "
            "https://intranet.acme.example/hr/ (or '' for none)"
        )
    return value.rstrip("/")


def check_kb_name(name: str) -> str:
    """Knowledge base names become directory names and database keys: keep them plain."""
    if not _KB_NAME.fullmatch(name):
        raise KnowledgeError(
            f"{name!r} is not a knowledge base name: use lower-case letters, digits, '-' and "
            "'_' (at most 63, starting with a letter or digit), e.g. hr-policies"
        )
    return name
