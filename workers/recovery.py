"""Queue again the messages whose task the broker lost.

Celery's Redis transport takes a task off the queue (BRPOP) and only then records it as
unacknowledged: a worker killed between the two loses the task for good, and with it an
acknowledged message. The intake therefore keeps each message's sealed payload until the
message is finished (workers/ledger.py removes it), and one worker at a time sweeps for
messages that stayed unfinished longer than any task can take — no worker holding their
lease, and no backlog in the queue that could still be carrying them — and queues them
again. A message queued twice is still answered once: the ledger and the lease see to that.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis

from parley import metrics
from workers import keys
from workers.ledger import ReplyLedger

log = logging.getLogger(__name__)

Republish = Callable[[dict[str, Any]], Awaitable[None]]
BATCH = 100


class LostTaskRecovery:
    def __init__(
        self,
        redis: Redis,
        ledger: ReplyLedger,
        republish: Republish,
        *,
        stale_after: float,
        queue_name: str,
        lock_seconds: float,
    ) -> None:
        self._redis = redis
        self._ledger = ledger
        self._republish = republish
        self._stale_after = stale_after
        self._queue = queue_name
        self._lock_seconds = lock_seconds

    async def sweep(self) -> int:
        """Queue again what the broker lost; returns how many messages."""
        locked = await self._redis.set(
            keys.RECOVERY_LOCK, "1", nx=True, px=int(self._lock_seconds * 1000)
        )
        if not locked:
            return 0  # another worker sweeps
        if await self._redis.llen(self._queue):
            return 0  # a backlog: tasks may still be on their way to a worker
        now = time.time()
        stale = cast(
            list[str],
            await self._redis.zrangebyscore(
                keys.PENDING_SINCE, "-inf", now - self._stale_after, start=0, num=BATCH
            ),
        )
        requeued = 0
        for message_key in stale:
            if await self._requeue(message_key, now):
                requeued += 1
        return requeued

    async def _requeue(self, message_key: str, now: float) -> bool:
        payload = await self._redis.get(keys.pending(message_key))
        if payload is None or (await self._ledger.load(message_key)).finished:
            # Expired, or finished by a run whose clean-up did not commit: forget it.
            await self._redis.zrem(keys.PENDING_SINCE, message_key)
            return False
        if await self._redis.exists(keys.lease(message_key)):
            return False  # being answered right now
        # Restart its clock first: a second sweep must not queue it again at once.
        await self._redis.zadd(keys.PENDING_SINCE, {message_key: now}, xx=True)
        await self._republish(json.loads(payload))
        metrics.ERRORS.labels("task_lost_by_broker").inc()
        log.warning(
            "message %s: its task was lost by the broker; queued it again",
            message_key,
            extra={"message_key": message_key},
        )
        return True
