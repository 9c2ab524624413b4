"""Builds the administration parts the ingress needs, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from admin.audit import AuditLog
from admin.channels import ChannelStore
from admin.commands import AdminCommands, KnowledgeBases, ModelInfo
from admin.feedback import FeedbackStore
from admin.health import ServiceHealth, service_health
from admin.roles import Roles
from parley.settings import Settings
from workers.erasure import create_erasure


@dataclass(frozen=True, slots=True)
class Admin:
    channels: ChannelStore
    commands: AdminCommands
    feedback: FeedbackStore


def create_admin(
    settings: Settings,
    redis: Redis,
    model_info: ModelInfo,
    knowledge_bases: KnowledgeBases | None = None,
) -> Admin:
    channels = ChannelStore(redis, settings)
    feedback = FeedbackStore(redis, ttl=settings.memory_ttl_seconds)

    async def health() -> ServiceHealth:
        return await service_health(redis, settings)

    commands = AdminCommands(
        settings=settings,
        channels=channels,
        roles=Roles(redis, settings),
        audit=AuditLog(redis, max_entries=settings.audit_max_entries),
        feedback=feedback,
        erasure=create_erasure(settings, redis),
        model_info=model_info,
        health=health,
        knowledge_bases=knowledge_bases,
    )
    return Admin(channels=channels, commands=commands, feedback=feedback)
