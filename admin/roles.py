"""Who may change a channel's settings.

An admin of a channel is any of: a bootstrap admin (PARLEY_ADMINS, every channel); a
workspace admin or owner where PARLEY_SLACK_WORKSPACE_ADMINS allows it (asked of the
platform); or one of the channel's own admins, kept in Redis and managed with `admins`.
"""

from __future__ import annotations

from enum import Enum

from redis.asyncio import Redis

from bots.base import CommandPlatform
from parley.settings import Settings
from workers import keys


class Role(Enum):
    BOOTSTRAP = "bootstrap admin (PARLEY_ADMINS)"
    WORKSPACE = "workspace admin (or the console's operator)"
    CHANNEL = "channel admin"
    MEMBER = "member"

    @property
    def is_admin(self) -> bool:
        return self is not Role.MEMBER


class Roles:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._bootstrap = settings.admin_ids
        # Platforms whose own admin check counts: Slack's workspace admins when allowed, and
        # the console, whose user holds a terminal of the deployment itself.
        self._platform_admins = {"console"}
        if settings.slack_workspace_admins:
            self._platform_admins.add("slack")

    def is_bootstrap(self, platform: str, user: str) -> bool:
        return (platform, user) in self._bootstrap

    def bootstrap_admins(self, platform: str) -> list[str]:
        return sorted(user for p, user in self._bootstrap if p == platform)

    async def role(
        self, platform: str, tenant: str, channel: str, user: str, where: CommandPlatform
    ) -> Role:
        if self.is_bootstrap(platform, user):
            return Role.BOOTSTRAP
        if await self._redis.sismember(keys.channel_admins(platform, tenant, channel), user):
            return Role.CHANNEL
        # Asked last: it is a platform API call.
        if platform in self._platform_admins and await where.is_platform_admin(user):
            return Role.WORKSPACE
        return Role.MEMBER

    async def channel_admins(self, platform: str, tenant: str, channel: str) -> list[str]:
        members = await self._redis.smembers(keys.channel_admins(platform, tenant, channel))
        return sorted(_text(m) for m in members)

    async def add(self, platform: str, tenant: str, channel: str, user: str) -> bool:
        """True when the user was not a channel admin before."""
        added = await self._redis.sadd(keys.channel_admins(platform, tenant, channel), user)
        return bool(added)

    async def remove(self, platform: str, tenant: str, channel: str, user: str) -> bool:
        removed = await self._redis.srem(keys.channel_admins(platform, tenant, channel), user)
        return bool(removed)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
