"""Admin commands in Teams: `config …` in a personal chat, `@Parley config …` in a channel
or group chat. Teams has no slash commands for bots; the app manifest lists these as the
bot's commands, which Teams offers as people type.

The webhook is acknowledged at once; the command runs in a background task and its answer
is sent privately where Teams allows it: in a personal chat as a reply there, elsewhere in
a 1:1 chat the bot opens with the person (POST /v3/conversations). Teams refuses that chat
(403) when the person has not installed Parley for themselves; the answer then goes to
the thread the command was typed in, with a note saying why it is not private.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from bots.base import CommandCall, Commands
from bots.shortcodes import render_shortcodes
from bots.teams.connector import Connector, TeamsDeliveryError, Tokens

log = logging.getLogger(__name__)

PLATFORM = "teams"
COMMAND = "config"
FAILED = (
    ":warning: Sorry, that command failed on my side. Please try again; if it persists, tell "
    "your Parley admin."
)
NOT_PRIVATE = (
    "_I could not write to you in a 1:1 chat, so I answer here. To get these answers "
    "privately, add Parley for yourself (Apps → Parley → Add)._"
)
# Teams retries a delivery it thinks failed; a command must not run twice (an audit entry,
# "already an admin"). Kept in memory: a retry reaches the same ingress in practice.
SEEN_MAX = 2048
SEEN_SECONDS = 600.0

_COMMAND = re.compile(rf"{COMMAND}(?:\s+(.*))?", re.IGNORECASE | re.DOTALL)
_AT = re.compile(r"<at\b[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_MENTION_TOKEN = re.compile(r"<@([^<>\s]+)>")
_REPEATED_TOKEN = re.compile(r"(<@[^<>\s]+>)(?:\s*\1)+")
_ANCHOR = re.compile(r"<a\b[^>]*?\bhref=\"([^\"]*)\"[^>]*>.*?</a>", re.IGNORECASE | re.DOTALL)
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\u00a0]+")
_MESSAGE_PATH = re.compile(r"/l/message/(?P<conversation>[^/]+)/(?P<message>[^/]+)/?")
_CHANNEL_SUFFIXES = ("@thread.tacv2", "@thread.skype")


# -- reading a command -------------------------------------------------------------------


def mark_mentions(text: str, entities: object, bot_ids: set[str]) -> str:
    """Other people's mentions as `<@id>` tokens (their mention entity's id) that
    resolve_user reads, so that `admins add @Dana Smith` is one word. The bot's own
    mentions are left for inbound.strip_mentions."""
    for entity in entities if isinstance(entities, list) else []:
        if not isinstance(entity, dict) or str(entity.get("type", "")).lower() != "mention":
            continue
        who, written = entity.get("mentioned"), entity.get("text")
        if not isinstance(who, dict) or not isinstance(written, str) or not written:
            continue
        member = who.get("id")
        if (
            isinstance(member, str)
            and member not in bot_ids
            and _MENTION_TOKEN.fullmatch(f"<@{member}>")
        ):
            text = text.replace(written, f" <@{member}> ", 1)
    return text


def parse_command(text: str) -> str | None:
    """The words after `config` when the message (the bot's mention removed) is a command,
    else None. Teams writes a person's mention as one tag per name part, all for the same
    id: their tokens become one."""
    text = _ANCHOR.sub(lambda m: f" {m.group(1)} ", text)  # a pasted link, as HTML
    text = _REPEATED_TOKEN.sub(r"\1", html.unescape(text))
    lines = [_SPACES.sub(" ", line).strip() for line in text.strip().splitlines()]
    match = _COMMAND.fullmatch("\n".join(lines).strip())
    if match is None:
        return None
    return (match.group(1) or "").strip()


def bot_name(entities: object, bot_ids: set[str]) -> str | None:
    """The name people mentioned the bot by, which is how they type commands here."""
    for entity in entities if isinstance(entities, list) else []:
        if not isinstance(entity, dict) or str(entity.get("type", "")).lower() != "mention":
            continue
        who = entity.get("mentioned")
        if isinstance(who, dict) and who.get("id") in bot_ids:
            name = who.get("name")
            if isinstance(name, str) and name.strip():
                return name.strip()
            written = entity.get("text")
            if isinstance(written, str) and (match := _AT.fullmatch(written.strip())):
                return match.group(1).strip() or None
    return None


def parse_thread_link(link: str) -> tuple[str, str] | None:
    """(channel, thread) of a Teams message link ("Copy link" on a message):
    https://teams.microsoft.com/l/message/<conversation id>/<message id>?…, the conversation
    id often URL-encoded. A reply's link names its thread root in parentMessageId; a link
    into a group chat (context {"contextType": "chat"}) names the chat, its only thread."""
    try:
        url = urlsplit(link.strip().strip("<>"))
    except ValueError:
        return None
    match = _MESSAGE_PATH.fullmatch(url.path)
    if url.scheme != "https" or not url.hostname or match is None:
        return None
    conversation = unquote(match["conversation"]).partition(";")[0].strip()
    message = unquote(match["message"]).strip()
    if not conversation or not message:
        return None
    query = parse_qs(url.query)
    if _is_chat(conversation, query):
        return conversation, conversation
    parent = (query.get("parentMessageId") or [""])[0].strip()
    return conversation, parent if parent and parent != "0" else message


def _is_chat(conversation: str, query: Mapping[str, list[str]]) -> bool:
    context = (query.get("context") or [""])[0]
    try:
        data = json.loads(context) if context else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("contextType"), str):
        return bool(data["contextType"].lower() == "chat")
    return not conversation.lower().endswith(_CHANNEL_SUFFIXES)


# -- what commands ask of Teams ----------------------------------------------------------


class TeamsCommandPlatform:
    """bots.base.CommandPlatform for Teams."""

    def __init__(self, http: Connector, service_url: str, roster: str) -> None:
        self._http = http
        self._service_url = service_url
        self._roster = roster  # where members are looked up: the team, or the chat
        self._names: dict[str, str] = {}

    async def is_platform_admin(self, user: str) -> bool:
        # Teams' owners and tenant admins are only visible through Microsoft Graph, which
        # this bot does not call: admins come from PARLEY_ADMINS and `config admins`.
        return False

    async def resolve_user(self, token: str) -> str | None:
        """A mention (made a `<@29:…>` token by command_text) or a bare Azure AD object id.
        A mention's id is the Teams user id; its aadObjectId is what Incoming.user holds."""
        token = token.strip()
        if _GUID.fullmatch(token):
            return token.lower()
        match = _MENTION_TOKEN.fullmatch(token)
        if match is None:
            return None
        member = match.group(1)
        url = (
            f"{self._service_url.rstrip('/')}/v3/conversations/"
            f"{quote(self._roster, safe='')}/members/{quote(member, safe='')}"
        )
        try:
            found = await self._http.request("member", "GET", url)
        except TeamsDeliveryError as exc:
            log.warning("could not look up a mentioned member: %s", exc)
            return None
        aad, name = found.get("aadObjectId"), found.get("name")
        user = aad if isinstance(aad, str) and aad else member
        if isinstance(name, str) and name.strip():
            self._names[user] = name.strip()
        return user

    def parse_thread_link(self, link: str) -> tuple[str, str] | None:
        return parse_thread_link(link)

    def show_user(self, user: str) -> str:
        # A real mention needs an entity in the reply; a name (when a command looked the
        # person up) and the id do here.
        name = self._names.get(user)
        return f"{name} (`{user}`)" if name else f"`{user}`"


# -- running and answering ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command and everything needed to answer it, read from its activity."""

    call: CommandCall
    kind: str  # "personal" | "channel" | "groupChat"
    service_url: str
    conversation_id: str  # as the activity had it: a channel thread keeps ;messageid=
    activity_id: str
    roster: str  # conversation whose members resolve_user looks up
    bot: dict[str, Any]  # the bot's account (id, name) as the activity named it
    sender: str  # the person's Teams id (29:…), for the 1:1 chat

    @property
    def key(self) -> str:
        return f"{self.call.tenant}:{self.call.channel}:{self.activity_id}"


class TeamsCommandRunner:
    """Runs commands in the background and sends their answers; keeps its tasks referenced
    so that they are not collected mid-way."""

    def __init__(self, commands: Commands, tokens: Tokens | None) -> None:
        self._commands = commands
        self._tokens = tokens
        self._pending: set[asyncio.Task[None]] = set()
        self._seen: OrderedDict[str, float] = OrderedDict()

    def start(self, request: CommandRequest) -> bool:
        """Schedule the command; False when this activity was already run."""
        now = time.monotonic()
        while self._seen and (
            len(self._seen) >= SEEN_MAX or next(iter(self._seen.values())) < now - SEEN_SECONDS
        ):
            self._seen.popitem(last=False)
        if request.key in self._seen:
            return False
        self._seen[request.key] = now
        task = asyncio.create_task(self._run(request))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def join(self) -> None:
        """Wait for the commands in flight (tests, shutdown)."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    async def _run(self, request: CommandRequest) -> None:
        http = Connector(self._tokens)
        where = f" in {request.kind} conversation {request.call.channel}"
        try:
            platform = TeamsCommandPlatform(http, request.service_url, request.roster)
            try:
                answer = await self._commands.run(request.call, platform)
            except Exception:
                log.exception("admin command failed%s", where)
                answer = FAILED
            await self._answer(http, request, render_shortcodes(answer))
        except TeamsDeliveryError as exc:
            log.warning("could not send a command's answer%s: %s", where, exc)
        except Exception:
            log.exception("could not send a command's answer%s", where)
        finally:
            await http.aclose()

    async def _answer(self, http: Connector, request: CommandRequest, text: str) -> None:
        if request.kind == "personal":
            await self._reply_in_place(http, request, text)
            return
        try:
            await self._send_privately(http, request, text)
        except TeamsDeliveryError as exc:
            if exc.status not in (403, 404):
                raise
            log.info(
                "no 1:1 chat with the user (%s): answering the command in its conversation",
                exc.status,
            )
            await self._reply_in_place(http, request, f"{NOT_PRIVATE}\n\n{text}")

    async def _reply_in_place(self, http: Connector, request: CommandRequest, text: str) -> None:
        conversation = {"id": request.conversation_id}
        url = _activities_url(request.service_url, request.conversation_id, request.activity_id)
        activity = _message(text, request.bot, conversation, reply_to=request.activity_id)
        await http.request("send", "POST", url, payload=activity)

    async def _send_privately(self, http: Connector, request: CommandRequest, text: str) -> None:
        tenant = request.call.tenant
        created = await http.request(
            "create_conversation",
            "POST",
            f"{request.service_url.rstrip('/')}/v3/conversations",
            payload={
                "bot": {"id": request.bot.get("id")},
                "members": [{"id": request.sender}],
                "channelData": {"tenant": {"id": tenant}},
                "tenantId": tenant,
                "isGroup": False,
            },
        )
        conversation_id = created.get("id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise TeamsDeliveryError("create_conversation", 200, "no_id_in_response")
        conversation = {"id": conversation_id, "conversationType": "personal", "tenantId": tenant}
        url = _activities_url(request.service_url, conversation_id)
        await http.request("send", "POST", url, payload=_message(text, request.bot, conversation))


def _activities_url(service_url: str, conversation_id: str, reply_to: str | None = None) -> str:
    url = f"{service_url.rstrip('/')}/v3/conversations/{quote(conversation_id, safe='')}/activities"
    return f"{url}/{quote(reply_to, safe='')}" if reply_to else url


def _message(
    text: str, bot: Mapping[str, Any], conversation: dict[str, Any], *, reply_to: str | None = None
) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": "message",
        "text": text,
        "textFormat": "markdown",
        "from": {k: v for k, v in bot.items() if k in ("id", "name") and isinstance(v, str)},
        "conversation": conversation,
    }
    if reply_to:
        activity["replyToId"] = reply_to
    return activity
