"""Per-thread conversation memory: one Redis list per thread, with a sliding TTL.

Each turn stores its token count, measured once, so budgeting a prompt never re-tokenizes
the history.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from llm.base import Role
from workers import keys


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str
    tokens: int
    message_key: str


class ThreadMemory:
    def __init__(self, redis: Redis, *, ttl: int, max_turns: int) -> None:
        self._redis = redis
        self._ttl = ttl
        self._max_turns = max_turns

    async def load(self, thread_key: str) -> list[Turn]:
        raw = await self._redis.lrange(keys.memory(thread_key), 0, -1)
        return [Turn(**json.loads(item)) for item in raw]

    def stage_append(self, pipe: Pipeline, thread_key: str, turns: list[Turn]) -> None:
        """Add the turns to a transaction; trim to the newest turns and refresh the TTL."""
        key = keys.memory(thread_key)
        pipe.rpush(key, *[json.dumps(asdict(turn)) for turn in turns])
        pipe.ltrim(key, -self._max_turns, -1)
        pipe.expire(key, self._ttl)

    async def forget(self, thread_key: str) -> None:
        await self._redis.delete(keys.memory(thread_key))
