"""A fake Slack: the Web API methods Parley uses, plus a Socket Mode websocket, over real
HTTP on loopback. Point SLACK_API_URL at `FakeSlack.url`.

It keeps a message store per channel, records every call, and can be told to fail a
method (HTTP 429 with Retry-After, or any Slack error). Tests configure and inspect it from
their own thread while it serves from its own; a lock guards the shared state.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.server import BackgroundServer

TEXT_LIMIT = 4000
MARKDOWN_LIMIT = 12000

Params = dict[str, Any]
Reply = tuple[Params, int, dict[str, str]]  # body, HTTP status, headers


@dataclass
class _Failure:
    error: str
    status: int
    retry_after: int | None
    times: int | None  # None: until cleared


@dataclass
class _Message:
    channel: str
    ts: str
    thread_ts: str | None
    user: str
    bot_id: str | None
    text: str = ""
    markdown: str | None = None  # Markdown blocks (streamed, markdown_text): shown over text
    streaming: bool = False
    deleted: bool = False

    @property
    def shown(self) -> str:
        return self.markdown if self.markdown is not None else self.text

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ts": self.ts,
            "thread_ts": self.thread_ts,
            "user": self.user,
            "bot_id": self.bot_id,
            "text": self.shown,
            "markdown": self.markdown is not None,
            "streaming": self.streaming,
            "deleted": self.deleted,
        }


def _ok(**body: Any) -> Reply:
    return {"ok": True, **body}, 200, {}


def _error(error: str) -> Reply:
    return {"ok": False, "error": error}, 200, {}


class FakeSlack:
    def __init__(
        self,
        token: str = "xoxb-test-token",
        *,
        app_token: str = "xapp-1-test-token",
        team_id: str = "T0TEST",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        latency: float = 0.0,
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.latency = latency  # seconds added to every Web API call
        self.calls: list[tuple[str, Params, float]] = []
        self.acks: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._messages: dict[str, dict[str, _Message]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._ts = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{id}", self._response_url)
        # Users users.info reports as workspace admins.
        self.workspace_admins: set[str] = set()
        self._responses: dict[str, list[dict[str, Any]]] = {}
        self._server = BackgroundServer(app)
        self._methods: dict[str, Callable[[Params], Reply]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "apps.connections.open": self._connections_open,
        }

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeSlack:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.call(self._close_sockets())
        self._server.stop()

    @property
    def url(self) -> str:
        """The Web API base URL, for SLACK_API_URL."""
        return f"{self._server.url}/api/"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self._server.port}/socket"

    # -- configuring -------------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: str = "ratelimited",
        status: int = 429,
        retry_after: int | None = 1,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with `error` (None: every call)."""
        failure = _Failure(error, status, retry_after if status == 429 else None, times)
        with self._lock:
            self._failures.setdefault(method, []).append(failure)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def add_message(
        self, channel: str, text: str, *, user: str = "U0USER", thread_ts: str | None = None
    ) -> str:
        """A message from a person (e.g. the question a thread starts with); returns its ts."""
        with self._lock:
            message = _Message(channel, self._next_ts(), thread_ts, user, None, text=text)
            self._messages.setdefault(channel, {})[message.ts] = message
            return message.ts

    # -- inspecting --------------------------------------------------------------------

    def response_url(self, name: str) -> str:
        """A slash command's response_url: what is posted to it is kept under `name`."""
        return f"{self._server.url}/response/{name}"

    def responses(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._responses.get(name, []))

    def calls_to(self, method: str) -> list[Params]:
        with self._lock:
            return [params for name, params, _ in self.calls if name == method]

    def methods_called(self) -> list[str]:
        with self._lock:
            return [name for name, _, _ in self.calls]

    def thread_replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The bot's messages in a thread, oldest first, without deleted ones."""
        with self._lock:
            found = [
                m.as_dict()
                for m in self._messages.get(channel, {}).values()
                if m.thread_ts == thread_ts and m.bot_id is not None and not m.deleted
            ]
        return sorted(found, key=lambda m: _ts_key(m["ts"]))

    def open_streams(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m.as_dict()
                for channel in self._messages.values()
                for m in channel.values()
                if m.streaming and not m.deleted
            ]

    # -- Socket Mode -------------------------------------------------------------------

    def wait_for_socket(self, timeout: float = 10.0) -> None:
        if not self._connected.wait(timeout):
            raise TimeoutError("no Socket Mode client connected")

    def push_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        timeout: float = 10.0,
    ) -> str:
        """Send an events_api envelope carrying `event`; returns its envelope_id."""
        envelope_id = str(uuid.uuid4())
        payload = {
            "token": "verification-token",
            "team_id": self.team_id,
            "api_app_id": "A0FAKE",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}
            ],
        }
        self.push_envelope(
            {
                "envelope_id": envelope_id,
                "type": "events_api",
                "payload": payload,
                "accepts_response_payload": False,
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
            },
            timeout=timeout,
        )
        return envelope_id

    def push_envelope(self, envelope: dict[str, Any], *, timeout: float = 10.0) -> None:
        """Send any JSON frame (an envelope, {"type": "disconnect"}...) to connected clients."""
        self.wait_for_socket(timeout)
        self._server.call(self._broadcast(envelope))

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        with self._acked:
            found = self._acked.wait_for(
                lambda: next((a for a in self.acks if a.get("envelope_id") == envelope_id), None),
                timeout,
            )
        if found is None:
            raise TimeoutError(f"envelope {envelope_id} was not acknowledged")
        return found

    def drop_sockets(self) -> None:
        """Close every Socket Mode connection, as Slack does now and then."""
        self._server.call(self._close_sockets())

    async def _broadcast(self, frame: dict[str, Any]) -> None:
        for ws in list(self._sockets):
            await ws.send_json(frame)

    async def _close_sockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        self._sockets.clear()
        self._connected.clear()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets) + 1,
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                "connection_info": {"app_id": "A0FAKE"},
            }
        )
        self._sockets.add(ws)
        self._connected.set()
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                if isinstance(data, dict) and "envelope_id" in data:
                    with self._acked:
                        self.acks.append(data)
                        self._acked.notify_all()
        finally:
            self._sockets.discard(ws)
            if not self._sockets:
                self._connected.clear()
        return ws

    # -- Web API -----------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self._responses.setdefault(request.match_info["id"], []).append(body)
        return web.Response(text="ok")

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        with self._lock:
            self.calls.append((method, params, time.time()))
        if self.latency:
            await asyncio.sleep(self.latency)
        expected = self.app_token if method == "apps.connections.open" else self.token
        if token != expected:
            body, status, headers = _error("invalid_auth")
        elif (failure := self._take_failure(method)) is not None:
            body, status, headers = {"ok": False, "error": failure.error}, failure.status, {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
        elif (handler := self._methods.get(method)) is None:
            body, status, headers = _error("unknown_method")
        else:
            with self._lock:
                body, status, headers = handler(params)
        return web.json_response(body, status=status, headers=headers)

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(method)
            if not queue:
                return None
            failure = queue[0]
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    queue.pop(0)
            return failure

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1700000000 + n // 10000}.{(n % 10000) * 100:06d}"

    def _find(self, params: Params) -> _Message | Reply:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            return _error("channel_not_found")
        message = self._messages.get(str(channel), {}).get(str(ts))
        if message is None or message.deleted:
            return _error("message_not_found")
        return message

    def _new_bot_message(self, channel: str, thread_ts: str | None) -> _Message:
        message = _Message(channel, self._next_ts(), thread_ts, self.bot_user_id, self.bot_id)
        self._messages.setdefault(channel, {})[message.ts] = message
        return message

    def _auth_test(self, params: Params) -> Reply:
        return _ok(
            url="https://fake-slack.invalid/",
            team="Fake Team",
            user="parley",
            team_id=self.team_id,
            user_id=self.bot_user_id,
            bot_id=self.bot_id,
            is_enterprise_install=False,
        )

    def _post_message(self, params: Params) -> Reply:
        channel = params.get("channel")
        if not channel:
            return _error("channel_not_found")
        text, markdown = params.get("text"), params.get("markdown_text")
        if not text and not markdown and not params.get("blocks"):
            return _error("no_text")
        if too_long := _too_long(text, markdown):
            return too_long
        message = self._new_bot_message(str(channel), _opt_str(params.get("thread_ts")))
        message.text = str(text or "")
        message.markdown = str(markdown) if markdown else _markdown_blocks(params.get("blocks"))
        return _ok(channel=channel, ts=message.ts, message=message.as_dict())

    def _update(self, params: Params) -> Reply:
        found = self._find(params)
        if not isinstance(found, _Message):
            return found
        if found.streaming:
            return _error("cant_update_message")
        text, markdown = params.get("text"), params.get("markdown_text")
        if too_long := _too_long(text, markdown):
            return too_long
        if text is not None:
            found.text = str(text)
        # Like Slack: blocks are kept unless replaced (blocks=[] removes them).
        if markdown:
            found.markdown = str(markdown)
        elif "blocks" in params:
            found.markdown = _markdown_blocks(params["blocks"])
        return _ok(channel=found.channel, ts=found.ts, text=found.text)

    def _delete(self, params: Params) -> Reply:
        found = self._find(params)
        if not isinstance(found, _Message):
            return found
        found.deleted = True
        found.streaming = False
        return _ok(channel=found.channel, ts=found.ts)

    def _start_stream(self, params: Params) -> Reply:
        channel, thread_ts = params.get("channel"), params.get("thread_ts")
        if not channel:
            return _error("channel_not_found")
        if not thread_ts:
            return _error("invalid_arguments")
        markdown = str(params.get("markdown_text") or "")
        if too_long := _too_long(None, markdown):
            return too_long
        message = self._new_bot_message(str(channel), str(thread_ts))
        message.markdown = markdown
        message.streaming = True
        return _ok(channel=channel, ts=message.ts)

    def _append_stream(self, params: Params) -> Reply:
        found = self._streaming(params)
        if not isinstance(found, _Message):
            return found
        delta = params.get("markdown_text")
        if not delta:
            return _error("invalid_arguments")
        return self._extend(found, str(delta))

    def _stop_stream(self, params: Params) -> Reply:
        found = self._streaming(params)
        if not isinstance(found, _Message):
            return found
        reply = self._extend(found, str(params.get("markdown_text") or ""))
        if reply[0]["ok"]:
            found.streaming = False
            reply[0]["message"] = found.as_dict()
        return reply

    def _streaming(self, params: Params) -> _Message | Reply:
        found = self._find(params)
        if isinstance(found, _Message) and not found.streaming:
            return _error("message_not_in_streaming_state")
        return found

    def _extend(self, message: _Message, delta: str) -> Reply:
        markdown = (message.markdown or "") + delta
        if too_long := _too_long(None, markdown):
            return too_long
        message.markdown = markdown
        return _ok(channel=message.channel, ts=message.ts)

    def _users_info(self, params: Params) -> Reply:
        user = str(params.get("user") or "")
        if not user:
            return _error("user_not_found")
        name = f"user-{user.lower()}"
        return _ok(
            user={
                "id": user,
                "team_id": self.team_id,
                "name": name,
                "real_name": name.title(),
                "tz": "UTC",
                "is_bot": user == self.bot_user_id,
                "is_admin": user in self.workspace_admins,
                "is_owner": False,
                "profile": {"display_name": name, "real_name": name.title()},
            }
        )

    def _conversations_info(self, params: Params) -> Reply:
        channel = str(params.get("channel") or "")
        if not channel:
            return _error("channel_not_found")
        return _ok(
            channel={
                "id": channel,
                "name": f"channel-{channel.lower()}",
                "is_channel": channel.startswith("C"),
                "is_im": channel.startswith("D"),
                "is_private": channel.startswith("G"),
                "is_member": True,
            }
        )

    def _connections_open(self, params: Params) -> Reply:
        return _ok(url=self.socket_url)


async def _read_params(request: web.Request) -> Params:
    """Slack takes query parameters, form bodies and JSON bodies alike."""
    params: Params = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.can_read_body:
        params.update(await request.post())
    if isinstance(params.get("blocks"), str):
        params["blocks"] = json.loads(params["blocks"])
    return {
        k: v for k, v in params.items() if isinstance(v, str | int | float | bool | list | dict)
    }


def _too_long(text: object, markdown: object) -> Reply | None:
    if isinstance(text, str) and len(text) > TEXT_LIMIT:
        return _error("msg_too_long")
    if isinstance(markdown, str) and len(markdown) > MARKDOWN_LIMIT:
        return _error("msg_too_long")
    return None


def _markdown_blocks(blocks: object) -> str | None:
    """The Markdown a blocks list shows, None when it has no markdown block."""
    if not isinstance(blocks, list):
        return None
    texts = [
        str(b.get("text", ""))
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "markdown"
    ]
    return "\n".join(texts) if texts else None


def _opt_str(value: object) -> str | None:
    return str(value) if value else None


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)
