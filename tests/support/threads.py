"""Slack messages as the ingress leaves them for a worker: queued in their thread's order."""

from __future__ import annotations

import time

from redis import Redis

from parley.message import InboundMessage
from tests.support import slack_events as ev
from workers import keys


def queued_message(
    text: str, thread: str, redis: Redis, *, channel: str, ts: str | None = None
) -> InboundMessage:
    """A mention of Parley by U0ALICE in `thread` of `channel`, pushed onto its thread's
    queue the way the ingress does, ready for Pipeline.handle."""
    ts = ts or ev.next_ts()
    message = InboundMessage(
        platform="slack",
        tenant=ev.TEAM,
        channel=channel,
        thread=thread,
        user="U0ALICE",
        text=text,
        message_id=f"{channel}:{ts}",
        reply_to={"channel": channel, "thread_ts": thread, "team": ev.TEAM, "user": "U0ALICE"},
        received_at=time.time(),
    )
    redis.rpush(keys.thread_queue(message.thread_key), message.message_key)
    return message
