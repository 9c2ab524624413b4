"""The platform-neutral message that travels from bots/ through the queue to workers/."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def thread_key(platform: str, tenant: str, channel: str, thread: str) -> str:
    """Names one conversation: memory and ordering are kept per thread key."""
    return f"{platform}:{tenant}:{channel}:{thread}"


def parse_thread_key(key: str) -> tuple[str, str, str, str]:
    """(platform, tenant, channel, thread) of a thread key.

    Platforms and tenants hold no ':'; channels may (Teams "19:…@thread.tacv2"), threads
    too where the thread is the conversation itself (Teams personal chats, where
    thread == channel). Otherwise the thread (a Slack ts, a Teams message id) has none.
    """
    platform, _, rest = key.partition(":")
    tenant, _, rest = rest.partition(":")
    half = len(rest) // 2
    if len(rest) % 2 == 1 and rest[half] == ":" and rest[:half] == rest[half + 1 :]:
        return platform, tenant, rest[:half], rest[:half]
    channel, _, thread = rest.rpartition(":")
    return platform, tenant, channel, thread


class InboundMessage(BaseModel):
    """One chat message to answer. JSON-serializable: it is the Celery task payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: str = Field(min_length=1)
    tenant: str = Field(min_length=1, description="Slack team id, Teams tenant id")
    channel: str = Field(min_length=1)
    thread: str = Field(min_length=1, description="Root of the conversation thread")
    user: str = Field(min_length=1)
    text: str
    message_id: str = Field(min_length=1, description="Unique per platform message")
    reply_to: dict[str, Any] = Field(description="Opaque address the outbound half replies to")
    received_at: float = Field(description="Unix time the ingress acknowledged it")
    addressed: bool = Field(
        True,
        description="Written to Parley (a mention or a direct message), not a follow-up or "
        "a message it reads because its channel is in `mode all`",
    )
    direct: bool = Field(False, description="A direct message (Slack DM, Teams personal chat)")

    @property
    def thread_key(self) -> str:
        return thread_key(self.platform, self.tenant, self.channel, self.thread)

    @property
    def message_key(self) -> str:
        return f"{self.platform}:{self.tenant}:{self.message_id}"
