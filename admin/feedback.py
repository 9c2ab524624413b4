"""Ratings of answers (👍/👎, Teams' feedback buttons) and per-channel usage counts.

When an answer is finished the worker records which question each of its messages answers
(`stage_answer`); a rating names the message, so it finds the question, the channel and
the thread. Each person has one rating per answer: the newest counts. Counts per channel
(answered, failed, tokens, good, bad) are plain aggregates that name nobody.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bots.base import Rating
from workers import keys

# KEYS: ratings, usage, user index. ARGV: user, new rating ('' withdraws), ttl, message
# key, the rating withdrawn (a withdrawal only removes the rating it names).
_RATE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if old ~= ARGV[5] then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[4])
  redis.call('HINCRBY', KEYS[2], old, -1)
  return 1
end
if old == ARGV[2] then return 0 end
if old then redis.call('HINCRBY', KEYS[2], old, -1) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
"""


@dataclass(frozen=True, slots=True)
class Usage:
    answered: int = 0
    failed: int = 0
    tokens: int = 0
    good: int = 0
    bad: int = 0


class FeedbackStore:
    """Implements bots.base.Feedback for the ingress; the worker stages answers."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl  # as long as the thread's memory: a rating outlives no transcript

    def stage_answer(
        self,
        pipe: Pipeline,
        *,
        platform: str,
        tenant: str,
        channel: str,
        message_ids: Iterable[str],
        message_key: str,
        model: str,
    ) -> None:
        for message_id in message_ids:
            key = keys.answer(platform, tenant, message_id)
            pipe.hset(key, mapping={"message_key": message_key, "channel": channel, "model": model})
            pipe.expire(key, self._ttl)

    @staticmethod
    def stage_outcome(
        pipe: Pipeline, platform: str, tenant: str, channel: str, outcome: str, tokens: int = 0
    ) -> None:
        key = keys.usage(platform, tenant, channel)
        pipe.hincrby(key, outcome, 1)
        if tokens:
            pipe.hincrby(key, "tokens", tokens)

    async def rate(
        self, platform: str, tenant: str, answer: str, user: str, rating: Rating
    ) -> bool:
        return await self._apply(platform, tenant, answer, user, rating, "")

    async def withdraw(
        self, platform: str, tenant: str, answer: str, user: str, rating: Rating
    ) -> bool:
        return await self._apply(platform, tenant, answer, user, "", rating)

    async def _apply(
        self, platform: str, tenant: str, answer: str, user: str, new: str, withdrawn: str
    ) -> bool:
        found = cast(
            dict[str, str],
            await self._redis.hgetall(keys.answer(platform, tenant, answer)),
        )
        fields = {_text(k): _text(v) for k, v in found.items()}
        message_key, channel = fields.get("message_key"), fields.get("channel")
        if not message_key or not channel:
            return False  # not an answer of Parley's, or its thread has expired
        changed = await self._redis.eval(
            _RATE,
            3,
            keys.ratings(message_key),
            keys.usage(platform, tenant, channel),
            keys.user_ratings(platform, tenant, user),
            user,
            new,
            self._ttl,
            message_key,
            withdrawn,
        )
        return bool(changed)

    async def ratings(self, message_key: str) -> Counter[str]:
        """How many people rated the answer to `message_key` good and bad."""
        raw = await self._redis.hvals(keys.ratings(message_key))
        return Counter(_text(v) for v in raw)

    async def usage(self, platform: str, tenant: str, channel: str) -> Usage:
        raw = await self._redis.hgetall(keys.usage(platform, tenant, channel))
        counts = {_text(k): int(v) for k, v in raw.items()}
        return Usage(
            answered=counts.get("answered", 0),
            failed=counts.get("failed", 0),
            tokens=counts.get("tokens", 0),
            good=max(0, counts.get("good", 0)),
            bad=max(0, counts.get("bad", 0)),
        )

    async def forget_user(self, platform: str, tenant: str, user: str) -> int:
        """Remove the person's ratings (the channel's totals stay: they name nobody)."""
        index = keys.user_ratings(platform, tenant, user)
        rated = await self._redis.smembers(index)
        async with self._redis.pipeline(transaction=True) as pipe:
            for message_key in rated:
                pipe.hdel(keys.ratings(_text(message_key)), user)
            pipe.delete(index)
            await pipe.execute()
        return len(rated)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
