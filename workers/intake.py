"""The request path's only work after verification: deduplicate, order, enqueue.

Runs in the ingress process. It never waits on the model: one Redis round trip to claim the
message, one to record its place in the thread, one broker publish.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from admin.channels import ChannelStore
from bots.base import IntakeUnavailable
from parley import metrics
from parley.logs import correlated
from parley.message import InboundMessage, thread_key
from privacy.crypto import Sealer
from workers import keys
from workers.payload import seal_message

log = logging.getLogger(__name__)

Publish = Callable[[dict[str, Any]], Awaitable[None]]


class QueueIntake:
    def __init__(
        self,
        redis: Redis,
        publish: Publish,
        sealer: Sealer,
        *,
        dedupe_ttl: int,
        thread_ttl: int,
        channels: ChannelStore | None = None,
    ) -> None:
        self._redis = redis
        self._publish = publish
        self._sealer = sealer
        self._dedupe_ttl = dedupe_ttl
        self._thread_ttl = thread_ttl
        self._channels = channels

    async def submit(self, message: InboundMessage) -> bool:
        with correlated(message.message_key):
            return await self._submit(message)

    async def _submit(self, message: InboundMessage) -> bool:
        metrics.EVENTS_RECEIVED.labels(message.platform).inc()
        seen_key = keys.seen(message.platform, message.tenant, message.message_id)
        order_key = keys.thread_queue(message.thread_key)
        try:
            claimed = await self._redis.set(seen_key, "1", nx=True, ex=self._dedupe_ttl)
        except RedisError as exc:
            raise IntakeUnavailable(f"Redis unreachable: {exc}") from exc
        if not claimed:
            metrics.EVENTS_DEDUPLICATED.labels(message.platform).inc()
            return False
        try:
            payload = seal_message(message, self._sealer)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(order_key, message.message_key)
                pipe.expire(order_key, self._thread_ttl)
                pipe.set(keys.active_thread(message.thread_key), "1", ex=self._thread_ttl)
                # Kept until the message is finished, sealed like the task itself: a
                # worker queues it again if the broker loses the task (workers/recovery.py).
                pipe.set(
                    keys.pending(message.message_key), json.dumps(payload), ex=self._dedupe_ttl
                )
                pipe.zadd(keys.PENDING_SINCE, {message.message_key: time.time()})
                await pipe.execute()
            await self._publish(payload)
        except Exception as exc:
            # Undo the claim so that the platform's retry of this delivery goes through:
            # a dropped retry would lose a message nobody answered.
            await self._undo(seen_key, order_key, message.message_key)
            raise IntakeUnavailable(f"could not enqueue: {exc}") from exc
        metrics.EVENTS_ENQUEUED.labels(message.platform).inc()
        return True

    async def is_active_thread(self, platform: str, tenant: str, channel: str, thread: str) -> bool:
        key = keys.active_thread(thread_key(platform, tenant, channel, thread))
        try:
            return bool(await self._redis.exists(key))
        except RedisError as exc:
            raise IntakeUnavailable(f"Redis unreachable: {exc}") from exc

    async def reads_channel(self, platform: str, tenant: str, channel: str) -> bool:
        if self._channels is None:
            return False
        try:
            return await self._channels.reads_all(platform, tenant, channel)
        except RedisError as exc:
            raise IntakeUnavailable(f"Redis unreachable: {exc}") from exc

    async def _undo(self, seen_key: str, order_key: str, message_key: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(seen_key, keys.pending(message_key))
                pipe.zrem(keys.PENDING_SINCE, message_key)
                pipe.lrem(order_key, 1, message_key)
                await pipe.execute()
        except RedisError:
            log.warning("could not undo the claim of %s; its retry will be dropped", message_key)
