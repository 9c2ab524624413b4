from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from guardrails.limits import RateLimiter, check_size


def test_size_limit_says_the_limit() -> None:
    assert check_size("short", 10) is None
    refusal = check_size("x" * 11, 10)
    assert refusal is not None
    assert "at most 10" in refusal.message


async def test_users_are_limited_independently(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=3, per_channel=0)
    results = [await limiter.check("slack", "T1", "C1", "U1") for _ in range(4)]
    assert results[:3] == [None, None, None]
    refused = results[3]
    assert refused is not None
    assert refused.reason == "user_rate"
    assert "wait" in refused.message
    assert await limiter.check("slack", "T1", "C1", "U2") is None


async def test_the_channel_limit_and_zero_disables(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=0, per_channel=2)
    users = [await limiter.check("slack", "T1", "C9", f"U{i}") for i in range(3)]
    assert users[2] is not None
    assert users[2].reason == "channel_rate"
    unlimited = RateLimiter(aredis, per_user=0, per_channel=0)
    assert all([await unlimited.check("slack", "T1", "C9", "U1") is None for _ in range(20)])


async def test_concurrent_checks_admit_exactly_the_limit(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=10, per_channel=0)
    results = await asyncio.gather(*(limiter.check("slack", "T1", "C1", "U1") for _ in range(40)))
    assert sum(r is None for r in results) == 10
