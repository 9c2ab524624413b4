"""The console's outbound half: the worker writes the answer into the session's stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from bots.base import DeliveryError, ReplyState, SaveReplyState
from bots.console.transport import Event, Transport
from parley.settings import Settings
from privacy.crypto import Sealer


class ConsoleReply:
    """Sends every change at once: the terminal is local, there is no rate limit to pace."""

    def __init__(self, transport: Transport, session: str, message_id: str) -> None:
        self._transport = transport
        self._session = session
        self._message_id = message_id
        self._shown = ""
        self._closed = False

    @property
    def message_ids(self) -> list[str]:
        return [self._message_id]

    async def update(self, text: str) -> None:
        if self._closed or text == self._shown:
            return
        if text.startswith(self._shown):
            await self._send("append", text[len(self._shown) :])
        else:
            await self._send("replace", text)
        self._shown = text

    async def finish(self, text: str) -> None:
        if self._closed:
            return
        await self.update(text)
        await self._send("final", "")
        self._closed = True

    async def fail(self, text: str) -> None:
        if self._closed:
            return
        await self._send("fail", text)
        self._closed = True

    async def _send(self, op: Any, text: str) -> None:
        await self._transport.send(self._session, Event(op, text, self._message_id))


class ConsoleOutbound:
    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self._redis = redis
        self._transport = Transport(redis, sealer)

    async def open_reply(
        self,
        reply_to: Mapping[str, Any],
        resume: ReplyState | None,
        save_state: SaveReplyState,
    ) -> ConsoleReply:
        session, message_id = reply_to.get("session"), reply_to.get("message_id")
        if not (isinstance(session, str) and session and isinstance(message_id, str)):
            raise DeliveryError("invalid console reply_to")
        reply = ConsoleReply(self._transport, session, message_id)
        await reply._send("open", "")
        if resume is not None:
            # A retried run starts the text over: the terminal replaces what it showed.
            await reply._send("replace", "")
        await save_state({"session": session})
        return reply

    async def aclose(self) -> None:
        await self._redis.aclose()


def create_outbound(settings: Settings) -> ConsoleOutbound:
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    return ConsoleOutbound(redis, Sealer(settings.require_encryption_key()))
