"""Knowledge bases as FAISS indexes on disk, one folder per knowledge base.

    <PARLEY_KNOWLEDGE_DIR>/<kb>/CURRENT            the live generation's name: the version stamp
    <PARLEY_KNOWLEDGE_DIR>/<kb>/<generation>/      index.faiss, chunks.jsonl, manifest.json
    <PARLEY_KNOWLEDGE_DIR>/<kb>/.lock              held while a commit writes

A commit writes a whole new generation into a temporary folder beside the live one, renames
it into place, then replaces CURRENT (os.replace: atomic). Until that last step readers see
the old generation, whole; a failed or interrupted ingest leaves at most a temporary folder
that the next commit removes. The previous generation is kept one commit longer for readers
still loading it. Retrievers stat CURRENT on every search and reload when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from knowledge.base import (
    Embedder,
    KnowledgeError,
    KnowledgeMisconfigured,
    Passage,
    check_kb_name,
)
from knowledge.ranking import FloatArray
from knowledge.retriever import HybridRetriever, Loaded, Query, build_lexical
from knowledge.store import Change, ConcurrentIngest, Manifest, SourceEntry, StoredChunk

CURRENT = "CURRENT"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
MANIFEST_FILE = "manifest.json"
FORMAT = 1
_TMP_PREFIX = ".tmp-"

_T = TypeVar("_T")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise KnowledgeError(
            "faiss-cpu is not installed: pip install 'parley[knowledge]'"
        ) from None
    return faiss


@dataclass(frozen=True, slots=True)
class Generation:
    name: str
    manifest: Manifest
    chunks: list[StoredChunk]
    vectors: FloatArray  # one row per chunk, same order


class FaissStore:
    """Writes and reads the generations of every knowledge base under `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def kb_dir(self, kb: str) -> Path:
        return self.root / check_kb_name(kb)

    # Reading

    def current(self, kb: str) -> str | None:
        try:
            name = (self.kb_dir(kb) / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def stamp(self, kb: str) -> tuple[int, int, int] | None:
        """Changes whenever CURRENT is replaced: a cheap check before reading it."""
        try:
            st = os.stat(self.kb_dir(kb) / CURRENT)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read_manifest(self, kb: str) -> Manifest | None:
        return self._read_live(kb, lambda name: _read_manifest(self.kb_dir(kb) / name, name))

    def load(self, kb: str) -> Generation | None:
        return self._read_live(kb, lambda name: self._load_generation(kb, name))

    def _read_live(self, kb: str, read: Callable[[str], _T]) -> _T | None:
        """read(the live generation's name), again when a commit replaced and pruned it
        meanwhile; None when the knowledge base has never been ingested."""
        name = self.current(kb)
        for _ in range(3):
            if name is None:
                return None
            try:
                return read(name)
            except FileNotFoundError as exc:
                again = self.current(kb)
                if again == name:  # commits prune only generations that CURRENT left
                    raise self._damaged(kb, name, exc) from None
                name = again
        raise KnowledgeError(f"knowledge base {kb!r} keeps changing while being read")

    def _damaged(self, kb: str, name: str, exc: FileNotFoundError) -> KnowledgeMisconfigured:
        kb_dir = self.kb_dir(kb)
        folder = kb_dir / name
        if folder.is_dir() and exc.filename is not None:
            missing = f"{os.fsdecode(exc.filename)} is missing"
        else:
            missing = f"its {CURRENT} file names the folder {folder}, which does not exist"
        return KnowledgeMisconfigured(
            f"knowledge base {kb!r} is damaged: {missing}. Restore {kb_dir} from a backup, "
            f"or delete {kb_dir} and ingest the knowledge base again"
        )

    def _load_generation(self, kb: str, name: str) -> Generation:
        folder = self.kb_dir(kb) / name
        manifest = _read_manifest(folder, name)
        chunks = []
        with open(folder / CHUNKS_FILE, encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                chunks.append(StoredChunk(**row))
        faiss = _faiss()
        if not (folder / INDEX_FILE).exists():
            raise FileNotFoundError(folder / INDEX_FILE)
        index = faiss.read_index(str(folder / INDEX_FILE))
        if index.ntotal != len(chunks):
            raise KnowledgeMisconfigured(
                f"knowledge base {kb!r} is damaged ({index.ntotal} vectors, {len(chunks)} "
                "chunks): ingest it again"
            )
        vectors = np.zeros((0, manifest.dimension), dtype=np.float32)
        if index.ntotal:
            vectors = np.ascontiguousarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
        return Generation(name, manifest, chunks, vectors)

    def knowledge_base_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = []
        for child in self.root.iterdir():
            if (child / CURRENT).is_file():
                with contextlib.suppress(KnowledgeError):
                    names.append(check_kb_name(child.name))
        return sorted(names)

    # Writing

    def write(self, kb: str, change: Change) -> str:
        kb_dir = self.kb_dir(kb)
        kb_dir.mkdir(parents=True, exist_ok=True)
        with _locked(kb_dir / ".lock"):
            live = self.current(kb)
            if live != change.base_version:
                raise ConcurrentIngest(
                    f"knowledge base {kb!r} changed while this ingest ran; run it again"
                )
            for stale in kb_dir.glob(_TMP_PREFIX + "*"):  # left by a crashed ingest
                shutil.rmtree(stale, ignore_errors=True)
            previous = None
            if live:
                try:
                    previous = self._load_generation(kb, live)
                except FileNotFoundError as exc:  # no commit can move CURRENT while we lock
                    raise self._damaged(kb, live, exc) from None
            chunks, vectors = _merge(previous, change)
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            tmp = kb_dir / f"{_TMP_PREFIX}{name}"
            try:
                tmp.mkdir()
                _write_generation(tmp, change.manifest, chunks, vectors)
                os.rename(tmp, kb_dir / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _replace_text(kb_dir / CURRENT, name + "\n")
            for old in kb_dir.iterdir():
                # Keep the live generation and the one readers may still be loading.
                if old.is_dir() and old.name not in (name, live) and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
            return name

    # KnowledgeStore, for ingest

    async def manifest(self, kb: str) -> Manifest | None:
        return await asyncio.to_thread(self.read_manifest, kb)

    async def commit(self, kb: str, change: Change) -> str:
        return await asyncio.to_thread(self.write, kb, change)

    async def knowledge_bases(self) -> list[str]:
        return await asyncio.to_thread(self.knowledge_base_names)


def _merge(previous: Generation | None, change: Change) -> tuple[list[StoredChunk], FloatArray]:
    dimension = change.manifest.dimension
    kept_chunks: list[StoredChunk] = []
    kept_rows: list[int] = []
    if previous is not None and previous.manifest.dimension == dimension:
        for row, chunk in enumerate(previous.chunks):
            if chunk.source not in change.replaced:
                kept_chunks.append(chunk)
                kept_rows.append(row)
    elif previous is not None and set(previous.manifest.sources) - change.replaced:
        raise KnowledgeError("the embedder's dimension changed: every source must be re-embedded")
    kept = (
        previous.vectors[kept_rows]
        if previous is not None and kept_rows
        else np.zeros((0, dimension), dtype=np.float32)
    )
    added = np.asarray([vector for _, vector in change.added], dtype=np.float32).reshape(
        len(change.added), dimension
    )
    chunks = kept_chunks + [chunk for chunk, _ in change.added]
    vectors = np.ascontiguousarray(np.vstack([kept, added]), dtype=np.float32)
    # Sources in a stable order, chunks in their order within a source.
    order = sorted(range(len(chunks)), key=lambda i: (chunks[i].source, chunks[i].position))
    return [chunks[i] for i in order], vectors[order]


def _write_generation(
    folder: Path, manifest: Manifest, chunks: Sequence[StoredChunk], vectors: FloatArray
) -> None:
    faiss = _faiss()
    index = faiss.IndexFlatIP(manifest.dimension)  # exact inner product = cosine on unit vectors
    if len(vectors):
        index.add(vectors)
    faiss.write_index(index, str(folder / INDEX_FILE))
    with open(folder / CHUNKS_FILE, "w", encoding="utf-8") as out:
        for chunk in chunks:
            row = {
                "chunk_id": chunk.chunk_id,
                "source": chunk.source,
                "position": chunk.position,
                "title": chunk.title,
                "section": chunk.section,
                "text": chunk.text,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    document = {
        "format": FORMAT,
        "embedder": manifest.embedder,
        "dimension": manifest.dimension,
        **({"link_base": manifest.link_base} if manifest.link_base else {}),
        "sources": {
            source: {"sha256": entry.sha256, "chunks": list(entry.chunk_ids)}
            for source, entry in sorted(manifest.sources.items())
        },
    }
    (folder / MANIFEST_FILE).write_text(
        json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    for name in (INDEX_FILE, CHUNKS_FILE, MANIFEST_FILE):
        _fsync(folder / name)
    _fsync(folder)


def _read_manifest(folder: Path, version: str) -> Manifest:
    document = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    if document.get("format") != FORMAT:
        raise KnowledgeMisconfigured(
            f"{folder} has an unknown format; ingest the knowledge base again"
        )
    sources = {
        source: SourceEntry(entry["sha256"], tuple(entry["chunks"]))
        for source, entry in document["sources"].items()
    }
    return Manifest(
        document["embedder"],
        int(document["dimension"]),
        sources,
        version,
        link_base=document.get("link_base") or None,
    )


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class _FaissLoaded:
    vectors: FloatArray
    index: Any


class FaissRetriever(HybridRetriever):
    """Retriever over a FaissStore: indexes loaded once per process, reloaded on change."""

    def __init__(
        self,
        root: str | Path,
        embedder: Embedder,
        *,
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
        self.store = FaissStore(root)
        self._stamps: dict[str, tuple[tuple[int, int, int], str]] = {}

    @property
    def location(self) -> str:
        return f"the folder {self.store.root} (PARLEY_KNOWLEDGE_DIR)"

    async def knowledge_bases(self) -> list[str]:
        return await self.store.knowledge_bases()

    async def _versions(self, kbs: Sequence[str]) -> dict[str, str]:
        versions = {}
        for kb in kbs:
            stamp = self.store.stamp(kb)
            if stamp is None:
                continue
            known = self._stamps.get(kb)
            if known is not None and known[0] == stamp:
                versions[kb] = known[1]
                continue
            name = self.store.current(kb)
            if name is not None:
                self._stamps[kb] = (stamp, name)
                versions[kb] = name
        return versions

    async def _load(self, kb: str) -> Loaded:
        return await asyncio.to_thread(self._load_sync, kb)

    def _load_sync(self, kb: str) -> Loaded:
        generation = self.store.load(kb)
        if generation is None:
            raise KnowledgeError(f"knowledge base {kb!r} has no index")
        faiss = _faiss()
        index = faiss.IndexFlatIP(generation.manifest.dimension)
        if len(generation.vectors):
            index.add(generation.vectors)
        centroid = generation.vectors.mean(axis=0) if len(generation.vectors) else None
        return Loaded(
            kb=kb,
            version=generation.name,
            embedder=generation.manifest.embedder,
            dimension=generation.manifest.dimension,
            chunks=generation.chunks,
            lexical=build_lexical(generation.chunks),
            centroid=centroid,
            backend=_FaissLoaded(generation.vectors, index),
            link_base=generation.manifest.link_base,
        )

    async def _search_loaded(self, loaded: Loaded, query: Query) -> list[Passage]:
        return await asyncio.to_thread(self._search_sync, loaded, query)

    def _search_sync(self, loaded: Loaded, query: Query) -> list[Passage]:
        data = loaded.backend
        if not isinstance(data, _FaissLoaded) or not loaded.chunks:
            return []
        n = min(self.candidates(query.k), len(loaded.chunks))
        similarities, rows = data.index.search(query.vector.reshape(1, -1), n)
        cosine = {int(r): float(s) for r, s in zip(rows[0], similarities[0], strict=True) if r >= 0}
        lexical = self.lexical_scores(loaded, query)
        extra = [row for row in self.lexical_rows(lexical, n) if row not in cosine]
        if extra:
            for row, value in zip(extra, data.vectors[extra] @ query.vector, strict=True):
                cosine[row] = float(value)
        return self.rank(loaded, query, cosine, lexical)
