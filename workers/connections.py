"""The Redis client every process uses: the same pool settings in the ingress and workers."""

from __future__ import annotations

from redis.asyncio import Redis

from parley.settings import Settings


def redis_client(settings: Settings, *, max_connections: int) -> Redis:
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=10,
        retry_on_timeout=True,
    )
