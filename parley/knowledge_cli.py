"""`parley ingest <folder> --kb <name>`: load a folder of documents into a knowledge base.

Exit status: 0 when at least one file was read (skipped files are reported, not fatal);
1 when not a single file could be read (the knowledge base is then left as it was);
2 for a configuration error; 3 when the store or the embeddings server cannot be reached;
4 when the store cannot be read or written (a read-only or full volume, a database that
refuses it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from parley.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from knowledge.ingest import IngestReport, Progress
    from parley.settings import Settings

COMMAND = "ingest"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = commands.add_parser(
        COMMAND,
        help="load Markdown, text, HTML and PDF files of a folder into a knowledge base",
    )
    ingest.add_argument("folder", type=Path, help="the folder to read (recursively)")
    ingest.add_argument("--kb", required=True, help="the knowledge base's name, e.g. hr-policies")
    ingest.add_argument(
        "--link-base",
        metavar="URL",
        help="the web address the folder is published at (an intranet, a wiki export), e.g. "
        "https://intranet.acme.example/hr/: answers then link their sources; kept until given "
        "again; '' removes it",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    from knowledge.base import EmbeddingError, KnowledgeError, StoreUnavailable, check_kb_name
    from knowledge.factory import create_embedder, create_store, ingest_threads
    from knowledge.ingest import StoreError, ingest_folder
    from knowledge.store import ConcurrentIngest
    from parley.logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    # The report names every skipped file and why; the libraries' own chatter adds nothing.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    database_error, connection_lost = _database_errors(settings)
    try:
        check_kb_name(args.kb)
        if not args.folder.is_dir():
            print(f"parley: {args.folder} is not a folder", file=sys.stderr)
            return 1
        embedder = create_embedder(settings, threads=ingest_threads())
        store = create_store(settings)
        bar = ProgressBar(sys.stderr, enabled=not args.quiet)
        try:
            report = asyncio.run(
                ingest_folder(
                    args.folder,
                    args.kb,
                    store=store,
                    embedder=embedder,
                    chunk_tokens=settings.knowledge_chunk_tokens,
                    chunk_overlap=settings.knowledge_chunk_overlap,
                    progress=bar,
                    link_base=args.link_base,
                )
            )
        finally:
            bar.finish()  # an error message then starts a line of its own
    except (EmbeddingError, StoreUnavailable, ConcurrentIngest) as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 3
    except StoreError as exc:
        where = "the store's volume"
        if settings.knowledge_store == "faiss":
            where = f"PARLEY_KNOWLEDGE_DIR ({settings.knowledge_dir})"
        hint = f"check {where}: a folder this user can write, with free space"
        print(f"parley: {exc}; {hint}", file=sys.stderr)
        return 4
    except database_error as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first_line}"
        if connection_lost(exc):
            print(f"parley: the connection to PostgreSQL failed ({reason})", file=sys.stderr)
            return 3
        print(
            f"parley: PostgreSQL refused the ingest ({reason}); check that the user of "
            "PARLEY_KNOWLEDGE_DATABASE_URL may write its tables and that the server has room",
            file=sys.stderr,
        )
        return 4
    except KnowledgeError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parley: interrupted; the knowledge base is unchanged", file=sys.stderr)
        return 130
    print_report(report, args.folder, sys.stdout)
    return 1 if report.nothing_read else 0


def _database_errors(
    settings: Settings,
) -> tuple[tuple[type[Exception], ...], Callable[[Exception], bool]]:
    """(psycopg's errors, which of them mean a lost connection) where the store is
    PostgreSQL; the store wraps only failures to connect, not those of a statement."""
    if settings.knowledge_store != "pgvector":
        return (), lambda exc: False
    try:
        import psycopg
    except ImportError:  # the store says so when it connects
        return (), lambda exc: False

    def connection_lost(exc: Exception) -> bool:
        state = getattr(exc, "sqlstate", None) or ""
        # No SQLSTATE: the client lost the server; 08: connection; 57P: server shut down.
        return isinstance(exc, psycopg.OperationalError) and (
            not state or state.startswith(("08", "57P"))
        )

    return (psycopg.Error,), connection_lost


def print_report(report: IngestReport, folder: Path, out: TextIO) -> None:
    def names(items: list[str]) -> str:
        return ", ".join(items[:20]) + (f" and {len(items) - 20} more" if len(items) > 20 else "")

    print(
        f"{report.kb}: {report.files_read} files read ({len(report.added)} added, "
        f"{len(report.updated)} updated, {len(report.unchanged)} unchanged), "
        f"{len(report.removed)} removed, {len(report.skipped)} skipped",
        file=out,
    )
    if report.nothing_read:
        print(f"Nothing could be read from {folder}; the knowledge base is unchanged.", file=out)
    else:
        print(
            f"  chunks: {report.chunks_added} added, {report.chunks_removed} removed, "
            f"{report.chunks_total} in the knowledge base",
            file=out,
        )
    for label, items in (
        ("added", report.added),
        ("updated", report.updated),
        ("removed", report.removed),
    ):
        if items:
            print(f"  {label}: {names(items)}", file=out)
    for skipped in report.skipped:
        kept = "; the earlier version stays indexed" if skipped.kept_previous else ""
        print(f"  skipped {skipped.source}: {skipped.reason}{kept}", file=out)
    if report.link_base:
        print(f"  sources link to {report.link_base}", file=out)
    state = "committed" if report.committed else "no change to commit"
    print(f"  {state}; version {report.version or '-'}; {report.seconds:.1f} s", file=out)


class ProgressBar:
    """One line redrawn in place on a terminal; stage changes only, otherwise (CI logs)."""

    WIDTH = 30
    LABELS = {"reading": "reading  ", "embedding": "embedding", "writing": "writing  "}

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self._stage = ""
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        if not self.enabled or progress.stage == "done":
            return
        label = self.LABELS[progress.stage]
        if not self.tty:
            if progress.stage != self._stage:
                self._stage = progress.stage
                print(f"{label.strip()} ({progress.total})", file=self.stream, flush=True)
            return
        if progress.stage != self._stage and self._drawn:
            self.stream.write("\n")
        self._stage = progress.stage
        filled = self.WIDTH * progress.done // progress.total if progress.total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        item = progress.item[-40:]
        self.stream.write(f"\r{label} [{bar}] {progress.done}/{progress.total} {item:<40}")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
