"""The Redis client every process uses: the same pool settings in the ingress and workers."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from parley.settings import Settings

# How long a request may wait for a free connection when all are busy (bursts of hundreds
# of deliveries a second) before it fails and the platform is asked to retry.
POOL_WAIT_SECONDS = 2.0


def redis_client(settings: Settings, *, max_connections: int) -> Redis:
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=POOL_WAIT_SECONDS,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=10,
        retry_on_timeout=True,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
