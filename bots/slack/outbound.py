"""Slack's outbound half: write one answer into the thread it was asked in.

Two ways to show an answer while it is generated (PARLEY_SLACK_REPLY_MODE):
- "stream": chat.startStream / appendStream / stopStream, Markdown rendered by Slack;
- "update": a "Thinking…" placeholder edited with chat.update, Markdown converted to mrkdwn.
Answers longer than one message continue in further messages (bots.split).

Every message is recorded through `save_state` as soon as it exists, so a task that crashed
and runs again takes over the same messages instead of posting a second answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bots.base import DeliveryError, ReplyState, SaveReplyState
from bots.pacing import Pacer
from bots.slack.mrkdwn import to_mrkdwn
from bots.split import split_message
from parley.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# slack_sdk logs whole request bodies (message text) at DEBUG; its logger stays above that.
_SDK_LOG = logging.getLogger(f"{__name__}.sdk")
_SDK_LOG.setLevel(logging.INFO)

Mode = Literal["stream", "update"]

THINKING = "_Thinking…_"
MORE = "…"  # a message kept for a part of the answer not written yet
EMPTY = "_(no answer)_"
HTTP_TIMEOUT = 30.0

TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "connection_error",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
# Stopping a stream that already ended (or whose message is gone) has nothing left to do.
_ALREADY_STOPPED = frozenset({"message_not_in_streaming_state", "message_not_found"})


class SlackDeliveryError(DeliveryError):
    """A Slack Web API call failed for good (retries for 429 and connection errors are
    already spent). `error` is Slack's error code, e.g. channel_not_found."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error

    @property
    def retryable(self) -> bool:
        """True when trying the whole reply again later may succeed."""
        return self.error in TRANSIENT_ERRORS


Send = Callable[[AsyncWebClient], Awaitable[AsyncSlackResponse]]


