"""What every ingress process assembles: the queue intake, the admin commands and the
ratings, over one Redis pool. Used by `parley serve` and `parley chat`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from celery import Celery
from redis.asyncio import Redis

from admin.commands import KnowledgeBases
from admin.health import service_health
from admin.setup import Admin, create_admin
from llm.base import ChatModel
from parley import metrics
from parley.settings import Settings
from privacy.crypto import Sealer
from workers.celery_app import create_celery, publisher
from workers.connections import redis_client
from workers.intake import QueueIntake


@dataclass(frozen=True, slots=True)
class Ingress:
    celery: Celery
    redis: Redis
    model: ChatModel  # only asked for its server info, by `status`
    admin: Admin
    intake: QueueIntake
    sealer: Sealer
    settings: Settings

    async def collect_metrics(self) -> None:
        """Refresh the gauges a scrape reads: queue depth and whether the model answers."""
        health = await service_health(self.redis, self.settings)
        if health.queued is not None:
            metrics.QUEUE_DEPTH.set(health.queued)
        try:
            await asyncio.wait_for(self.model.server_info(), timeout=1)
            metrics.MODEL_UP.set(1)
        except Exception:
            metrics.MODEL_UP.set(0)

    async def aclose(self) -> None:
        await self.model.aclose()
        await self.redis.aclose()


def _knowledge_bases(settings: Settings) -> KnowledgeBases | None:
    """What `kb list` and `kb use` offer: the ingested knowledge bases (no model is loaded
    to list them); None without the `knowledge` extra."""
    try:
        from knowledge.factory import create_store
    except ImportError:
        return None
    return create_store(settings).knowledge_bases


def create_ingress(settings: Settings, *, max_connections: int = 256) -> Ingress:
    from llm.factory import create_model

    celery = create_celery(settings)
    redis = redis_client(settings, max_connections=max_connections)
    model = create_model(settings)
    admin = create_admin(settings, redis, model.server_info, _knowledge_bases(settings))
    sealer = Sealer(settings.require_encryption_key())
    intake = QueueIntake(
        redis,
        publisher(celery, settings),
        sealer,
        dedupe_ttl=settings.dedupe_ttl_seconds,
        thread_ttl=settings.memory_ttl_seconds,
        channels=admin.channels,
    )
    return Ingress(celery, redis, model, admin, intake, sealer, settings)
