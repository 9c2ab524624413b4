"""Ingest a folder of documents into a named knowledge base.

Every Markdown, text, HTML and PDF file under the folder (hidden files and folders aside) is
hashed; a file whose SHA-256 matches the manifest is left as it is, without reading or
embedding it again. New and changed files are parsed, chunked and embedded; sources that
left the folder are removed. A file that cannot be read (broken PDF, not UTF-8, empty, too
large, a name that is not UTF-8) is reported and skipped, and what was indexed from an
earlier version of it stays; so do the sources of a subfolder that cannot be listed.
Everything is committed in one atomic step at the end (knowledge.store), so a failing ingest
changes nothing. When not a single file can be read, nothing is committed: an empty or
unmounted folder never wipes a knowledge base.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from knowledge.base import Embedder, KnowledgeError, check_kb_name, check_link_base
from knowledge.chunking import chunk_sections, indexed_text
from knowledge.documents import (
    MAX_FILE_BYTES,
    SUFFIXES,
    UnreadableFile,
    check_size,
    is_supported,
    parse_document,
)
from knowledge.embeddings import TEI_PREFIX
from knowledge.store import Change, KnowledgeStore, Manifest, SourceEntry, StoredChunk

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_CHUNK_OVERLAP = 40
EMBED_BATCH = 64


class StoreError(KnowledgeError):
    """The store's files cannot be read or written (a read-only or full volume)."""


@dataclass(frozen=True, slots=True)
class Progress:
    stage: Literal["reading", "embedding", "writing", "done"]
    done: int
    total: int
    item: str = ""  # the file being read


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class Skipped:
    source: str
    reason: str
    kept_previous: bool = False  # an earlier version of it stays in the index


@dataclass(slots=True)
class IngestReport:
    kb: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    version: str | None = None  # after the ingest; None when nothing was ever committed
    link_base: str | None = None  # where the sources are published, after the ingest
    committed: bool = False
    seconds: float = 0.0

    @property
    def files_read(self) -> int:
        return len(self.added) + len(self.updated) + len(self.unchanged)

    @property
    def nothing_read(self) -> bool:
        return self.files_read == 0


@dataclass(frozen=True, slots=True)
class _Parsed:
    source: str
    sha256: str
    chunks: list[StoredChunk]


def embedder_id(embedder: Embedder) -> str:
    """What the manifest records about the model that made its vectors."""
    model_id = getattr(embedder, "model_id", None)
    return model_id if isinstance(model_id, str) else type(embedder).__name__


async def identify(embedder: Embedder) -> None:
    """Let an embedder that learns its model_id from a server (TEI) learn it now."""
    ask = getattr(embedder, "identify", None)
    if ask is not None:
        await ask()


def same_embedder(built_with: str, dimension: int, embedder: Embedder) -> bool:
    """Whether vectors that `built_with` made (a manifest's embedder and dimension) can be
    searched with `embedder`'s. Vectors of two models are not comparable, even of one size. A
    TEI server is known by the model it serves (knowledge.embeddings.TeiEmbedder.identify);
    where either side knows only the server's URL (which may differ between the ingest and
    the workers), only the size is checked."""
    configured = embedder_id(embedder)
    same_model = built_with == configured or (
        built_with.startswith(TEI_PREFIX)
        and configured.startswith(TEI_PREFIX)
        and (_tei_url(built_with) or _tei_url(configured))
    )
    return same_model and dimension == embedder.dimension


def _tei_url(model_id: str) -> bool:
    return model_id.removeprefix(TEI_PREFIX).startswith(("http://", "https://"))


def chunk_id(source: str, position: int, text: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{source}\0{position}\0{text}".encode())
    return digest.hexdigest()


def list_files(folder: Path) -> tuple[list[Path], list[Path], list[OSError]]:
    """(supported files, other files, errors listing folders) under folder, files sorted;
    hidden entries are left out."""
    supported: list[Path] = []
    others: list[Path] = []
    errors: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=errors.append):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            (supported if is_supported(path) else others).append(path)
    by_name = lambda path: path.relative_to(folder).as_posix()  # noqa: E731
    return sorted(supported, key=by_name), sorted(others, key=by_name), errors


