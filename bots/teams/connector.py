"""The Bot Connector REST API as the worker calls it: client-credentials tokens (cached until
shortly before expiry) and calls retried on 429, 412, 502, 503 and 504 with backoff,
honouring Retry-After. botbuilder's ConnectorClient cannot be pointed at a local login
endpoint and hides the status and Retry-After of a refused call, which these retries need.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from botframework.connector.auth import AuthenticationConstants

from bots.base import DeliveryError

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 30.0
MAX_RETRIES = 5
RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After ends the call; the task runs again later
TOKEN_MARGIN = 300.0  # a token is renewed this long before it expires
TOKEN_SCOPE = f"{AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE}/.default"
MULTI_TENANT = "botframework.com"

RETRY_STATUSES = frozenset({412, 429, 502, 503, 504})
TRANSIENT_STATUSES = RETRY_STATUSES | {408, 500}


class TeamsDeliveryError(DeliveryError):
    """A Bot Connector (or login) call failed for good: its own retries are spent or the
    refusal is final. `status` is None when no HTTP answer came back."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        code: str,
        detail: str = "",
        *,
        transient: bool | None = None,
    ) -> None:
        super().__init__(f"Teams {operation} failed: {status or 'no response'} {code}".rstrip())
        self.operation = operation
        self.status = status
        self.code = code
        self.detail = detail
        self._transient = transient

    @property
    def retryable(self) -> bool:
        """True when trying the whole reply again later may succeed."""
        if self._transient is not None:
            return self._transient
        return self.status is None or self.status in TRANSIENT_STATUSES

    @property
    def stream_refused(self) -> bool:
        """403 ContentStreamNotAllowed: no streaming here, or this stream has ended."""
        return self.status == 403 and self.code == "ContentStreamNotAllowed"

    @property
    def stream_cancelled(self) -> bool:
        """The user pressed Stop on the streaming answer."""
        return self.stream_refused and "cancel" in self.detail.lower()


class Tokens:
    """Client-credentials tokens for the Bot Connector, cached until shortly before expiry."""

    def __init__(self, url: str, app_id: str, password: str) -> None:
        self.url = url
        self._form = {
            "grant_type": "client_credentials",
            "client_id": app_id,
            "client_secret": password,
            "scope": TOKEN_SCOPE,
        }
        self._token: str | None = None
        self._valid_until = 0.0
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def get(self, http: Connector) -> str:
        if self._token is not None and time.monotonic() < self._valid_until:
            return self._token
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if self._token is not None and time.monotonic() < self._valid_until:
                return self._token
            body = await http.request("token", "POST", self.url, form=self._form, auth=False)
            token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
            if not isinstance(token, str) or not token:
                raise TeamsDeliveryError("token", 200, "no_access_token")
            try:
                seconds = float(lifetime)
            except (TypeError, ValueError):
                seconds = 3600.0
            self._token = token
            self._valid_until = time.monotonic() + seconds - min(TOKEN_MARGIN, seconds / 2)
            log.info("acquired a Bot Connector token valid for %.0fs", seconds)
            return token

    def invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = None


class Connector:
    """One aiohttp session per event loop, the outbound token, retries, typed errors."""

    def __init__(
        self,
        tokens: Tokens | None,
        *,
        max_retries: int = MAX_RETRIES,
        base_delay: float = RETRY_BASE_DELAY,
        max_delay: float = RETRY_MAX_DELAY,
    ) -> None:
        self.tokens = tokens
        self._max_retries = max_retries
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _ready(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
            self._session_loop = loop
        return self._session

    async def request(
        self,
        op: str,
        method: str,
        url: str,
        *,
        payload: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        auth: bool = True,
        where: str = "",
    ) -> dict[str, Any]:
        attempt = 0
        renewed = False
        while True:
            headers: dict[str, str] = {}
            token = None
            if auth and self.tokens is not None:
                token = await self.tokens.get(self)
                headers["Authorization"] = f"Bearer {token}"
            retry_after: str | None = None
            try:
                async with self._ready().request(
                    method, url, json=payload, data=form, headers=headers
                ) as resp:
                    status: int | None = resp.status
                    body = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, body = None, type(exc).__name__.encode()
            if status is not None and status < 300:
                return _json_object(body)
            if status == 401 and token is not None and not renewed and self.tokens is not None:
                self.tokens.invalidate(token)  # revoked or rotated: one more try, new token
                renewed = True
                continue
            code, detail = _error_of(status, body)
            if (status is None or status in RETRY_STATUSES) and attempt < self._max_retries:
                delay = self._delay(attempt, retry_after)
                if delay is not None:
                    log.info("Teams %s got %s; retry %d in %.2fs", op, status, attempt + 1, delay)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
            if not (status == 403 and code == "ContentStreamNotAllowed"):
                log.warning("Teams %s failed%s: %s %s", op, where, status or "no response", code)
            raise TeamsDeliveryError(op, status, code, detail)

    def _delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before the next try, None when Retry-After asks for too long."""
        if retry_after is not None and (seconds := _parse_retry_after(retry_after)) is not None:
            return seconds if seconds <= MAX_RETRY_AFTER else None
        backoff: float = min(self._max_delay, self._base_delay * 2.0**attempt)
        return backoff * (0.5 + random.random() / 2)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._session_loop is asyncio.get_running_loop():
            await session.close()


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _error_of(status: int | None, body: bytes) -> tuple[str, str]:
    """(code, message) of a refused call: Bot Connector's {"error": {"code", "message"}},
    the login endpoint's {"error": "..."}, or the bare status."""
    data = _json_object(body)
    error = data.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return str(code or f"http_{status}"), str(message or "")
    if isinstance(error, str):
        return error, str(data.get("error_description") or "")
    if status is None:
        return "connection_error", body.decode(errors="replace")
    return f"http_{status}", ""
