"""The audit log: every admin action and every refused attempt, append-only and bounded.

A Redis stream capped at about PARLEY_AUDIT_MAX_ENTRIES (approximate trimming keeps XADD
O(1)); entries are never edited. `parley audit` reads it back as a table or JSONL.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from redis.asyncio import Redis

from workers import keys

Outcome = Literal["done", "refused", "invalid", "failed"]

# Stands in for the person after "forget me": the log keeps that an erasure happened,
# not who asked for it.
ERASED_USER = "(erased)"
_PAGE = 500


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: str  # ISO 8601, UTC
    platform: str
    tenant: str
    channel: str
    actor: str
    action: str  # the command as typed, e.g. "set temperature"
    outcome: Outcome
    old: str = ""
    new: str = ""
    detail: str = ""  # why it was refused or invalid
    id: str = ""  # the stream id, once stored

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class AuditLog:
    def __init__(self, redis: Redis, *, max_entries: int) -> None:
        self._redis = redis
        self._max_entries = max_entries

    async def record(
        self,
        *,
        platform: str,
        tenant: str,
        channel: str,
        actor: str,
        action: str,
        outcome: Outcome,
        old: str | None = None,
        new: str | None = None,
        detail: str = "",
    ) -> None:
        entry = AuditEntry(
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            platform=platform,
            tenant=tenant,
            channel=channel,
            actor=actor,
            action=action,
            outcome=outcome,
            old=old or "",
            new=new or "",
            detail=detail,
        )
        fields = {k: v for k, v in asdict(entry).items() if k != "id"}
        await self._redis.xadd(
            keys.AUDIT,
            fields,  # type: ignore[arg-type]
            maxlen=self._max_entries,
            approximate=True,
        )

    async def entries(
        self, *, since: datetime | None = None, channel: str | None = None
    ) -> AsyncIterator[AuditEntry]:
        """Oldest first, read in pages so that a large log never sits in memory at once."""
        start = f"{int(since.timestamp() * 1000)}-0" if since else "-"
        while True:
            page = cast(
                list[tuple[str | bytes, Mapping[str | bytes, str | bytes]]],
                await self._redis.xrange(keys.AUDIT, min=start, max="+", count=_PAGE),
            )
            for stream_id, fields in page:
                entry = _entry(_text(stream_id), fields)
                if channel is None or entry.channel == channel:
                    yield entry
            if len(page) < _PAGE:
                return
            start = "(" + _text(page[-1][0])

    async def length(self) -> int:
        return int(await self._redis.xlen(keys.AUDIT))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(stream_id: str, raw: Mapping[str | bytes, str | bytes]) -> AuditEntry:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    outcome = fields.get("outcome", "done")
    return AuditEntry(
        at=fields.get("at") or _time_of(stream_id),
        platform=fields.get("platform", ""),
        tenant=fields.get("tenant", ""),
        channel=fields.get("channel", ""),
        actor=fields.get("actor", ""),
        action=fields.get("action", ""),
        outcome=cast(Outcome, outcome),
        old=fields.get("old", ""),
        new=fields.get("new", ""),
        detail=fields.get("detail", ""),
        id=stream_id,
    )


def _time_of(stream_id: str) -> str:
    millis = int(stream_id.partition("-")[0] or time.time() * 1000)
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
