"""Erasure on request: one thread, or everything Parley keeps about one person.

Memory holds redacted turns and the placeholder vault the values behind them; both are
removed here, together with the bookkeeping that names the thread or the person.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from guardrails.limits import user_key
from privacy.redactor import Redactor
from workers import keys
from workers.memory import ThreadMemory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErasureReport:
    threads: int
    turns: int


class Erasure:
    def __init__(self, redis: Redis, memory: ThreadMemory, redactor: Redactor) -> None:
        self._redis = redis
        self._memory = memory
        self._redactor = redactor

    async def forget_thread(self, thread_key: str) -> None:
        await self._memory.forget(thread_key)
        await self._redactor.forget_thread(thread_key)
        await self._redis.delete(keys.active_thread(thread_key), keys.thread_queue(thread_key))
        log.info("forgot thread %s", thread_key)

    async def forget_user(self, platform: str, tenant: str, user: str) -> ErasureReport:
        """Remove the person's turns (and the answers to them), the values they wrote, in
        every thread they took part in, and their rate-limit window."""
        index = keys.user_threads(platform, tenant, user)
        threads = cast(set[str], await self._redis.smembers(index))
        turns = 0
        for thread_key in sorted(threads):
            turns += await self._memory.forget_user(thread_key, user)
            await self._redactor.forget_user(thread_key, user)
        await self._redis.delete(index, user_key(platform, tenant, user))
        log.info(
            "forgot user %s:%s:%s: %d threads, %d turns",
            platform,
            tenant,
            user,
            len(threads),
            turns,
        )
        return ErasureReport(threads=len(threads), turns=turns)
