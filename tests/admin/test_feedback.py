from __future__ import annotations

import redis
from redis.asyncio import Redis

from admin.feedback import FeedbackStore, Usage
from tests.support.scan import redis_dump
from workers import keys

KEY = "slack:T1:C1:1700000000.000100"


async def _answer(aredis: Redis, store: FeedbackStore, message_id: str = "C1:1700.1") -> None:
    async with aredis.pipeline(transaction=True) as pipe:
        store.stage_answer(
            pipe,
            platform="slack",
            tenant="T1",
            channel="C1",
            message_ids=[message_id, "C1:1700.2"],
            message_key=KEY,
            model="llama-3",
        )
        store.stage_outcome(pipe, "slack", "T1", "C1", "answered", 120)
        await pipe.execute()


async def test_each_person_has_one_rating_per_answer_and_the_newest_counts(
    aredis: Redis,
) -> None:
    store = FeedbackStore(aredis, ttl=600)
    await _answer(aredis, store)
    assert await store.rate("slack", "T1", "C1:1700.1", "UANN", "good")
    assert not await store.rate("slack", "T1", "C1:1700.2", "UANN", "good"), "same answer"
    assert await store.rate("slack", "T1", "C1:1700.1", "UBOB", "good")
    assert await store.rate("slack", "T1", "C1:1700.1", "UBOB", "bad")
    assert await store.usage("slack", "T1", "C1") == Usage(answered=1, tokens=120, good=1, bad=1)
    assert await store.ratings(KEY) == {"good": 1, "bad": 1}


async def test_withdrawing_removes_only_the_rating_it_names(aredis: Redis) -> None:
    store = FeedbackStore(aredis, ttl=600)
    await _answer(aredis, store)
    await store.rate("slack", "T1", "C1:1700.1", "UANN", "good")
    await store.rate("slack", "T1", "C1:1700.1", "UANN", "bad")
    # Removing the 👍 after the 👎: the 👎 stays.
    assert not await store.withdraw("slack", "T1", "C1:1700.1", "UANN", "good")
    assert (await store.usage("slack", "T1", "C1")).bad == 1
    assert await store.withdraw("slack", "T1", "C1:1700.1", "UANN", "bad")
    usage = await store.usage("slack", "T1", "C1")
    assert (usage.good, usage.bad) == (0, 0)
    assert not await aredis.exists(keys.user_ratings("slack", "T1", "UANN"))


async def test_ratings_of_other_messages_are_ignored(aredis: Redis) -> None:
    store = FeedbackStore(aredis, ttl=600)
    assert not await store.rate("slack", "T1", "C1:9999.9", "UANN", "good")
    assert await store.usage("slack", "T1", "C1") == Usage()


async def test_forgetting_a_person_removes_their_ratings_but_keeps_the_counts(
    aredis: Redis, sync_redis: redis.Redis
) -> None:
    store = FeedbackStore(aredis, ttl=600)
    await _answer(aredis, store)
    await store.rate("slack", "T1", "C1:1700.1", "UANN", "good")
    await store.rate("slack", "T1", "C1:1700.1", "UBOB", "bad")
    assert await store.forget_user("slack", "T1", "UANN") == 1
    assert "UANN" not in redis_dump(sync_redis)
    assert await store.ratings(KEY) == {"bad": 1}
    assert (await store.usage("slack", "T1", "C1")).good == 1
