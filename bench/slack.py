"""The fake Slack Web API of the benchmark: tests.fakes.slack_api.FakeSlack, noting for each
message the bot writes when it first showed text and when it was last left complete (not
streaming)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bots.slack.outbound import MORE, THINKING
from tests.fakes.slack_api import FakeSlack, Params, Reply
from tests.support import slack_events

# What a reply shows before it has any of the answer.
PLACEHOLDERS = frozenset({"", THINKING, MORE})
_WRITES = (
    "chat.postMessage",
    "chat.update",
    "chat.startStream",
    "chat.appendStream",
    "chat.stopStream",
)

MessageKey = tuple[str, str]  # channel, ts of the bot's message


class RecordingSlack(FakeSlack):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            slack_events.BOT_TOKEN,
            app_token=slack_events.APP_TOKEN,
            team_id=slack_events.TEAM,
            bot_user_id=slack_events.BOT_USER,
            bot_id=slack_events.BOT_ID,
            **kwargs,
        )
        self.first_text: dict[MessageKey, float] = {}  # time.monotonic()
        self.completed: dict[MessageKey, float] = {}  # last write that left it not streaming
        self.thread_of: dict[MessageKey, tuple[str, str]] = {}  # -> (channel, thread_ts)
        for method in _WRITES:
            self._methods[method] = self._recording(self._methods[method])

    def _recording(self, handler: Callable[[Params], Reply]) -> Callable[[Params], Reply]:
        def record(params: Params) -> Reply:
            reply = handler(params)  # runs under self._lock, as every handler
            body = reply[0]
            if not body.get("ok"):
                return reply
            channel, ts = str(params.get("channel") or ""), body.get("ts") or params.get("ts")
            message = self._messages.get(channel, {}).get(str(ts))
            if message is not None:
                now = time.monotonic()
                key = (channel, message.ts)
                if message.thread_ts is not None:
                    self.thread_of[key] = (channel, message.thread_ts)
                if message.shown.strip() not in PLACEHOLDERS:
                    self.first_text.setdefault(key, now)
                if not message.streaming:
                    self.completed[key] = now
            return reply

        return record

    def timings(self) -> tuple[dict[MessageKey, float], dict[MessageKey, float]]:
        with self._lock:
            return dict(self.first_text), dict(self.completed)

    def replies_by_thread(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every thread's bot messages (not deleted), oldest first, in one pass."""
        with self._lock:
            found: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for channel, messages in self._messages.items():
                for message in messages.values():
                    if message.bot_id is None or message.deleted or message.thread_ts is None:
                        continue
                    found.setdefault((channel, message.thread_ts), []).append(message.as_dict())
        return found
