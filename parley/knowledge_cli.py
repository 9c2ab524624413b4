"""`parley ingest <folder> --kb <name>`: load a folder of documents into a knowledge base.

Exit status: 0 when at least one file was read (skipped files are reported, not fatal);
1 when not a single file could be read (the knowledge base is then left as it was);
2 for a configuration error; 3 when the store or the embeddings server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from parley.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from knowledge.ingest import IngestReport, Progress

COMMAND = "ingest"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = commands.add_parser(
        COMMAND,
        help="load Markdown, text, HTML and PDF files of a folder into a knowledge base",
    )
    ingest.add_argument("folder", type=Path, help="the folder to read (recursively)")
    ingest.add_argument("--kb", required=True, help="the knowledge base's name, e.g. hr-policies")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    from knowledge.base import EmbeddingError, KnowledgeError, StoreUnavailable, check_kb_name
    from knowledge.factory import create_embedder, create_store, ingest_threads
    from knowledge.ingest import ingest_folder
    from knowledge.store import ConcurrentIngest
    from parley.logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    # The report names every skipped file and why; the libraries' own chatter adds nothing.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        check_kb_name(args.kb)
        if not args.folder.is_dir():
            print(f"parley: {args.folder} is not a folder", file=sys.stderr)
            return 1
        embedder = create_embedder(settings, threads=ingest_threads())
        store = create_store(settings)
        bar = ProgressBar(sys.stderr, enabled=not args.quiet)
        report = asyncio.run(
            ingest_folder(
                args.folder,
                args.kb,
                store=store,
                embedder=embedder,
                chunk_tokens=settings.knowledge_chunk_tokens,
                chunk_overlap=settings.knowledge_chunk_overlap,
                progress=bar,
            )
        )
        bar.finish()
    except (EmbeddingError, StoreUnavailable, ConcurrentIngest) as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 3
    except KnowledgeError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parley: interrupted; the knowledge base is unchanged", file=sys.stderr)
        return 130
    print_report(report, args.folder, sys.stdout)
    return 1 if report.nothing_read else 0


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
