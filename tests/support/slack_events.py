"""Build Events API deliveries and sign them the way Slack does (v0 HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-1-test-app-token"
TEAM = "T0PARLEY"
BOT_USER = "UBOTPARLEY"
BOT_ID = "BBOTPARLEY"
API_APP_ID = "A0PARLEY"

_counter = itertools.count(1)


def next_ts() -> str:
    """A unique, increasing Slack timestamp."""
    return f"{int(time.time())}.{next(_counter):06d}"


def sign(
    body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
    }


def envelope(event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_counter):010d}",
        "event_time": int(time.time()),
        "authorizations": [
            {"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER, "is_bot": True}
        ],
    }


def mention(
    text: str,
    *,
    channel: str = "C0HELP",
    user: str = "U0ALICE",
    ts: str | None = None,
    thread_ts: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts or next_ts(),
        "channel": channel,
        "team": TEAM,
        "event_ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    text: str,
    *,
    channel: str = "C0HELP",
    user: str = "U0ALICE",
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts or next_ts(),
        "channel": channel,
        "channel_type": channel_type,
        "team": TEAM,
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def slash_command(
    text: str,
    *,
    response_url: str,
    command: str = "/parley",
    channel: str = "C0HELP",
    user: str = "U0ALICE",
) -> bytes:
    """A slash command invocation, form-encoded as Slack posts it."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM,
            "team_domain": "acme",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "it-help",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": API_APP_ID,
            "response_url": response_url,
            "trigger_id": f"{next(_counter)}.trigger",
        }
    ).encode()


def command_headers(body: bytes) -> dict[str, str]:
    return {**sign(body), "Content-Type": "application/x-www-form-urlencoded"}


def reaction(
    name: str,
    *,
    channel: str,
    ts: str,
    user: str = "U0ALICE",
    item_user: str = BOT_USER,
    removed: bool = False,
) -> dict[str, Any]:
    return {
        "type": "reaction_removed" if removed else "reaction_added",
        "user": user,
        "reaction": name,
        "item_user": item_user,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": next_ts(),
    }
