"""Knowledge bases in PostgreSQL with pgvector, for more than one host.

Three tables (in PARLEY_KNOWLEDGE_DATABASE_URL's database, schema `public` by default):
    parley_knowledge_bases    kb, version (bumped by every commit), embedder, dimension,
                              link_base
    parley_knowledge_sources  the manifest: kb, source, sha256, chunk ids
    parley_knowledge_chunks   kb, chunk id, source, position, title, section, text, embedding

A commit is one transaction, serialized per knowledge base by an advisory lock: readers see
the old knowledge base or the new one, never half of each. Retrievers ask for the versions on
every search (one indexed query) and reload a knowledge base's texts for BM25 when its
version moved. Dense search runs in PostgreSQL, exact (ORDER BY embedding <=> query), which
suits tens of thousands of chunks per knowledge base.

The `vector` extension must be installed on the server (Debian: postgresql-NN-pgvector); the
store creates it in the database when it may (a superuser, or pgvector marked trusted).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from knowledge.base import (
    Embedder,
    KnowledgeError,
    KnowledgeMisconfigured,
    Passage,
    StoreUnavailable,
    check_kb_name,
)
from knowledge.retriever import HybridRetriever, Loaded, Query, build_lexical
from knowledge.store import Change, ConcurrentIngest, Manifest, SourceEntry, StoredChunk

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DDL_LOCK = 0x7061726C6579  # advisory lock key while creating the tables ("parley")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise KnowledgeError("psycopg is not installed: pip install 'parley[knowledge]'") from None
    return psycopg


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def vector_literal(vector: Sequence[float] | np.ndarray[Any, Any]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _parse_vector(text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray([float(x) for x in text.strip("[]").split(",") if x], dtype=np.float32)


class PgStore:
    def __init__(self, url: str, *, schema: str = "public") -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise KnowledgeError(f"{schema!r} is not a plain schema name")
        self.url = url
        self.schema = schema
        self._ready = False
        t = f'"{schema}".parley_knowledge'
        self.kbs, self.sources, self.chunks = f"{t}_bases", f"{t}_sources", f"{t}_chunks"

    async def connect(self, *, autocommit: bool = False) -> Any:
        psycopg = _psycopg()
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=autocommit, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"PostgreSQL at {redact_url(self.url)} is not reachable "
                f"({_first_line(exc)}); check PARLEY_KNOWLEDGE_DATABASE_URL"
            ) from None

    async def ensure_schema(self, conn: Any) -> None:
        if self._ready:
            return
        psycopg = _psycopg()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            row = await (
                await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
            ).fetchone()
            if row is None:
                try:
                    async with conn.transaction():
                        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as exc:
                    raise KnowledgeError(
                        "PostgreSQL lacks the pgvector extension "
                        f"({_first_line(exc)}). Install it on the server (Debian: apt-get "
                        "install postgresql-<version>-pgvector) and run CREATE EXTENSION vector "
                        "as a superuser in this database."
                    ) from None
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {self.kbs} (
                    kb text PRIMARY KEY,
                    version bigint NOT NULL,
                    embedder text NOT NULL,
                    dimension integer NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now())"""
            )
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {self.sources} (
                    kb text NOT NULL REFERENCES {self.kbs} ON DELETE CASCADE,
                    source text NOT NULL,
                    sha256 text NOT NULL,
                    chunk_ids text[] NOT NULL,
                    PRIMARY KEY (kb, source))"""
            )
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {self.chunks} (
                    kb text NOT NULL REFERENCES {self.kbs} ON DELETE CASCADE,
                    chunk_id text NOT NULL,
                    source text NOT NULL,
                    position integer NOT NULL,
                    title text NOT NULL,
                    section text NOT NULL,
                    text text NOT NULL,
                    embedding vector NOT NULL,
                    PRIMARY KEY (kb, chunk_id))"""
            )
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS parley_knowledge_chunks_source "
                f"ON {self.chunks} (kb, source)"
            )
            # Added after the first release: a store made before it gains the column. Asked
            # first, since ALTER TABLE locks the table even when there is nothing to add.
            found = await (
                await conn.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                    "AND table_name = 'parley_knowledge_bases' AND column_name = 'link_base'",
                    (self.schema,),
                )
            ).fetchone()
            if found is None:
                try:
                    await conn.execute(f"ALTER TABLE {self.kbs} ADD COLUMN link_base text")
                except psycopg.errors.InsufficientPrivilege:
                    raise KnowledgeMisconfigured(
                        "the knowledge store needs a column this database user may not add: "
                        f"have the tables' owner run ALTER TABLE {self.kbs} ADD COLUMN "
                        "link_base text (or run parley ingest once as that user)"
                    ) from None
        self._ready = True

    async def manifest(self, kb: str) -> Manifest | None:
        check_kb_name(kb)
        async with await self.connect() as conn:
            await self.ensure_schema(conn)
            row = await (
                await conn.execute(
                    f"SELECT embedder, dimension, version, link_base FROM {self.kbs} WHERE kb = %s",
                    (kb,),
                )
            ).fetchone()
            if row is None:
                return None
            rows = await (
                await conn.execute(
                    f"SELECT source, sha256, chunk_ids FROM {self.sources} WHERE kb = %s", (kb,)
                )
            ).fetchall()
        sources = {source: SourceEntry(sha, tuple(ids)) for source, sha, ids in rows}
        return Manifest(row[0], int(row[1]), sources, str(row[2]), link_base=row[3] or None)

    async def commit(self, kb: str, change: Change) -> str:
        check_kb_name(kb)
        manifest = change.manifest
        async with await self.connect() as conn:
            await self.ensure_schema(conn)
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"parley_knowledge:{kb}",)
                )
                row = await (
                    await conn.execute(
                        f"SELECT version FROM {self.kbs} WHERE kb = %s FOR UPDATE", (kb,)
                    )
                ).fetchone()
                live = str(row[0]) if row is not None else None
                if live != change.base_version:
                    raise ConcurrentIngest(
                        f"knowledge base {kb!r} changed while this ingest ran; run it again"
                    )
                if row is None:
                    await conn.execute(
                        f"INSERT INTO {self.kbs} (kb, version, embedder, dimension) "
                        "VALUES (%s, 0, %s, %s)",
                        (kb, manifest.embedder, manifest.dimension),
                    )
                await conn.execute(
                    f"DELETE FROM {self.chunks} WHERE kb = %s AND source = ANY(%s)",
                    (kb, sorted(change.replaced)),
                )
                cursor = conn.cursor()
                async with cursor.copy(
                    f"COPY {self.chunks} (kb, chunk_id, source, position, title, section, "
                    "text, embedding) FROM STDIN"
                ) as copy:
                    for chunk, vector in change.added:
                        await copy.write_row(
                            (kb, chunk.chunk_id, chunk.source, chunk.position, chunk.title,
                             chunk.section, chunk.text, vector_literal(vector))
                        )  # fmt: skip
                await conn.execute(f"DELETE FROM {self.sources} WHERE kb = %s", (kb,))
                async with cursor.copy(
                    f"COPY {self.sources} (kb, source, sha256, chunk_ids) FROM STDIN"
                ) as copy:
                    for source, entry in sorted(manifest.sources.items()):
                        await copy.write_row((kb, source, entry.sha256, list(entry.chunk_ids)))
                version = await (
                    await conn.execute(
                        f"UPDATE {self.kbs} SET version = version + 1, embedder = %s, "
                        "dimension = %s, link_base = %s, updated_at = now() WHERE kb = %s "
                        "RETURNING version",
                        (manifest.embedder, manifest.dimension, manifest.link_base, kb),
                    )
                ).fetchone()
        return str(version[0])

    async def knowledge_bases(self) -> list[str]:
        async with await self.connect() as conn:
            await self.ensure_schema(conn)
            rows = await (await conn.execute(f"SELECT kb FROM {self.kbs} ORDER BY kb")).fetchall()
        return [str(row[0]) for row in rows]

    async def drop(self, kb: str) -> None:
        """Delete a knowledge base and everything in it."""
        async with await self.connect() as conn:
            await self.ensure_schema(conn)
            await conn.execute(f"DELETE FROM {self.kbs} WHERE kb = %s", (kb,))
            await conn.commit()


