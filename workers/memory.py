"""Per-thread conversation memory: one Redis list per thread, with a sliding TTL.

Turns hold redacted text only (placeholders, never the values) and are still sealed at
rest, bound to their thread. Each turn stores its token count, measured once, so budgeting a
prompt never re-tokenizes the history.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from llm.base import Role
from privacy.crypto import Sealer
from workers import keys


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str
    tokens: int
    message_key: str
    user: str | None = None  # who wrote a user turn; lets one person's turns be erased
    model: str | None = None  # which model wrote an assistant turn (kept with exports)


class ThreadMemory:
    def __init__(self, redis: Redis, sealer: Sealer, *, ttl: int, max_turns: int) -> None:
        self._redis = redis
        self._sealer = sealer
        self._ttl = ttl
        self._max_turns = max_turns

    async def load(self, thread_key: str) -> list[Turn]:
        raw = await self._redis.lrange(keys.memory(thread_key), 0, -1)
        return [self._open(thread_key, item) for item in raw]

    def stage_append(self, pipe: Pipeline, thread_key: str, turns: list[Turn]) -> None:
        """Add the turns to a transaction; trim to the newest turns and refresh the TTL."""
        key = keys.memory(thread_key)
        pipe.rpush(key, *[self._seal(thread_key, turn) for turn in turns])
        pipe.ltrim(key, -self._max_turns, -1)
        pipe.expire(key, self._ttl)

    async def forget(self, thread_key: str) -> None:
        await self._redis.delete(keys.memory(thread_key))

    async def forget_user(self, thread_key: str, user: str) -> int:
        """Drop the user's turns and the answers to them; returns how many turns went."""
        key = keys.memory(thread_key)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    turns = [self._open(thread_key, item) for item in await pipe.lrange(key, 0, -1)]
                    theirs = {t.message_key for t in turns if t.user == user}
                    kept = [t for t in turns if t.message_key not in theirs]
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.delete(key)
                    if kept:
                        pipe.rpush(key, *[self._seal(thread_key, t) for t in kept])
                        pipe.expire(key, self._ttl)
                    await pipe.execute()
                    return len(turns) - len(kept)
                except WatchError:
                    continue

    def _seal(self, thread_key: str, turn: Turn) -> str:
        return self._sealer.seal(json.dumps(asdict(turn)), context=thread_key)

    def _open(self, thread_key: str, item: str | bytes) -> Turn:
        token = item if isinstance(item, str) else item.decode()
        return Turn(**json.loads(self._sealer.open(token, context=thread_key)))
