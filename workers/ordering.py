"""Per-thread ordering: a thread's messages are answered one at a time, in arrival order.

The ingress appends each message to its thread's queue (a Redis list). A worker answers a
message only once it is at the head, and removes it when done, so the next answer sees
this one in memory. Workers may run anywhere; the list is the only shared state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from redis.asyncio import Redis

from workers import keys

log = logging.getLogger(__name__)


class ThreadOrder:
    def __init__(self, redis: Redis, *, max_wait: float, poll_interval: float = 0.05) -> None:
        self._redis = redis
        self._max_wait = max_wait
        self._poll = poll_interval

    async def wait_turn(self, thread_key: str, message_key: str) -> None:
        """Return once every earlier message of the thread has been answered.

        A head that stays longer than `max_wait` (its task was lost) is skipped, so one
        lost message cannot stall a thread for ever.
        """
        queue = keys.thread_queue(thread_key)
        deadline = time.monotonic() + self._max_wait
        while True:
            # Clients are made with decode_responses=True: values are str.
            head = cast(str | None, await self._redis.lindex(queue, 0))
            if head is None or head == message_key:
                return
            if await self._redis.lpos(queue, message_key) is None:
                return  # not queued (expired, or skipped as stuck): nothing to wait for
            if time.monotonic() > deadline:
                log.warning(
                    "thread %s: skipping %s, unanswered for %.0fs", thread_key, head, self._max_wait
                )
                await self._redis.lrem(queue, 1, head)
                deadline = time.monotonic() + self._max_wait
                continue
            await asyncio.sleep(self._poll)

    async def release(self, thread_key: str, message_key: str) -> None:
        await self._redis.lrem(keys.thread_queue(thread_key), 1, message_key)
