"""Unbounded consumption: message size and per-user / per-channel rates, shared by every
worker through Redis (one atomic counter per window)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from parley.settings import Settings

WINDOW_SECONDS = 60
# INCR the window's counter, set its expiry on first use; returns count and seconds left.
_HIT = """
local n = redis.call('incr', KEYS[1])
if n == 1 then redis.call('expire', KEYS[1], ARGV[1]) end
return {n, redis.call('ttl', KEYS[1])}
"""


@dataclass(frozen=True)
class Refusal:
    message: str  # friendly, says what to do
    reason: str  # for logs and metrics


def check_size(text: str, max_chars: int) -> Refusal | None:
    if len(text) <= max_chars:
        return None
    return Refusal(
        f":scissors: Your message is {len(text):,} characters long; I can read at most "
        f"{max_chars:,}. Please shorten it or split it into parts.",
        "too_long",
    )


class RateLimiter:
    def __init__(self, redis: Redis, *, per_user: int, per_channel: int) -> None:
        self._redis = redis
        self._per_user = per_user
        self._per_channel = per_channel

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> RateLimiter:
        return cls(
            redis,
            per_user=settings.rate_limit_user_per_minute,
            per_channel=settings.rate_limit_channel_per_minute,
        )

    async def check(self, platform: str, tenant: str, channel: str, user: str) -> Refusal | None:
        """Count this message; a limit of 0 is no limit."""
        if self._per_user:
            used, wait = await self._hit(f"parley:rate:user:{platform}:{tenant}:{user}")
            if used > self._per_user:
                return Refusal(
                    f":hourglass: You've asked {self._per_user} questions in the last minute. "
                    f"Please wait {wait} s and ask again.",
                    "user_rate",
                )
        if self._per_channel:
            used, wait = await self._hit(f"parley:rate:channel:{platform}:{tenant}:{channel}")
            if used > self._per_channel:
                return Refusal(
                    f":hourglass: This channel has asked me {self._per_channel} questions in "
                    f"the last minute. Please wait {wait} s and ask again.",
                    "channel_rate",
                )
        return None

    async def _hit(self, key: str) -> tuple[int, int]:
        used, ttl = await self._redis.eval(_HIT, 1, key, WINDOW_SECONDS)
        return int(used), max(1, int(ttl))