class PgRetriever(HybridRetriever):
    """Retriever over a PgStore; one autocommit connection per event loop for searches."""

    def __init__(
        self,
        url: str,
        embedder: Embedder,
        *,
        schema: str = "public",
        dense_languages: Collection[str] | None = None,
        cache_size: int = 256,
        translate_words: bool | None = None,
    ) -> None:
        super().__init__(
            embedder,
            dense_languages=dense_languages,
            cache_size=cache_size,
            translate_words=translate_words,
        )
        self.store = PgStore(url, schema=schema)
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._connect_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        conn = self._connections.get(loop)
        if conn is not None and not conn.closed:
            return conn
        async with self._connect_locks.setdefault(loop, asyncio.Lock()):
            conn = self._connections.get(loop)
            if conn is None or conn.closed:
                conn = await self.store.connect(autocommit=True)
                await self.store.ensure_schema(conn)
                self._connections[loop] = conn
        return conn

    async def _query(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        psycopg = _psycopg()
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                rows: list[Any] = await (await conn.execute(sql, params)).fetchall()
                return rows
            except psycopg.OperationalError as exc:  # the server restarted or went away
                await conn.close()
                if attempt == 2:
                    raise StoreUnavailable(
                        f"PostgreSQL at {redact_url(self.store.url)} failed ({_first_line(exc)})"
                    ) from None
        raise AssertionError("unreachable")

    @property
    def location(self) -> str:
        return f"PostgreSQL at {redact_url(self.store.url)} (PARLEY_KNOWLEDGE_DATABASE_URL)"

    async def aclose(self) -> None:
        conn = self._connections.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.close()

    async def knowledge_bases(self) -> list[str]:
        rows = await self._query(f"SELECT kb FROM {self.store.kbs} ORDER BY kb", ())
        return [str(row[0]) for row in rows]

    async def _versions(self, kbs: Sequence[str]) -> dict[str, str]:
        rows = await self._query(
            f"SELECT kb, version FROM {self.store.kbs} WHERE kb = ANY(%s)", (list(kbs),)
        )
        return {str(kb): str(version) for kb, version in rows}

    async def _load(self, kb: str) -> Loaded:
        psycopg = _psycopg()
        # Its own connection: a consistent snapshot of one version, while searches go on.
        async with await self.store.connect() as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                head = await (
                    await conn.execute(
                        f"SELECT version, embedder, dimension, link_base FROM {self.store.kbs} "
                        "WHERE kb = %s",
                        (kb,),
                    )
                ).fetchone()
                if head is None:
                    raise KnowledgeError(f"knowledge base {kb!r} is gone")
                rows = await (
                    await conn.execute(
                        f"SELECT chunk_id, source, position, title, section, text "
                        f"FROM {self.store.chunks} WHERE kb = %s ORDER BY source, position",
                        (kb,),
                    )
                ).fetchall()
                mean = await (
                    await conn.execute(
                        f"SELECT avg(embedding)::text FROM {self.store.chunks} WHERE kb = %s",
                        (kb,),
                    )
                ).fetchone()
        chunks = [StoredChunk(*row) for row in rows]
        centroid = _parse_vector(mean[0]) if mean is not None and mean[0] else None
        return Loaded(
            kb=kb,
            version=str(head[0]),
            embedder=str(head[1]),
            dimension=int(head[2]),
            chunks=chunks,
            lexical=await asyncio.to_thread(build_lexical, chunks),
            centroid=centroid,
            backend={chunk.chunk_id: row for row, chunk in enumerate(chunks)},
            link_base=head[3] or None,
        )

    async def _search_loaded(self, loaded: Loaded, query: Query) -> list[Passage]:
        rows_by_id: dict[str, int] = loaded.backend
        if not loaded.chunks:
            return []
        # BM25 over every chunk and the ranking run in a thread, as FAISS's search does: a
        # large knowledge base must not hold up the worker's event loop.
        lexical = await asyncio.to_thread(self.lexical_scores, loaded, query)
        n = self.candidates(query.k)
        extra = [loaded.chunks[row].chunk_id for row in self.lexical_rows(lexical, n)]
        found = await self._query(
            f"""(SELECT chunk_id, 1 - (embedding <=> %(q)s::vector) FROM {self.store.chunks}
                 WHERE kb = %(kb)s ORDER BY embedding <=> %(q)s::vector LIMIT %(n)s)
                UNION
                (SELECT chunk_id, 1 - (embedding <=> %(q)s::vector) FROM {self.store.chunks}
                 WHERE kb = %(kb)s AND chunk_id = ANY(%(ids)s))""",
            {"q": vector_literal(query.vector), "kb": loaded.kb, "n": n, "ids": extra},
        )
        # Rows of a newer version than the one loaded are left out; the next search reloads.
        cosine = {rows_by_id[cid]: float(sim) for cid, sim in found if cid in rows_by_id}
        return await asyncio.to_thread(self.rank, loaded, query, cosine, lexical)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
