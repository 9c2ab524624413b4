"""Reply state per message, so that a task run twice (Celery redelivery after a crash,
a duplicate publish) never posts a second answer.

- `lease` admits one runner per message at a time: SET NX with a short expiry that the
  holder keeps renewing, so a crashed runner's lease lapses within seconds;
- `reply_state` remembers where the answer is being shown, saved before text goes out;
- `finished` marks the message answered (or failed politely); later runs stop at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from bots.base import ReplyState
from workers import keys

log = logging.getLogger(__name__)

_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True)
class LedgerEntry:
    status: str | None  # None: never started; "started"; anything else: finished
    reply_state: ReplyState | None

    @property
    def finished(self) -> bool:
        return self.status not in (None, "started")


class ReplyLedger:
    def __init__(self, redis: Redis, *, ttl: int, lease_ttl: float, poll_interval: float = 0.1):
        self._redis = redis
        self._ttl = ttl
        self._lease_ms = int(lease_ttl * 1000)
        self._poll = poll_interval

    async def load(self, message_key: str) -> LedgerEntry:
        raw = cast(dict[str, str], await self._redis.hgetall(keys.reply(message_key)))
        state = raw.get("reply_state")
        return LedgerEntry(
            status=raw.get("status"), reply_state=json.loads(state) if state else None
        )

    async def save_reply_state(self, message_key: str, state: ReplyState) -> None:
        key = keys.reply(message_key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": "started", "reply_state": json.dumps(state)})
            pipe.expire(key, self._ttl)
            await pipe.execute()

    def stage_finished(self, pipe: Pipeline, message_key: str, status: str) -> None:
        """Add "finished" to a transaction, so it commits together with the memory."""
        key = keys.reply(message_key)
        pipe.hset(key, mapping={"status": status, "finished_at": str(time.time())})
        pipe.expire(key, self._ttl)
        # Finished: nothing left to recover if the broker loses a copy of its task.
        pipe.delete(keys.pending(message_key))
        pipe.zrem(keys.PENDING_SINCE, message_key)

    @asynccontextmanager
    async def lease(self, message_key: str) -> AsyncIterator[bool]:
        """Yield True holding the message's lease, or False if another run finished it."""
        key = keys.lease(message_key)
        token = secrets.token_hex(8)
        while not await self._redis.set(key, token, nx=True, px=self._lease_ms):
            if (await self.load(message_key)).finished:
                yield False
                return
            await asyncio.sleep(self._poll)
        renewal = asyncio.create_task(self._renew(key, token))
        try:
            # The previous holder may have finished just before releasing the lease.
            yield not (await self.load(message_key)).finished
        finally:
            renewal.cancel()
            await self._redis.eval(_RELEASE_IF_OWNER, 1, key, token)

    async def _renew(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self._redis.eval(_RENEW_IF_OWNER, 1, key, token, self._lease_ms)
            except RedisError as exc:  # the next renewal may succeed before expiry
                log.warning("could not renew lease %s: %r", key, exc)
