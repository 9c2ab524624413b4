"""Unbounded consumption (OWASP LLM10): message size, and per-user / per-channel rates.

Rates are sliding windows kept in Redis, shared by every worker process: one sorted set per
user and per channel holding the times of the messages admitted in the last window. One Lua
script checks every window and admits into all of them or none, atomically, on the Redis
server's clock, so concurrent workers (and their skewed clocks) can never admit more than the
limit. Refused messages are not recorded: someone who keeps asking while limited is not
locked out for longer. Keys hold platform ids only and expire with their window.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from guardrails.policy import Scope, rate_limited_message, too_long_message
from parley.settings import Settings

PREFIX = "parley:rate"
WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """A message longer than max_message_chars."""

    length: int
    limit: int

    @property
    def reason(self) -> str:
        return "too_long"

    @property
    def message(self) -> str:
        return too_long_message(self.length, self.limit)


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The limit of `scope` is used up; `retry_after` seconds until a slot frees."""

    scope: Scope
    limit: int
    window_seconds: float
    retry_after: float

    @property
    def reason(self) -> str:
        return f"{self.scope}_rate"

    @property
    def message(self) -> str:
        return rate_limited_message(
            scope=self.scope,
            count=self.limit,
            window_seconds=self.window_seconds,
            retry_after=self.retry_after,
        )


def check_size(text: str, max_chars: int) -> LimitExceeded | None:
    if len(text) <= max_chars:
        return None
    return LimitExceeded(len(text), max_chars)


def user_key(platform: str, tenant: str, user: str) -> str:
    return f"{PREFIX}:user:{platform}:{tenant}:{user}"


def channel_key(platform: str, tenant: str, channel: str) -> str:
    return f"{PREFIX}:channel:{platform}:{tenant}:{channel}"


# KEYS: the windows; ARGV[1]: window in ms, ARGV[2]: a unique member, ARGV[2+i]: limit of
# KEYS[i]. Returns {0, 0} when admitted, else {i, ms until KEYS[i] has room} for the window
# that frees last (waiting for it frees them all).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local full, wait = 0, 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local used = redis.call('ZCARD', key)
  if used >= limit then
    local oldest = redis.call('ZRANGE', key, used - limit, used - limit, 'WITHSCORES')
    local left = tonumber(oldest[2]) + window - now
    if full == 0 or left > wait then full, wait = i, left end
  end
end
if full > 0 then return {full, wait} end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, window)
end
return {0, 0}
"""


class RateLimiter:
    """Per-user and per-channel message rates; a limit of 0 turns that limit off.

    The user and channel keys go into one script, so on Redis Cluster they would have to
    share a hash slot; Parley uses a single Redis.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        per_user: int,
        per_channel: int,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        if per_user < 0 or per_channel < 0:
            raise ValueError("rate limits must be >= 0 (0 turns a limit off)")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        self._per_user = per_user
        self._per_channel = per_channel
        self._window = window_seconds
        self._admit = redis.register_script(_ADMIT)

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> RateLimiter:
        return cls(
            redis,
            per_user=settings.rate_limit_user_per_minute,
            per_channel=settings.rate_limit_channel_per_minute,
        )

    async def check(
        self, platform: str, tenant: str, channel: str, user: str
    ) -> RateLimited | None:
        """Count one message from `user` in `channel`, or say why it must wait."""
        windows: list[tuple[Scope, str, int]] = []
        if self._per_user:
            windows.append(("user", user_key(platform, tenant, user), self._per_user))
        if self._per_channel:
            windows.append(("channel", channel_key(platform, tenant, channel), self._per_channel))
        if not windows:
            return None
        args: list[str | int] = [round(self._window * 1000), uuid.uuid4().hex]
        args += [limit for _, _, limit in windows]
        result: Any = await self._admit(keys=[key for _, key, _ in windows], args=args)
        full, wait_ms = int(result[0]), int(result[1])
        if full == 0:
            return None
        scope, _, limit = windows[full - 1]
        return RateLimited(scope, limit, self._window, max(wait_ms, 1) / 1000)
