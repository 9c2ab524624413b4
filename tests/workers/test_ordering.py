from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from workers import keys
from workers.ordering import ThreadOrder

THREAD = "slack:T1:C1:100.1"


async def test_messages_take_turns_in_arrival_order(aredis: Redis) -> None:
    await aredis.rpush(keys.thread_queue(THREAD), "m1", "m2", "m3")
    order = ThreadOrder(aredis, max_wait=10, poll_interval=0.01)
    served: list[str] = []

    async def run(message: str) -> None:
        await order.wait_turn(THREAD, message)
        served.append(message)
        await asyncio.sleep(0.02)
        await order.release(THREAD, message)

    # Started in reverse: each still waits for the ones that arrived before it.
    await asyncio.gather(run("m3"), run("m2"), run("m1"))
    assert served == ["m1", "m2", "m3"]
    assert await aredis.llen(keys.thread_queue(THREAD)) == 0


async def test_a_stuck_head_is_skipped_after_max_wait(aredis: Redis) -> None:
    await aredis.rpush(keys.thread_queue(THREAD), "lost", "m2")
    order = ThreadOrder(aredis, max_wait=0.2, poll_interval=0.01)
    await asyncio.wait_for(order.wait_turn(THREAD, "m2"), timeout=2)
    assert await aredis.lrange(keys.thread_queue(THREAD), 0, -1) == ["m2"]


async def test_an_unqueued_message_does_not_wait(aredis: Redis) -> None:
    await aredis.rpush(keys.thread_queue(THREAD), "other")
    order = ThreadOrder(aredis, max_wait=30, poll_interval=0.01)
    await asyncio.wait_for(order.wait_turn(THREAD, "expired"), timeout=1)
