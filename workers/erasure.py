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
from parley.settings import Settings
from privacy.crypto import Sealer
from privacy.vault import PlaceholderVault
from workers import keys
from workers.memory import ThreadMemory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErasureReport:
    threads: int
    turns: int


class Erasure:
    # Only the vault, not the redactor: erasing needs no language model for analysis, so
    # the ingress can run it without loading one.
    def __init__(self, redis: Redis, memory: ThreadMemory, vault: PlaceholderVault) -> None:
        self._redis = redis
        self._memory = memory
        self._vault = vault

    async def forget_thread(self, thread_key: str) -> None:
        await self._memory.forget(thread_key)
        await self._vault.forget_thread(thread_key)
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
            await self._vault.forget_user(thread_key, user)
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


def create_erasure(settings: Settings, redis: Redis) -> Erasure:
    key = settings.require_encryption_key()
    memory = ThreadMemory(
        redis, Sealer(key), ttl=settings.memory_ttl_seconds, max_turns=settings.memory_max_turns
    )
    return Erasure(redis, memory, PlaceholderVault(redis, key, ttl=settings.memory_ttl_seconds))
