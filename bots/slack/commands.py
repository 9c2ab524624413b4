"""The /parley slash command: answered ephemerally within Slack's 3 seconds.

A command that takes longer (a slow model server behind `status`, a large `forget me`) is
acknowledged with "working on it" and its answer follows through the response_url, which
Slack accepts for 30 minutes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.base import CommandCall, Commands
from bots.slack.mrkdwn import to_mrkdwn

log = logging.getLogger(__name__)

PLATFORM = "slack"
# Slack waits 3 s for the acknowledgement; keep a margin for the network.
ACK_SECONDS = 2.0
ADMIN_CACHE_SECONDS = 300.0
WORKING = ":hourglass_flowing_sand: Working on it…"
FAILED = (
    ":warning: Sorry, that command failed on my side. Please try again; if it persists, tell "
    "your Parley admin."
)

_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_BARE_USER = re.compile(r"[UW][A-Z0-9]{5,}")
_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]+)&gt;")
_LINK = re.compile(r"<((?:https?|mailto):[^|>\s]+)(?:\|[^>]*)?>")
_CHANNEL = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_MESSAGE_LINK = re.compile(
    r"https://[^/\s]+/archives/(?P<channel>[CDG][A-Z0-9]+)/p(?P<sec>\d{10})(?P<frac>\d{6})"
    r"(?:\?(?P<query>\S*))?"
)
_THREAD_TS = re.compile(r"(?:^|&)thread_ts=(\d{10}\.\d{6})")


class SlackCommandPlatform:
    """bots.base.CommandPlatform for Slack."""

    def __init__(self, client: AsyncWebClient, admin_cache: dict[str, tuple[bool, float]]):
        self._client = client
        self._admin_cache = admin_cache

    async def is_platform_admin(self, user: str) -> bool:
        cached = self._admin_cache.get(user)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            response = await self._client.users_info(user=user)
        except SlackApiError as exc:
            log.warning("users.info failed (%s): treating the user as no workspace admin", exc)
            return False
        info = response.get("user") or {}
        admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        self._admin_cache[user] = (admin, time.monotonic() + ADMIN_CACHE_SECONDS)
        return admin

    async def resolve_user(self, token: str) -> str | None:
        if match := _USER.fullmatch(token):
            return match.group(1)
        if _BARE_USER.fullmatch(token):
            return token
        return None

    def parse_thread_link(self, link: str) -> tuple[str, str] | None:
        match = _MESSAGE_LINK.fullmatch(link.strip("<>").partition("|")[0])
        if match is None:
            return None
        ts = f"{match['sec']}.{match['frac']}"
        # A link to a reply names its thread in thread_ts.
        parent = _THREAD_TS.search(html.unescape(match["query"] or ""))
        return match["channel"], parent.group(1) if parent else ts

    def show_user(self, user: str) -> str:
        return f"<@{user}>"


def command_text(raw: str) -> str:
    """Slack escapes the command text (should_escape: true): links and channels become
    readable again, user mentions stay `<@U…>` for resolve_user, &amp; &lt; &gt; decode."""
    text = _LINK.sub(lambda m: m.group(1), raw)
    text = _CHANNEL.sub(lambda m: f"#{m.group(2) or m.group(1)}", text)
    return html.unescape(text)


def render(markdown: str) -> str:
    """The reply as mrkdwn; user mentions made by the commands stay mentions."""
    return _ESCAPED_MENTION.sub(r"<@\1>", to_mrkdwn(markdown))


def register_commands(app: AsyncApp, command: str, commands: Commands) -> None:
    admin_cache: dict[str, tuple[bool, float]] = {}
    pending: set[asyncio.Task[None]] = set()

    @app.command(command)
    async def on_command(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        channel = str(body.get("channel_id") or "")
        call = CommandCall(
            platform=PLATFORM,
            tenant=str(body.get("team_id") or "unknown"),
            channel=channel,
            user=str(body.get("user_id") or ""),
            text=command_text(str(body.get("text") or "")),
            prefix=command,
            direct=channel.startswith("D") or body.get("channel_name") == "directmessage",
        )
        if not call.channel or not call.user:
            await ack(response_type="ephemeral", text=FAILED)
            return
        running = asyncio.ensure_future(
            commands.run(call, SlackCommandPlatform(client, admin_cache))
        )
        done, _ = await asyncio.wait({running}, timeout=ACK_SECONDS)
        if running in done:
            await ack(response_type="ephemeral", text=_outcome(running))
            return
        await ack(response_type="ephemeral", text=WORKING)

        async def finish() -> None:
            await asyncio.wait({running})
            try:
                await respond(response_type="ephemeral", text=_outcome(running))
            except Exception as exc:
                log.warning("could not send a command's answer to its response_url: %r", exc)

        later = asyncio.create_task(finish())
        pending.add(later)
        later.add_done_callback(pending.discard)


def _outcome(task: asyncio.Future[str]) -> str:
    exc = task.exception()
    if exc is not None:
        log.error("admin command failed: %r", exc, exc_info=exc)
        return FAILED
    return render(task.result())
