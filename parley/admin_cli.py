"""`parley audit` and `parley export`: the admin log and the transcripts, for operators."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.settings import Settings

COMMANDS = ("audit", "export")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="print the audit log of admin actions (a table, or JSONL with --jsonl)"
    )
    audit.add_argument("--channel", help="only this channel id")
    audit.add_argument(
        "--since", type=_timestamp, help="only entries from this time on (ISO 8601, UTC)"
    )
    audit.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    audit.add_argument("--out", type=Path, help="write to this file instead of the terminal")

    export = commands.add_parser(
        "export", help="write redacted transcripts with their ratings as JSONL for fine-tuning"
    )
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    export.add_argument(
        "--format",
        choices=("sft", "kto"),
        default="sft",
        help="sft: chat messages per answer (Axolotl, TRL SFT); kto: prompt/completion/label "
        "of rated answers (TRL KTO). Default: sft",
    )
    export.add_argument(
        "--include-bad", action="store_true", help="sft: keep answers people rated bad"
    )
    export.add_argument("--platform", choices=("slack", "teams", "console"), help="only this")
    export.add_argument("--channel", help="only this channel id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.command == "audit":
            return asyncio.run(_audit(args, settings))
        return asyncio.run(_export(args, settings))
    except RedisError as exc:
        print(
            f"parley: Redis at {settings.redis_url} is not reachable ({exc}). Start it or set "
            "PARLEY_REDIS_URL.",
            file=sys.stderr,
        )
        return 3


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from admin.audit import AuditLog

    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        log = AuditLog(redis, max_entries=settings.audit_max_entries)
        with _output(args.out) as out:
            if not args.jsonl:
                out.write(f"{'when (UTC)':24} {'who':14} {'channel':14} {'outcome':8} action\n")
            count = 0
            async for entry in log.entries(since=args.since, channel=args.channel):
                count += 1
                if args.jsonl:
                    out.write(entry.to_json() + "\n")
                    continue
                change = f": {_short(entry.old)} -> {_short(entry.new)}" if entry.new else ""
                why = f" ({entry.detail})" if entry.detail and entry.outcome != "done" else ""
                out.write(
                    f"{entry.at[:23]:24} {entry.actor:14} {entry.channel:14} "
                    f"{entry.outcome:8} {entry.action}{change}{why}\n"
                )
        if args.out:
            print(f"wrote {count} audit entries to {args.out}", file=sys.stderr)
        return 0
    finally:
        await redis.aclose()


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from admin.export import ExportOptions, TranscriptExporter

    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        exporter = TranscriptExporter(redis, settings)
        options = ExportOptions(
            format=args.format,
            include_bad=args.include_bad,
            platform=args.platform,
            channel=args.channel,
        )
        with _output(args.out) as out:
            report = await exporter.export(out, options)
    finally:
        await redis.aclose()
    print(
        f"wrote {report.records} records from {report.threads} threads to {args.out}"
        + (f"; left out {report.skipped_bad} answers rated bad" if report.skipped_bad else "")
        + (
            f"; {report.unreadable} threads could not be opened (another PARLEY_ENCRYPTION_KEY?)"
            if report.unreadable
            else ""
        ),
        file=sys.stderr,
    )
    return 0


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    # Written beside and renamed at the end: an interrupted export leaves no half file.
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        yield out
    partial.replace(path)


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time; write e.g. 2026-11-01 or 2026-11-01T09:30"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _short(value: str) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= 40 else value[:37] + "..."
