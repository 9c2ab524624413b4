"""Teams' outbound half: write one answer into the conversation it was asked in.

The worker continues the conversation proactively from the ConversationReference the
ingress stored in `reply_to`, with a token it acquires itself (client credentials against
PARLEY_TEAMS_LOGIN_URL), through bots.teams.connector. botbuilder supplies the activity
schema.

How an answer shows while it is generated:
- personal chats ("stream"): Teams' streaming protocol. An informative typing activity at
  once (the typing indicator, "Thinking…"), whose id is the streamId; then typing
  activities with streamType "streaming" and an increasing streamSequence, each holding all
  the text so far, at most one per PARLEY_REPLY_UPDATE_INTERVAL; then a message activity
  with streamType "final". The streaming fields go both in a streaminfo entity and in
  channelData, as Teams' own SDKs send them;
- channels and group chats, which cannot stream (PARLEY_TEAMS_CHANNEL_REPLY): "update"
  posts "Thinking…" at once and edits it (update_activity) at most once per interval;
  "once" shows the typing indicator and sends the answer when it is complete.
Channel replies go to the thread: the reference's conversation id carries
`;messageid=<root>`. Answers longer than one message continue in further messages. The
messages of a complete answer carry channelData.feedbackLoopEnabled, so Teams shows its
👍/👎 buttons under them (bots.teams.inbound records the clicks).

Every message is recorded through `save_state` as soon as it exists, so a task that crashed
and runs again takes over the same messages instead of posting a second answer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import quote

from botbuilder.core import TurnContext
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    ConversationReference,
)

from bots.base import ReplyState, SaveReplyState
from bots.pacing import Pacer
from bots.shortcodes import render_shortcodes
from bots.split import split_message
from bots.teams.connector import (
    MAX_RETRIES,
    MULTI_TENANT,
    RETRY_BASE_DELAY,
    Connector,
    TeamsDeliveryError,
    Tokens,
)
from parley.settings import Settings, SettingsError

log = logging.getLogger(__name__)

Mode = Literal["stream", "update", "once"]

THINKING = "_Thinking…_"
INFORMATIVE = "Thinking…"  # the streaming progress line (at most 1000 characters)
MORE = "…"  # a message kept for a part of the answer not written yet
EMPTY = "_(no answer)_"

MESSAGE_LIMIT = 20_000
"""Characters per message. Teams refuses messages above about 100 KB counted in UTF-16
(413 MessageSizeTooBig) and advises staying under 80 KB; 20,000 characters are at most
80 KB in UTF-16 whatever the script (and about 40 KB for most text)."""

TYPING_REFRESH = 3.0  # Teams hides a typing indicator after a few seconds
# Teams ends a stream that is still open after two minutes ("Content stream finished due to
# exceeded streaming time"); before that, the answer is finalized and edited from then on.
STREAM_TIME_LIMIT = 100.0


class _Cancelled(Exception):
    pass


# -- where the answer goes -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Address:
    reference: Any  # botbuilder ConversationReference
    service_url: str
    conversation_id: str
    kind: str  # "personal" | "channel" | "groupChat"
    tenant: str | None

    @classmethod
    def parse(cls, reply_to: Mapping[str, Any]) -> _Address:
        try:
            reference = ConversationReference().deserialize(dict(reply_to))
        except Exception:  # msrest's DeserializationError
            raise TeamsDeliveryError(
                "open_reply", None, "invalid_reply_to", transient=False
            ) from None
        conversation = reference.conversation
        service_url, conversation_id = reference.service_url, getattr(conversation, "id", None)
        if not (isinstance(service_url, str) and service_url.startswith(("https://", "http://"))):
            raise TeamsDeliveryError("open_reply", None, "invalid_reply_to", transient=False)
        if not (isinstance(conversation_id, str) and conversation_id):
            raise TeamsDeliveryError("open_reply", None, "invalid_reply_to", transient=False)
        raw_conversation = reply_to.get("conversation")
        tenant = raw_conversation.get("tenantId") if isinstance(raw_conversation, dict) else None
        kind = getattr(conversation, "conversation_type", None)
        if kind not in ("personal", "channel", "groupChat"):
            kind = "groupChat" if getattr(conversation, "is_group", False) else "personal"
        return cls(
            reference,
            service_url,
            conversation_id,
            str(kind),
            tenant if isinstance(tenant, str) and tenant else None,
        )

    @property
    def where(self) -> str:
        """For logs: the conversation, never any text."""
        return f" in {self.kind} conversation {self.conversation_id}"

    def url(self, activity_id: str | None = None) -> str:
        base = self.service_url.rstrip("/")
        url = f"{base}/v3/conversations/{quote(self.conversation_id, safe='')}/activities"
        return f"{url}/{quote(activity_id, safe='')}" if activity_id else url

    def activity(
        self,
        kind: str,
        text: str | None = None,
        *,
        stream: Mapping[str, Any] | None = None,
        feedback: bool = False,
    ) -> dict[str, Any]:
        activity = Activity(type=kind, text=text, text_format="markdown" if text else None)
        activity = TurnContext.apply_conversation_reference(activity, copy.copy(self.reference))
        data = cast(dict[str, Any], activity.serialize())
        if self.tenant is not None:
            data.setdefault("conversation", {})["tenantId"] = self.tenant
        if stream is not None:
            data["entities"] = [{"type": "streaminfo", **stream}]
            data["channelData"] = dict(stream)
        if feedback:
            # Teams' own 👍/👎 buttons under the answer; a click comes back to the ingress
            # as a message/submitAction invoke naming this message.
            data.setdefault("channelData", {})["feedbackLoopEnabled"] = True
        return data


@dataclass(slots=True)
class _Part:
    """One message of the answer."""

    id: str
    streaming: bool = False  # an open stream (personal chats)
    sent: str = ""  # the text it shows, or has streamed so far
    sequence: int = 0  # the last streamSequence sent
    opened_at: float = 0.0  # loop time the stream began
    rateable: bool = False  # written with Teams' feedback buttons


def _clean(text: str) -> str:
    return text.strip()


def _split(text: str) -> list[str]:
    """The messages of an answer. Trailing blanks go: stripping keeps "extends" intact."""
    return [part for part in (p.rstrip() for p in split_message(text, MESSAGE_LIMIT)) if part]


def _render_notice(text: str) -> str:
    """A failure notice, as the pipeline writes it (with :shortcodes:)."""
    return render_shortcodes(text).strip() or MORE


# -- one reply -------------------------------------------------------------------------


class TeamsReply:
    """One answer in a conversation; see bots.base.Reply. Made by TeamsOutbound.open_reply.

    update() only records the text: a background pump writes it out at most once per
    interval, so generation never waits on Teams. An error of that pump is raised by the
    next update(); finish() and fail() write synchronously and raise their own.
    """

    def __init__(
        self,
        http: Connector,
        address: _Address,
        *,
        mode: Mode,
        update_interval: float,
        save_state: SaveReplyState,
        tasks: set[asyncio.Task[None]],
        stream_time_limit: float = STREAM_TIME_LIMIT,
    ) -> None:
        self._http = http
        self._to = address
        self._mode: Mode = mode
        self._interval = update_interval
        self._save_state = save_state
        self._stream_time_limit = stream_time_limit
        self._parts: list[_Part] = []
        self._pacer = Pacer(lambda text: self._flush(text, final=False), lambda: self._pace, tasks)
        self._closed = False
        self._cancelled = False  # the user stopped the stream
        self._finishing = False  # the complete answer is being written: people may rate it

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def message_ids(self) -> list[str]:
        # As InboundMessage.message_id: activity ids are unique within a conversation only.
        channel = self._to.conversation_id.partition(";")[0]
        return [f"{channel}:{p.id}" for p in self._parts]

    @property
    def state(self) -> ReplyState:
        """What save_state receives: enough to take the messages over after a crash."""
        return {
            "mode": self._mode,
            "parts": [{"id": p.id, "streaming": p.streaming} for p in self._parts],
        }

    # -- Reply -------------------------------------------------------------------------

    async def update(self, text: str) -> None:
        self._pacer.request(_clean(text))

    async def finish(self, text: str) -> None:
        if self._closed:
            return
        await self._pacer.quiesce()
        self._finishing = True
        await self._flush(_clean(text), final=True)
        self._closed = True

    async def fail(self, text: str) -> None:
        if self._closed:
            return
        await self._pacer.quiesce()
        self._finishing = False  # a notice is not an answer to rate
        if not self._cancelled:
            if self._mode == "stream":
                self._mode = "update"  # _write closes the stream with the notice
            await self._write([_render_notice(text)], final=True)
        self._closed = True

    # -- opening -----------------------------------------------------------------------

    async def _start(self) -> None:
        """Show progress at once: a stream's informative update (the typing indicator of
        personal chats), a placeholder message, or a typing indicator."""
        if self._mode == "stream":
            try:
                await self._start_stream(INFORMATIVE, informative=True)
            except TeamsDeliveryError as exc:
                if not exc.stream_refused:
                    raise
                log.info("streaming refused%s: editing a message instead", self._to.where)
                self._mode = "update"
        if self._mode == "update":
            await self._post(THINKING)
        elif self._mode == "once":
            await self._typing()
        self._pacer.wrote()

    async def _take_over(self, parts: list[_Part]) -> None:
        """Reuse the messages of a crashed attempt: end their streams, show a placeholder."""
        if self._mode == "stream":
            self._mode = "update"
        self._parts = parts
        if self._mode == "once":
            # Parts of a complete answer were being sent; finish() rewrites them.
            await self._typing(quiet=True)
            return
        kept: list[_Part] = []
        for part in parts:
            try:
                await self._show(part, THINKING if not kept else MORE)
            except TeamsDeliveryError as exc:
                if exc.status != 404:
                    raise
                log.info("message %s of a crashed reply is gone", part.id)
                continue
            kept.append(part)
        self._parts = kept
        await self._save()
        if not kept:
            await self._start()
        self._pacer.wrote()

    # -- writing -----------------------------------------------------------------------

    @property
    def _pace(self) -> float:
        """Seconds between two writes: the update interval, or the typing refresh."""
        return TYPING_REFRESH if self._mode == "once" else self._interval

    async def _flush(self, text: str, *, final: bool) -> None:
        self._pacer.wrote()
        if self._cancelled:
            self._pacer.flushed = text
            return
        try:
            if self._mode == "stream" and not text.startswith(self._pacer.flushed):
                # A retried generation restarted: streams only grow, so edit instead.
                log.info("reply restarted%s: replacing by update_activity", self._to.where)
                await self._leave_stream()
            elif self._mode == "stream" and self._stream_too_old():
                log.info("long answer%s: ending the stream, editing from now on", self._to.where)
                self._mode = "update"  # _write ends the stream with the text so far
            contents = _split(text) or ([EMPTY] if final else [])
            if self._mode == "stream":
                await self._flush_stream(contents, final=final)
            elif self._mode == "update" or final:
                await self._write(contents, final=final)
            else:
                await self._typing(quiet=True)
        except _Cancelled:
            log.info("the user stopped the answer%s", self._to.where)
            self._cancelled = True
        self._pacer.flushed = text

    async def _flush_stream(self, contents: list[str], *, final: bool) -> None:
        for i, content in enumerate(contents):
            finished = final or i < len(contents) - 1
            if i >= len(self._parts):
                if finished:
                    await self._post(content)
                else:
                    await self._start_stream(content)
                continue
            part = self._parts[i]
            if not part.streaming:
                if self._stale(part, content, last=i == len(contents) - 1):
                    await self._edit(part, content)
            elif not content.startswith(part.sent):
                # The split fell before the end of what this part already streamed.
                await self._show(part, content)
            elif finished:
                await self._final(part, content)
            elif content != part.sent:
                await self._chunk(part, content)
        if final and len(self._parts) > len(contents):
            await self._drop(self._parts[len(contents) :])

    async def _write(self, contents: list[str], *, final: bool) -> None:
        """Make the messages show `contents`, one per message, by posts and edits."""
        for i in range(max(len(contents), len(self._parts))):
            if i < len(contents):
                text = contents[i]
            elif final:
                break
            else:
                text = THINKING if i == 0 else MORE
            if i >= len(self._parts):
                await self._post(text)
            elif self._parts[i].streaming or self._stale(
                self._parts[i], text, last=i == len(contents) - 1
            ):
                await self._show(self._parts[i], text)
        if final and len(self._parts) > len(contents):
            await self._drop(self._parts[len(contents) :])

    async def _show(self, part: _Part, text: str) -> None:
        """Make one message show `text`, ending its stream if it has one."""
        if part.streaming:
            if text.startswith(part.sent):
                await self._final(part, text)
                return
            # A stream may only grow; close it as it is, then edit it.
            await self._final(part, part.sent or THINKING)
        if part.sent != text or (self._finishing and not part.rateable):
            await self._edit(part, text)

    def _stale(self, part: _Part, text: str, *, last: bool) -> bool:
        """Whether a message must be written again: its text changed, or it ends the
        complete answer and does not show the feedback buttons yet."""
        return part.sent != text or (last and self._finishing and not part.rateable)

    def _stream_too_old(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(p.streaming and now - p.opened_at > self._stream_time_limit for p in self._parts)

    async def _leave_stream(self) -> None:
        for part in self._parts:
            if part.streaming:
                await self._final(part, part.sent or THINKING)
        self._mode = "update"

    # -- Bot Connector calls -----------------------------------------------------------

    async def _send(self, op: str, activity: dict[str, Any]) -> dict[str, Any]:
        return await self._http.request(
            op, "POST", self._to.url(), payload=activity, where=self._to.where
        )

    async def _start_stream(self, text: str, *, informative: bool = False) -> None:
        stream = {"streamType": "informative" if informative else "streaming", "streamSequence": 1}
        body = await self._send(
            "stream", self._to.activity(ActivityTypes.typing, text, stream=stream)
        )
        part = _Part(
            _id(body, "stream"),
            streaming=True,
            sent="" if informative else text,
            sequence=1,
            opened_at=asyncio.get_running_loop().time(),
        )
        await self._record(part)

    async def _chunk(self, part: _Part, text: str) -> None:
        stream = {
            "streamId": part.id,
            "streamType": "streaming",
            "streamSequence": part.sequence + 1,
        }
        try:
            await self._send("stream", self._to.activity(ActivityTypes.typing, text, stream=stream))
        except TeamsDeliveryError as exc:
            await self._stream_ended(part, exc, text)
            return
        part.sequence += 1
        part.sent = text

    async def _final(self, part: _Part, text: str) -> None:
        stream = {"streamId": part.id, "streamType": "final"}
        activity = self._to.activity(
            ActivityTypes.message, text, stream=stream, feedback=self._finishing
        )
        try:
            await self._send("stream", activity)
        except TeamsDeliveryError as exc:
            await self._stream_ended(part, exc, text)
            return
        part.streaming = False
        part.sent = text
        part.rateable = self._finishing

    async def _stream_ended(self, part: _Part, exc: TeamsDeliveryError, text: str) -> None:
        """A stream Teams no longer takes: stopped by the user (the answer ends there),
        already completed (a crashed attempt's final went out) or past Teams' two-minute
        limit. In the last two cases the message is edited from now on."""
        if exc.stream_cancelled:
            part.streaming = False
            raise _Cancelled from exc
        if not exc.stream_refused:
            raise exc
        log.info("stream %s ended by Teams (%s)%s", part.id, exc.detail, self._to.where)
        part.streaming = False
        if self._mode == "stream":
            self._mode = "update"
        await self._edit(part, text)

    def _message(self, text: str) -> dict[str, Any]:
        return self._to.activity(ActivityTypes.message, text, feedback=self._finishing)

    async def _post(self, text: str) -> None:
        body = await self._send("send", self._message(text))
        await self._record(_Part(_id(body, "send"), sent=text, rateable=self._finishing))

    async def _edit(self, part: _Part, text: str) -> None:
        try:
            await self._http.request(
                "update",
                "PUT",
                self._to.url(part.id),
                payload={**self._message(text), "id": part.id},
                where=self._to.where,
            )
        except TeamsDeliveryError as exc:
            if exc.status not in (403, 404):
                raise
            # Deleted by someone, or an ended stream that cannot be edited: send anew.
            log.info("message %s cannot be edited (%s): sending it again", part.id, exc.status)
            body = await self._send("send", self._message(text))
            part.id = _id(body, "send")
            await self._save()
        part.sent = text
        part.rateable = self._finishing

    async def _typing(self, *, quiet: bool = False) -> None:
        try:
            await self._send("typing", self._to.activity(ActivityTypes.typing))
        except TeamsDeliveryError:
            if not quiet:
                raise

    async def _drop(self, leftovers: list[_Part]) -> None:
        """Delete messages the answer no longer needs. They are forgotten first: a crash in
        between leaves a stray message rather than a state naming a deleted one."""
        self._parts = self._parts[: len(self._parts) - len(leftovers)]
        await self._save()
        for part in leftovers:
            try:
                await self._http.request(
                    "delete", "DELETE", self._to.url(part.id), where=self._to.where
                )
            except TeamsDeliveryError as exc:
                if exc.status != 404:
                    raise

    async def _record(self, part: _Part) -> None:
        self._parts.append(part)
        await self._save()

    async def _save(self) -> None:
        await self._save_state(self.state)


def _id(body: Mapping[str, Any], op: str) -> str:
    activity_id = body.get("id")
    if not isinstance(activity_id, str) or not activity_id:
        raise TeamsDeliveryError(op, 200, "no_id_in_response")
    return activity_id


def _parse_state(state: ReplyState | None) -> list[_Part] | None:
    """The messages a crashed attempt left, or None to start afresh."""
    if not state:
        return None
    raw = state.get("parts")
    if not isinstance(raw, list):
        log.warning("ignoring a malformed Teams reply state")
        return None
    parts: list[_Part] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            log.warning("ignoring a malformed Teams reply state")
            return None
        parts.append(_Part(item["id"], streaming=bool(item.get("streaming", False))))
    return parts or None


# -- the outbound half -----------------------------------------------------------------


class TeamsOutbound:
    """Opens replies in Teams conversations through one HTTP session and token cache."""

    def __init__(
        self,
        tokens: Tokens | None,
        *,
        channel_reply: Literal["update", "once"] = "update",
        update_interval: float = 1.0,
        max_retries: int = MAX_RETRIES,
        retry_base_delay: float = RETRY_BASE_DELAY,
        stream_time_limit: float = STREAM_TIME_LIMIT,
    ) -> None:
        self._http = Connector(tokens, max_retries=max_retries, base_delay=retry_base_delay)
        self._stream_time_limit = stream_time_limit
        self._channel_reply: Literal["update", "once"] = channel_reply
        self._interval = update_interval
        self._pumps: set[asyncio.Task[None]] = set()

    async def open_reply(
        self,
        reply_to: Mapping[str, Any],
        resume: ReplyState | None,
        save_state: SaveReplyState,
    ) -> TeamsReply:
        address = _Address.parse(reply_to)
        reply = TeamsReply(
            self._http,
            address,
            mode="stream" if address.kind == "personal" else self._channel_reply,
            update_interval=self._interval,
            save_state=save_state,
            tasks=self._pumps,
            stream_time_limit=self._stream_time_limit,
        )
        parts = _parse_state(resume)
        if parts is None:
            await reply._start()
        else:
            await reply._take_over(parts)
        return reply

    async def aclose(self) -> None:
        for pump in list(self._pumps):
            pump.cancel()
        if self._pumps:
            await asyncio.wait(list(self._pumps))
        await self._http.aclose()


def create_outbound(
    settings: Settings, *, stream_time_limit: float = STREAM_TIME_LIMIT
) -> TeamsOutbound:
    return TeamsOutbound(
        create_tokens(settings),
        channel_reply=settings.teams_channel_reply,
        update_interval=settings.reply_update_interval,
        stream_time_limit=stream_time_limit,
    )


def create_tokens(settings: Settings) -> Tokens | None:
    """The bot's own Bot Connector tokens (None for the Emulator without an app id)."""
    tokens: Tokens | None = None
    if settings.microsoft_app_type == "UserAssignedMSI":
        raise SettingsError(
            "MicrosoftAppType=UserAssignedMSI is not supported yet: use SingleTenant (or "
            "MultiTenant) with MicrosoftAppPassword."
        )
    if settings.microsoft_app_id:
        password = settings.microsoft_app_password
        if password is None:
            raise SettingsError("MicrosoftAppPassword not set: the worker needs it to answer.")
        if settings.microsoft_app_type == "SingleTenant":
            tenant = settings.microsoft_app_tenant_id
            if not tenant:
                raise SettingsError("MicrosoftAppTenantId not set for a SingleTenant bot.")
        else:
            tenant = MULTI_TENANT
        login = settings.teams_login_url.rstrip("/")
        tokens = Tokens(
            f"{login}/{quote(tenant, safe='')}/oauth2/v2.0/token",
            settings.microsoft_app_id,
            password.get_secret_value(),
        )
    elif not settings.teams_allow_anonymous:
        raise SettingsError("MicrosoftAppId not set: the worker needs it to answer in Teams.")
    return tokens