def read_source(
    path: Path, source: str, *, max_tokens: int, overlap: int
) -> tuple[str, list[StoredChunk]]:
    """(sha256 of the bytes, chunks); raise UnreadableFile."""
    try:
        with open(path, "rb") as handle:
            check_size(os.fstat(handle.fileno()).st_size)
            data = handle.read(MAX_FILE_BYTES + 1)  # never more, should it grow meanwhile
    except OSError as exc:
        raise UnreadableFile(f"cannot be read ({exc.strerror or exc})") from None
    check_size(len(data))
    sha = hashlib.sha256(data).hexdigest()
    document = parse_document(data, SUFFIXES[path.suffix.lower()], fallback_title=path.stem)
    chunks = chunk_sections(document.sections, max_tokens=max_tokens, overlap=overlap)
    if not chunks:
        raise UnreadableFile("no text in it")
    return sha, [
        StoredChunk(
            chunk_id=chunk_id(source, position, chunk.text),
            source=source,
            position=position,
            title=document.title,
            section=chunk.section,
            text=chunk.text,
        )
        for position, chunk in enumerate(chunks)
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        check_size(os.fstat(data.fileno()).st_size)
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def ingest_folder(
    folder: str | Path,
    kb: str,
    *,
    store: KnowledgeStore,
    embedder: Embedder,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    progress: ProgressCallback | None = None,
    link_base: str | None = None,
) -> IngestReport:
    """link_base: the web address the folder is published at, so that sources become links
    (knowledge.base.source_link); "" removes it; None keeps the knowledge base's own."""
    started = time.perf_counter()
    check_kb_name(kb)
    if link_base is not None:
        link_base = check_link_base(link_base)
    root = Path(folder)
    if not await asyncio.to_thread(root.is_dir):
        raise KnowledgeError(f"{root} is not a folder")
    report = IngestReport(kb)

    def tell(stage: Literal["reading", "embedding", "writing", "done"], done: int, total: int,
             item: str = "") -> None:  # fmt: skip
        if progress is not None:
            progress(Progress(stage, done, total, item))

    try:
        previous = await store.manifest(kb)
    except OSError as exc:
        raise StoreError(f"cannot read knowledge base {kb!r} ({_os_reason(exc)})") from exc
    await identify(embedder)
    model = embedder_id(embedder)
    # Vectors of another model cannot be mixed with this one's: embed everything again.
    reembed = previous is not None and not same_embedder(
        previous.embedder, previous.dimension, embedder
    )
    old_sources = dict(previous.sources) if previous is not None else {}

    files, others, errors = await asyncio.to_thread(list_files, root)
    for path in others:
        suffix = path.suffix or "(none)"
        report.skipped.append(Skipped(_printable(path, root), f"unsupported file type {suffix}"))

    sources: dict[str, SourceEntry] = {}
    parsed: list[_Parsed] = []
    seen: set[str] = set()
    for done, path in enumerate(files):
        source = _relative(path, root)
        tell("reading", done, len(files), _printable(path, root))
        if not _is_utf8(source):  # could not be stored, and no manifest can hold it
            reason = "its name is not valid UTF-8: rename it"
            report.skipped.append(Skipped(_printable(path, root), reason))
            continue
        seen.add(source)
        old = old_sources.get(source)
        try:
            if old is not None and not reembed:
                sha = await asyncio.to_thread(_sha256, path)
                if sha == old.sha256:
                    sources[source] = old
                    report.unchanged.append(source)
                    continue
            sha, chunks = await asyncio.to_thread(
                read_source, path, source, max_tokens=chunk_tokens, overlap=chunk_overlap
            )
        except (UnreadableFile, OSError) as exc:
            reason = str(exc) if isinstance(exc, UnreadableFile) else f"cannot be read ({exc})"
            keep = old is not None and not reembed
            report.skipped.append(Skipped(source, reason, kept_previous=keep))
            if keep and old is not None:
                sources[source] = old
            elif old is not None:
                report.removed.append(source)
            continue
        parsed.append(_Parsed(source, sha, chunks))
        sources[source] = SourceEntry(sha, tuple(c.chunk_id for c in chunks))
        (report.added if old is None else report.updated).append(source)
    tell("reading", len(files), len(files))

    unlisted = _unlisted_folders(errors, root)
    for source in sorted(set(old_sources) - seen):
        why = next((why for folder, why in unlisted if _is_under(source, folder)), None)
        if why is None:
            report.removed.append(source)  # it left the folder
            continue
        # Unseen, not gone: a listing error must not delete what was indexed.
        report.skipped.append(Skipped(source, why, kept_previous=not reembed))
        if reembed:
            report.removed.append(source)
        else:
            sources[source] = old_sources[source]
    for folder, why in unlisted:
        if not any(_is_under(source, folder) for source in old_sources):
            report.skipped.append(Skipped(f"{_shown(folder or '.')}/", why))
    report.removed.sort()
    if report.nothing_read:
        # Keep whatever is indexed: the folder is empty, unmounted or all unreadable.
        report.version = previous.version if previous is not None else None
        report.removed = []
        report.chunks_total = sum(len(e.chunk_ids) for e in old_sources.values())
        report.seconds = time.perf_counter() - started
        tell("done", 1, 1)
        return report

    new_chunks = [chunk for item in parsed for chunk in item.chunks]
    vectors: list[Sequence[float]] = []
    tell("embedding", 0, len(new_chunks))
    for start in range(0, len(new_chunks), EMBED_BATCH):
        batch = new_chunks[start : start + EMBED_BATCH]
        texts = [indexed_text(c.title, c.section, c.text) for c in batch]
        batch_vectors = await embedder.embed(texts)
        if len(batch_vectors) != len(batch):
            raise KnowledgeError(
                f"the embedder returned {len(batch_vectors)} vectors for {len(batch)} texts"
            )
        vectors.extend(batch_vectors)
        tell("embedding", start + len(batch), len(new_chunks))

    # With `reembed`, every readable source is in `updated` and every other one in `removed`.
    replaced = frozenset({*report.updated, *report.added, *report.removed})
    report.chunks_added = len(new_chunks)
    report.chunks_removed = sum(len(old_sources[s].chunk_ids) for s in replaced if s in old_sources)
    report.chunks_total = sum(len(entry.chunk_ids) for entry in sources.values())
    if link_base is None:  # not given: the knowledge base's own
        link_base = previous.link_base if previous is not None else None
    link_base = link_base or None  # "": removed
    relinked = previous is not None and link_base != previous.link_base
    report.link_base = link_base
    manifest = Manifest(model, embedder.dimension, sources, link_base=link_base)
    if previous is not None and not replaced and not relinked:
        report.version = previous.version
    else:
        tell("writing", 0, 1)
        change = Change(
            manifest=manifest,
            replaced=replaced,
            added=list(zip(new_chunks, vectors, strict=True)),
            base_version=previous.version if previous is not None else None,
        )
        try:
            report.version = await store.commit(kb, change)
        except OSError as exc:
            raise StoreError(f"cannot write knowledge base {kb!r} ({_os_reason(exc)})") from exc
        report.committed = True
        tell("writing", 1, 1)
    report.seconds = time.perf_counter() - started
    tell("done", 1, 1)
    return report


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _is_utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str) -> str:
    """The name to print: its bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _printable(path: Path, root: Path) -> str:
    return _shown(_relative(path, root))


def _unlisted_folders(errors: list[OSError], root: Path) -> list[tuple[str, str]]:
    """(folder relative to root, "" for root itself; why) for each folder os.walk could not
    list."""
    unlisted = []
    for exc in errors:
        folder = Path(exc.filename) if exc.filename is not None else root
        name = _relative(folder, root) if folder.is_relative_to(root) else ""
        name = "" if name == "." else name
        why = f"folder {_shown(name or '.')} could not be listed ({exc.strerror or exc})"
        unlisted.append((name, why))
    return unlisted


def _is_under(source: str, folder: str) -> bool:
    return not folder or source.startswith(folder + "/")


def _os_reason(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {os.fsdecode(exc.filename)}"
    return exc.strerror or str(exc)
