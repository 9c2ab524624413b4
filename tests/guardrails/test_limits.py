from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from guardrails.limits import (
    LimitExceeded,
    RateLimited,
    RateLimiter,
    channel_key,
    check_size,
    user_key,
)
from tests.support.config import make_settings


def test_the_size_limit_says_the_limit_and_what_to_do() -> None:
    assert check_size("x" * 10, 10) is None
    exceeded = check_size("x" * 52_310, 40_000)
    assert exceeded == LimitExceeded(52_310, 40_000)
    assert exceeded.reason == "too_long"
    assert "52,310 characters" in exceeded.message
    assert "at most 40,000" in exceeded.message
    assert "split it" in exceeded.message


async def test_n_messages_pass_then_a_friendly_wait(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=3, per_channel=0)
    for _ in range(3):
        assert await limiter.check("slack", "T1", "C1", "U1") is None
    limited = await limiter.check("slack", "T1", "C1", "U1")
    assert isinstance(limited, RateLimited)
    assert (limited.scope, limited.limit, limited.reason) == ("user", 3, "user_rate")
    assert 58 < limited.retry_after <= 60
    assert limited.message == (
        "You've asked 3 questions in the last minute; please wait 60 s and try again."
    )


async def test_users_are_independent_and_keys_expire(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=2, per_channel=0)
    for _ in range(2):
        assert await limiter.check("slack", "T1", "C1", "U1") is None
    assert await limiter.check("slack", "T1", "C1", "U1") is not None
    assert await limiter.check("slack", "T1", "C1", "U2") is None
    assert await limiter.check("slack", "T2", "C1", "U1") is None  # another workspace
    assert await limiter.check("teams", "T1", "C1", "U1") is None
    key = user_key("slack", "T1", "U1")
    assert key == "parley:rate:user:slack:T1:U1"
    assert 0 < await aredis.pttl(key) <= 60_000


async def test_the_channel_limit_counts_everyone_in_the_channel(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=10, per_channel=2)
    assert await limiter.check("slack", "T1", "C9", "U1") is None
    assert await limiter.check("slack", "T1", "C9", "U2") is None
    limited = await limiter.check("slack", "T1", "C9", "U3")
    assert limited is not None
    assert (limited.scope, limited.reason) == ("channel", "channel_rate")
    assert limited.message.startswith("This channel has asked 2 questions in the last minute")
    assert await limiter.check("slack", "T1", "C8", "U3") is None  # another channel
    # The refused message was not counted against its user either.
    assert await aredis.zcard(user_key("slack", "T1", "U3")) == 1
    assert await aredis.zcard(channel_key("slack", "T1", "C9")) == 2


async def test_a_limit_of_zero_turns_that_limit_off(aredis: Redis) -> None:
    users_only = RateLimiter(aredis, per_user=0, per_channel=2)
    assert [await users_only.check("slack", "T1", "C1", "U1") for _ in range(2)] == [None, None]
    assert await users_only.check("slack", "T1", "C1", "U1") is not None
    unlimited = RateLimiter(aredis, per_user=0, per_channel=0)
    assert all([await unlimited.check("slack", "T1", "C5", "U1") is None for _ in range(50)])
    assert await aredis.keys("parley:rate:*:C5") == []
    assert await aredis.keys("parley:rate:user:*") == []


async def test_the_window_slides_and_refusals_do_not_extend_it(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=2, per_channel=0, window_seconds=0.5)
    assert await limiter.check("slack", "T1", "C1", "U1") is None
    await asyncio.sleep(0.2)
    assert await limiter.check("slack", "T1", "C1", "U1") is None
    first = await limiter.check("slack", "T1", "C1", "U1")
    assert first is not None
    assert 0.1 < first.retry_after <= 0.35  # the oldest of the two leaves first
    assert "in the last 0.5 seconds" in first.message
    await asyncio.sleep(first.retry_after + 0.05)
    assert await limiter.check("slack", "T1", "C1", "U1") is None
    assert await limiter.check("slack", "T1", "C1", "U1") is not None


async def test_the_longer_wait_wins_when_both_limits_are_full(aredis: Redis) -> None:
    limiter = RateLimiter(aredis, per_user=1, per_channel=1, window_seconds=2)
    assert await limiter.check("slack", "T1", "C1", "U1") is None
    await asyncio.sleep(0.3)
    other = RateLimiter(aredis, per_user=1, per_channel=0, window_seconds=2)
    assert await other.check("slack", "T1", "C2", "U2") is None  # U2's own window starts later
    limited = await limiter.check("slack", "T1", "C1", "U2")
    assert limited is not None
    assert limited.scope == "user"
    assert limited.retry_after > 1.8


async def test_concurrent_checks_from_many_clients_admit_exactly_the_limit(
    redis_url: str,
) -> None:
    # Separate clients (connection pools) stand for separate worker processes.
    clients = [Redis.from_url(redis_url) for _ in range(8)]
    try:
        limiters = [RateLimiter(c, per_user=10, per_channel=25) for c in clients]
        results = await asyncio.gather(
            *(
                limiters[i % len(limiters)].check("slack", "T1", "C1", f"U{i % 3}")
                for i in range(120)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    admitted = [i % 3 for i, r in enumerate(results) if r is None]
    assert len(admitted) == 25  # the channel's limit
    assert all(admitted.count(user) <= 10 for user in range(3))
    assert {r.scope for r in results if r is not None} <= {"user", "channel"}


async def test_from_settings(aredis: Redis) -> None:
    limiter = RateLimiter.from_settings(
        make_settings(rate_limit_user_per_minute=1, rate_limit_channel_per_minute=0), aredis
    )
    assert await limiter.check("slack", "T1", "C1", "U1") is None
    assert await limiter.check("slack", "T1", "C1", "U1") is not None


def test_bad_limits_are_refused(aredis: Redis) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RateLimiter(aredis, per_user=-1, per_channel=0)
    with pytest.raises(ValueError, match="window"):
        RateLimiter(aredis, per_user=1, per_channel=1, window_seconds=0)
