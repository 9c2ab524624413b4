"""How an answer travels from the worker to the terminal: a Redis stream per chat session,
each event sealed (answers may hold the personal values people wrote) and the stream
expiring soon after the last event."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast

from redis.asyncio import Redis

from privacy.crypto import Sealer

PLATFORM = "console"
TENANT = "local"
CHANNEL = "console"
STREAM_TTL_SECONDS = 3600

Op = Literal["open", "append", "replace", "final", "fail"]


def stream_key(session: str) -> str:
    return f"parley:console:{session}"


@dataclass(frozen=True, slots=True)
class Event:
    # open: a worker took the question; append: text extends what is shown; replace: show
    # text instead; final/fail: done
    op: Op
    text: str
    message_id: str


class Transport:
    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self._redis = redis
        self._sealer = sealer

    async def send(self, session: str, event: Event) -> None:
        key = stream_key(session)
        body = json.dumps({"op": event.op, "text": event.text, "id": event.message_id})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"event": self._sealer.seal(body, context=key)})
            pipe.expire(key, STREAM_TTL_SECONDS)
            await pipe.execute()

    async def receive(self, session: str, after: str, *, block_ms: int) -> list[tuple[str, Event]]:
        """Events after stream id `after` (waiting up to block_ms for the first)."""
        key = stream_key(session)
        found = cast(
            list[tuple[str, list[tuple[str | bytes, dict[str | bytes, str | bytes]]]]] | None,
            await self._redis.xread({key: after}, block=block_ms, count=100),
        )
        events: list[tuple[str, Event]] = []
        for _, entries in found or []:
            for stream_id, raw in entries:
                token = raw.get("event") or raw.get(b"event") or ""
                token = token.decode() if isinstance(token, bytes) else token
                data = json.loads(self._sealer.open(token, context=key))
                sid = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
                events.append((sid, Event(data["op"], data["text"], data["id"])))
        return events

    async def close(self, session: str) -> None:
        await self._redis.delete(stream_key(session))
