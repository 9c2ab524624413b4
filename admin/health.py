"""What `status` reports about the service: worker processes alive and messages queued."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from parley.settings import Settings
from workers import keys


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    workers: int
    queued: int | None  # None: the broker is not this Redis, so the depth is not read here


async def service_health(redis: Redis, settings: Settings) -> ServiceHealth:
    workers = 0
    async for _ in redis.scan_iter(match=keys.WORKER_HEARTBEATS, count=100):
        workers += 1
    queued: int | None = None
    if settings.effective_broker_url == settings.redis_url:
        # Celery's Redis transport keeps a queue as a list named after it.
        queued = int(await redis.llen(settings.queue_name))
    return ServiceHealth(workers=workers, queued=queued)