class _Web:
    """The one AsyncWebClient, its HTTP session, and Slack errors turned into ours."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _ready(self) -> AsyncWebClient:
        # A session belongs to one event loop; it is made in the loop that uses it.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
            self._session_loop = loop
            self.client.session = self._session
        return self.client

    async def call(
        self,
        method: str,
        send: Send,
        *,
        channel: str,
        quiet: frozenset[str] = frozenset(),
    ) -> AsyncSlackResponse:
        try:
            return await send(self._ready())
        except SlackApiError as exc:
            error = _error_code(exc)
            if error not in quiet:
                log.warning("Slack %s failed in channel %s: %s", method, channel, error)
            raise SlackDeliveryError(method, error) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack %s failed in channel %s: %s", method, channel, type(exc).__name__)
            raise SlackDeliveryError(method, "connection_error") from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        self.client.session = None
        if session is not None and self._session_loop is asyncio.get_running_loop():
            await session.close()


def _error_code(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    status = getattr(exc.response, "status_code", None)
    return "ratelimited" if status == 429 else f"http_{status}"


@dataclass(frozen=True, slots=True)
class _Address:
    channel: str
    thread_ts: str
    team: str | None
    user: str | None

    @classmethod
    def parse(cls, reply_to: Mapping[str, Any]) -> _Address:
        channel, thread_ts = reply_to.get("channel"), reply_to.get("thread_ts")
        if not (isinstance(channel, str) and channel and isinstance(thread_ts, str) and thread_ts):
            raise SlackDeliveryError("open_reply", "invalid_reply_to")
        team, user = reply_to.get("team"), reply_to.get("user")
        return cls(
            channel,
            thread_ts,
            team if isinstance(team, str) and team else None,
            user if isinstance(user, str) and user else None,
        )


@dataclass(slots=True)
class _Part:
    """One message of the answer."""

    ts: str
    streaming: bool = False
    sent: str = ""  # Markdown that went in through startStream/appendStream/stopStream
    shown: str | None = None  # mrkdwn written by postMessage/update; None: `sent` shows


def _clean(text: str) -> str:
    # Stripping keeps "extends" intact: the strip of a prefix is a prefix of the strip.
    return text.strip()


def _render(markdown: str) -> str:
    return to_mrkdwn(markdown).rstrip() or MORE


class SlackReply:
    """One answer in a thread; see bots.base.Reply. Made by SlackOutbound.open_reply.

    update() only records the text: a background pump writes it out at most once per
    `update_interval`, so generation never waits on Slack. An error of that pump is raised
    by the next update(); finish() and fail() write synchronously and raise their own.
    """

    def __init__(
        self,
        web: _Web,
        address: _Address,
        *,
        mode: Mode,
        update_interval: float,
        save_state: SaveReplyState,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self._web = web
        self._to = address
        self._mode: Mode = mode
        self._interval = update_interval
        self._save_state = save_state
        self._parts: list[_Part] = []
        self._pacer = Pacer(
            lambda text: self._flush(text, final=False), lambda: self._interval, tasks
        )
        self._closed = False

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def message_ids(self) -> list[str]:
        # As InboundMessage.message_id: a ts is unique within its channel only.
        return [f"{self._to.channel}:{p.ts}" for p in self._parts]

    @property
    def state(self) -> ReplyState:
        """What save_state receives: enough to take the messages over after a crash."""
        return {
            "mode": self._mode,
            "parts": [{"ts": p.ts, "streaming": p.streaming} for p in self._parts],
        }

    # -- Reply -------------------------------------------------------------------------

    async def update(self, text: str) -> None:
        self._pacer.request(_clean(text))

    async def finish(self, text: str) -> None:
        if self._closed:
            return
        await self._pacer.quiesce()
        await self._flush(_clean(text), final=True)
        self._closed = True

    async def fail(self, text: str) -> None:
        if self._closed:
            return
        await self._pacer.quiesce()
        await self._to_update_mode()
        await self._write([_render(text)], final=True)
        self._closed = True

    # -- opening -----------------------------------------------------------------------

    async def _start(self) -> None:
        """Show progress at once: an empty stream, or a placeholder message."""
        if self._mode == "stream" and (self._to.team is None or self._to.user is None):
            # Slack streams to a recipient; without one, fall back to edits.
            log.info("no recipient in reply_to for channel %s: using chat.update", self._to.channel)
            self._mode = "update"
        if self._mode == "stream":
            # An empty stream shows no text: the first text goes out as soon as it exists.
            await self._start_stream("")
        else:
            await self._post_text(THINKING)
            self._pacer.wrote()

    async def _take_over(self, parts: list[_Part]) -> None:
        """Reuse the messages of a crashed attempt: end their streams, show a placeholder."""
        self._mode = "update"
        self._parts = parts
        for part in parts:
            if part.streaming:
                await self._stop(part)
        kept: list[_Part] = []
        for part in parts:
            try:
                await self._edit(part, THINKING if not kept else MORE)
            except SlackDeliveryError as exc:
                if exc.error != "message_not_found":
                    raise
                log.info("message %s of a crashed reply is gone", part.ts)
                continue
            kept.append(part)
        self._parts = kept
        await self._save()
        if not kept:
            await self._start()
        self._pacer.wrote()

    # -- writing -----------------------------------------------------------------------

    async def _flush(self, text: str, *, final: bool) -> None:
        self._pacer.wrote()
        if self._mode == "stream" and not text.startswith(self._pacer.flushed):
            # A retried generation restarted: streams only append, so edit instead.
            log.info("reply in channel %s restarted: replacing by chat.update", self._to.channel)
            await self._to_update_mode()
        contents = split_message(text) or ([EMPTY] if final else [])
        if self._mode == "stream":
            await self._flush_stream(contents, final=final)
        else:
            await self._write([_render(c) for c in contents], final=final)
        self._pacer.flushed = text

    async def _flush_stream(self, contents: list[str], *, final: bool) -> None:
        for i, content in enumerate(contents):
            finished = final or i < len(contents) - 1
            if i >= len(self._parts):
                await (self._post_markdown(content) if finished else self._start_stream(content))
                continue
            part = self._parts[i]
            if part.streaming:
                if content.startswith(part.sent):
                    await self._append(part, content[len(part.sent) :], stop=finished)
                    continue
                # The split fell before the end of what this part already streamed.
                await self._stop(part)
            if part.shown is not None or part.sent != content:
                await self._edit_markdown(part, content)
        if final and len(self._parts) > len(contents):
            await self._drop(self._parts[len(contents) :])

    async def _write(self, rendered: list[str], *, final: bool) -> None:
        """Make the messages show `rendered` (mrkdwn), one per message, by edits."""
        for i in range(max(len(rendered), len(self._parts))):
            if i < len(rendered):
                text = rendered[i]
            elif final:
                break
            else:
                text = THINKING if i == 0 else MORE
            if i >= len(self._parts):
                await self._post_text(text)
                continue
            part = self._parts[i]
            if part.streaming:
                await self._stop(part)
            if part.shown != text:
                await self._edit(part, text)
        if final and len(self._parts) > len(rendered):
            await self._drop(self._parts[len(rendered) :])

    async def _to_update_mode(self) -> None:
        for part in self._parts:
            if part.streaming:
                await self._stop(part)
        self._mode = "update"

    # -- Slack calls -------------------------------------------------------------------

    async def _start_stream(self, markdown: str) -> None:
        to = self._to
        response = await self._call(
            "chat.startStream",
            lambda c: c.chat_startStream(
                channel=to.channel,
                thread_ts=to.thread_ts,
                recipient_team_id=to.team,
                recipient_user_id=to.user,
                markdown_text=markdown or None,
            ),
        )
        await self._record(_Part(_ts(response, "chat.startStream"), streaming=True, sent=markdown))

    async def _post_markdown(self, markdown: str) -> None:
        """A part complete already in stream mode: Markdown, like the streamed ones."""
        to = self._to
        response = await self._call(
            "chat.postMessage",
            lambda c: c.chat_postMessage(
                channel=to.channel, thread_ts=to.thread_ts, markdown_text=markdown
            ),
        )
        await self._record(_Part(_ts(response, "chat.postMessage"), sent=markdown))

    async def _post_text(self, rendered: str) -> None:
        to = self._to
        response = await self._call(
            "chat.postMessage",
            lambda c: c.chat_postMessage(channel=to.channel, thread_ts=to.thread_ts, text=rendered),
        )
        await self._record(_Part(_ts(response, "chat.postMessage"), shown=rendered))

    async def _record(self, part: _Part) -> None:
        # Saved before any further text goes out: a re-run takes this message over.
        self._parts.append(part)
        await self._save()

    async def _append(self, part: _Part, delta: str, *, stop: bool) -> None:
        channel = self._to.channel
        if stop:
            await self._call(
                "chat.stopStream",
                lambda c: c.chat_stopStream(
                    channel=channel, ts=part.ts, markdown_text=delta or None
                ),
            )
            part.streaming = False
        elif delta:
            await self._call(
                "chat.appendStream",
                lambda c: c.chat_appendStream(channel=channel, ts=part.ts, markdown_text=delta),
            )
        part.sent += delta

    async def _stop(self, part: _Part) -> None:
        channel = self._to.channel
        try:
            await self._call(
                "chat.stopStream",
                lambda c: c.chat_stopStream(channel=channel, ts=part.ts),
                quiet=_ALREADY_STOPPED,
            )
        except SlackDeliveryError as exc:
            if exc.error not in _ALREADY_STOPPED:
                raise
        part.streaming = False

    async def _edit(self, part: _Part, rendered: str) -> None:
        channel = self._to.channel
        # blocks=[] drops the Markdown blocks of a streamed message; text alone would not.
        await self._call(
            "chat.update",
            lambda c: c.chat_update(channel=channel, ts=part.ts, text=rendered, blocks=[]),
        )
        part.shown = rendered

    async def _edit_markdown(self, part: _Part, markdown: str) -> None:
        """Rewrite a part in stream mode, in the same Markdown its neighbours stream in."""
        channel = self._to.channel
        await self._call(
            "chat.update",
            lambda c: c.chat_update(channel=channel, ts=part.ts, markdown_text=markdown),
        )
        part.sent, part.shown = markdown, None

    async def _delete(self, part: _Part) -> None:
        channel = self._to.channel
        try:
            await self._call(
                "chat.delete",
                lambda c: c.chat_delete(channel=channel, ts=part.ts),
                quiet=frozenset({"message_not_found"}),
            )
        except SlackDeliveryError as exc:
            if exc.error != "message_not_found":
                raise

    async def _drop(self, leftovers: list[_Part]) -> None:
        """Delete messages the answer no longer needs. They are forgotten first: a crash in
        between leaves a stray message rather than a state naming a deleted one."""
        self._parts = self._parts[: len(self._parts) - len(leftovers)]
        await self._save()
        for part in leftovers:
            await self._delete(part)

    async def _call(
        self, method: str, send: Send, *, quiet: frozenset[str] = frozenset()
    ) -> AsyncSlackResponse:
        return await self._web.call(method, send, channel=self._to.channel, quiet=quiet)

    async def _save(self) -> None:
        await self._save_state(self.state)


def _ts(response: AsyncSlackResponse, method: str) -> str:
    ts = response.get("ts")
    if not isinstance(ts, str) or not ts:
        raise SlackDeliveryError(method, "no_ts_in_response")
    return ts


def _parse_state(state: ReplyState | None) -> list[_Part] | None:
    """The messages a crashed attempt left, or None to start afresh."""
    if not state:
        return None
    raw = state.get("parts")
    if not isinstance(raw, list):
        log.warning("ignoring a malformed Slack reply state")
        return None
    parts: list[_Part] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("ts"), str):
            log.warning("ignoring a malformed Slack reply state")
            return None
        parts.append(_Part(item["ts"], streaming=bool(item.get("streaming", False))))
    return parts or None


class SlackOutbound:
    """Opens replies in Slack threads through one AsyncWebClient."""

    def __init__(
        self, client: AsyncWebClient, *, mode: Mode = "stream", update_interval: float = 1.0
    ) -> None:
        self._web = _Web(client)
        self._mode: Mode = mode
        self._interval = update_interval
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> AsyncWebClient:
        return self._web.client

    async def open_reply(
        self,
        reply_to: Mapping[str, Any],
        resume: ReplyState | None,
        save_state: SaveReplyState,
    ) -> SlackReply:
        reply = SlackReply(
            self._web,
            _Address.parse(reply_to),
            mode=self._mode,
            update_interval=self._interval,
            save_state=save_state,
            tasks=self._pumps,
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
        await self._web.aclose()


def create_outbound(settings: Settings) -> SlackOutbound:
    token = settings.slack_bot_token
    if token is None:
        raise SettingsError("SLACK_BOT_TOKEN not set: the worker needs it to post answers.")
    retries = settings.slack_web_api_max_retries
    client = AsyncWebClient(
        token=token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=int(HTTP_TIMEOUT),
        logger=_SDK_LOG,
        # slack_sdk retries only connection errors by default; 429 Retry-After is ours to add.
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=retries),
            AsyncRateLimitErrorRetryHandler(max_retry_count=retries),
        ],
    )
    return SlackOutbound(
        client, mode=settings.slack_reply_mode, update_interval=settings.reply_update_interval
    )
