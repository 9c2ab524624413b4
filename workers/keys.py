"""Redis key names, in one place so that every process agrees on them.

Keys carry only platform ids (team, channel, thread timestamps), never message text.
"""

from __future__ import annotations

PREFIX = "parley"


def seen(platform: str, tenant: str, message_id: str) -> str:
    """Deduplicates deliveries of one platform message (retries, app_mention + message)."""
    return f"{PREFIX}:seen:{platform}:{tenant}:{message_id}"


def active_thread(thread_key: str) -> str:
    """Present while Parley takes part in a thread: follow-ups need no mention."""
    return f"{PREFIX}:active:{thread_key}"


def thread_queue(thread_key: str) -> str:
    """The thread's messages in arrival order; the head is the one being answered."""
    return f"{PREFIX}:order:{thread_key}"


def memory(thread_key: str) -> str:
    return f"{PREFIX}:memory:{thread_key}"


def reply(message_key: str) -> str:
    """Reply state of one message: done or not, and where its answer is shown."""
    return f"{PREFIX}:reply:{message_key}"


def lease(message_key: str) -> str:
    """Held by the one worker currently answering a message."""
    return f"{PREFIX}:lease:{message_key}"


def user_threads(platform: str, tenant: str, user: str) -> str:
    """The threads a user wrote in, so that "forget me" finds everything about them."""
    return f"{PREFIX}:user-threads:{platform}:{tenant}:{user}"


# -- administration ------------------------------------------------------------------------


def channel_config(platform: str, tenant: str, channel: str) -> str:
    """A channel's settings (hash). No TTL: settings last until an admin changes them."""
    return f"{PREFIX}:channel:{platform}:{tenant}:{channel}"


def channel_admins(platform: str, tenant: str, channel: str) -> str:
    """The channel's own admins (set of user ids), besides the bootstrap admins."""
    return f"{PREFIX}:channel-admins:{platform}:{tenant}:{channel}"


def usage(platform: str, tenant: str, channel: str) -> str:
    """Counts of the channel's answers by outcome, tokens and ratings (hash, no TTL)."""
    return f"{PREFIX}:usage:{platform}:{tenant}:{channel}"


AUDIT = f"{PREFIX}:audit"
"""The audit log: a capped stream of admin actions and refused attempts."""


def answer(platform: str, tenant: str, message_id: str) -> str:
    """Which question a message of Parley's answers (so a rating of it finds its turn)."""
    return f"{PREFIX}:answer:{platform}:{tenant}:{message_id}"


def ratings(message_key: str) -> str:
    """People's ratings of the answer to one message (hash user -> good|bad)."""
    return f"{PREFIX}:ratings:{message_key}"


def user_ratings(platform: str, tenant: str, user: str) -> str:
    """The answers a user rated, so that "forget me" finds their ratings."""
    return f"{PREFIX}:user-ratings:{platform}:{tenant}:{user}"


def worker_heartbeat(name: str) -> str:
    """Present while a worker process runs (short TTL, renewed)."""
    return f"{PREFIX}:worker:{name}"


WORKER_HEARTBEATS = f"{PREFIX}:worker:*"


# -- recovery of tasks the broker lost ------------------------------------------------------


def pending(message_key: str) -> str:
    """The sealed task payload of a message not answered yet, to queue it again if the
    broker loses it (removed when the message is finished)."""
    return f"{PREFIX}:pending:{message_key}"


PENDING_SINCE = f"{PREFIX}:pending-since"
"""Unfinished messages by when they were (last) queued: a sorted set of message keys."""

RECOVERY_LOCK = f"{PREFIX}:recovery-lock"
"""Held by the one worker sweeping for lost messages."""
