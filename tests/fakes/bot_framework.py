"""A fake Bot Framework over real HTTP on loopback: everything Teams needs from Microsoft.

- OpenID metadata + JWKS (`openid_url`): an RSA key made at start, endorsed for "msteams",
  whose private half signs the inbound tokens that `token()` mints (and its variants:
  expired, wrong audience, wrong issuer, forged, without the serviceurl claim);
- a login endpoint (`login_url`): POST /{tenant}/oauth2/v2.0/token, client credentials in,
  access token out; it records requests and can be told to fail;
- a Bot Connector service (`service_url`, with a path prefix like Teams' own
  https://smba.trafficmanager.net/amer/): POST /v3/conversations/{id}/activities[/{replyTo}],
  PUT and DELETE .../activities/{activityId}. It checks the Bearer token is one it issued,
  records every call with its headers, keeps each conversation's visible messages, follows
  Teams' streaming protocol strictly (sequence, "all text so far", final), enforces the
  100 KB message size, and can answer 429 (Retry-After), 412, 502... a number of times;
  GET .../conversations/{id}/members/{memberId} for members made known by `add_member`,
  and POST /v3/conversations, which opens a 1:1 chat with a person unless
  `refuse_personal_chat` says they have not installed the app for themselves (403).

Tests configure and inspect it from their own thread while it serves from its own; a lock
guards the shared state.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.fakes.server import BackgroundServer

ISSUER = "https://api.botframework.com"
SCOPE = "https://api.botframework.com/.default"
CHANNEL_ID = "msteams"
APP_ID = "6f1c2a7e-4b1d-4f0e-9a55-0c3f7e2b9d11"
APP_PASSWORD = "fake-app-secret-~0123456789"
TENANT_ID = "9e8d7c6b-5a49-4382-b1a0-fedcba987654"
SERVICE_PATH = "/amer"
MESSAGE_SIZE_LIMIT = 100 * 1024  # bytes of the activity in UTF-16, as Teams counts

Op = Literal["send", "update", "delete", "token", "create", "member", "any"]
Json = dict[str, Any]


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    times: int | None  # None: until cleared
    code: str
    message: str


@dataclass
class Call:
    """One request to the connector or the login endpoint."""

    op: str  # "send" | "update" | "delete" | "token" | "create" | "member"
    method: str
    conversation_id: str | None
    activity_id: str | None
    body: Any
    headers: dict[str, str]
    status: int
    at: float  # time.monotonic()


@dataclass
class Message:
    """A message as people see it in a conversation."""

    id: str
    conversation_id: str
    text: str = ""
    text_format: str | None = None
    streaming: bool = False  # an open stream: the typing bubble is still growing
    streamed: bool = False  # made by the streaming protocol
    informative: str | None = None  # the progress line of a stream
    sequence: int = 0  # the last streamSequence accepted
    stop_reason: str | None = None  # set by stop_stream(): the next chunk gets 403
    deleted: bool = False
    updates: int = 0  # PUTs it received
    reply_to_id: str | None = None
    history: list[str] = field(default_factory=list)  # every text it showed
    feedback_loop: bool = False  # Teams shows its 👍/👎 buttons under it

    def as_dict(self) -> Json:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "text": self.text,
            "text_format": self.text_format,
            "streaming": self.streaming,
            "streamed": self.streamed,
            "informative": self.informative,
            "deleted": self.deleted,
            "updates": self.updates,
            "reply_to_id": self.reply_to_id,
            "feedback_loop": self.feedback_loop,
        }


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FakeBotFramework:
    def __init__(
        self,
        app_id: str = APP_ID,
        app_password: str = APP_PASSWORD,
        tenant_id: str = TENANT_ID,
        *,
        endorsements: tuple[str, ...] = (CHANNEL_ID,),
        access_token_lifetime: int = 3600,
        latency: float = 0.0,
    ) -> None:
        self.app_id = app_id
        self.app_password = app_password
        self.tenant_id = tenant_id
        self.endorsements = list(endorsements)
        self.access_token_lifetime = access_token_lifetime
        self.latency = latency
        self.calls: list[Call] = []
        self.metadata_fetches = 0
        self.jwks_fetches = 0
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"fake-key-{uuid.uuid4().hex[:8]}"
        self._access_tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._failures: dict[str, list[_Failure]] = {}
        self._messages: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self._members: dict[str, Json] = {}  # Teams user id (29:…) -> member
        self._no_personal_app: set[str] = set()
        self.personal_chats: dict[str, str] = {}  # Teams user id -> 1:1 conversation id
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/v1/.well-known/keys", self._jwks)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        base = f"{SERVICE_PATH}/v3/conversations/{{conversation_id}}/activities"
        app.router.add_post(base, self._send)
        app.router.add_post(base + "/{activity_id}", self._send)
        app.router.add_put(base + "/{activity_id}", self._update)
        app.router.add_delete(base + "/{activity_id}", self._delete)
        app.router.add_post(f"{SERVICE_PATH}/v3/conversations", self._create)
        app.router.add_get(
            f"{SERVICE_PATH}/v3/conversations/{{conversation_id}}/members/{{member_id}}",
            self._member,
        )
        self._server = BackgroundServer(app)

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeBotFramework:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def openid_url(self) -> str:
        """For PARLEY_TEAMS_OPENID_METADATA_URL."""
        return f"{self.url}/v1/.well-known/openidconfiguration"

    @property
    def login_url(self) -> str:
        """For PARLEY_TEAMS_LOGIN_URL."""
        return self.url

    @property
    def service_url(self) -> str:
        """The serviceUrl activities carry; the connector answers under it."""
        return f"{self.url}{SERVICE_PATH}/"

    # -- inbound tokens ----------------------------------------------------------------

    def rotate_key(self) -> str:
        """Sign with a new key from now on; the JWKS lists only the new one."""
        with self._lock:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.kid = f"fake-key-{uuid.uuid4().hex[:8]}"
            return self.kid

    def token(
        self,
        *,
        service_url: str | None = None,
        audience: str | None = None,
        issuer: str = ISSUER,
        expires_in: float = 3600,
        serviceurl_claim: bool = True,
        forged: bool = False,
        kid: str | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """A token as the Bot Framework sends with each activity; change one thing to get
        a bad one. `forged` signs with a key the JWKS does not hold (under the right kid)."""
        now = int(time.time())
        claims: Json = {
            "iss": issuer,
            "aud": self.app_id if audience is None else audience,
            "nbf": now - 5 if expires_in > 0 else now + int(expires_in) - 3600,
            "exp": now + int(expires_in),
        }
        if serviceurl_claim:
            claims["serviceurl"] = service_url or self.service_url
        key = self._stranger if forged else self._key
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid or self.kid})

    def public_key_pem(self) -> bytes:
        with self._lock:
            return self._key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )

    def auth_header(self, token: str | None = None, **claims: Any) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token or self.token(**claims)}",
            "Content-Type": "application/json",
        }

    def expired_token(self) -> str:
        """Expired ten minutes ago: beyond the five minutes of allowed clock skew."""
        return self.token(expires_in=-600)

    def wrong_audience_token(self) -> str:
        return self.token(audience="11111111-2222-3333-4444-555555555555")

    def wrong_issuer_token(self) -> str:
        return self.token(issuer="https://evil.example.com")

    def forged_token(self) -> str:
        return self.token(forged=True)

    def token_without_serviceurl(self) -> str:
        return self.token(serviceurl_claim=False)

    # -- activities, as the Bot Framework delivers them --------------------------------

    @property
    def bot_id(self) -> str:
        """The bot's id in Teams activities (recipient, mentions)."""
        return f"28:{self.app_id}"

    def personal_message(
        self,
        text: str,
        *,
        user: str = "29:alice",
        aad_object_id: str | None = "aad-alice",
        conversation_id: str = "a:1personal-alice",
        activity_id: str | None = None,
    ) -> Json:
        return self.activity(
            "message",
            text=text,
            conversation={"conversationType": "personal", "id": conversation_id},
            user=user,
            aad_object_id=aad_object_id,
            activity_id=activity_id,
        )

    def channel_message(
        self,
        text: str,
        *,
        channel: str = "19:hr-questions@thread.tacv2",
        root: str | None = None,
        mention: str | None = "Parley",
        user: str = "29:bob",
        aad_object_id: str | None = "aad-bob",
        activity_id: str | None = None,
    ) -> Json:
        """A channel post (`root` None: a new post, its own thread) or a reply in the thread
        of `root`. With `mention`, it @mentions the bot under that display name."""
        activity_id = activity_id or next_activity_id()
        conversation_id = f"{channel};messageid={root or activity_id}"
        return self.activity(
            "message",
            text=f"<at>{mention}</at> {text}" if mention else text,
            conversation={
                "conversationType": "channel",
                "id": conversation_id,
                "isGroup": True,
                "name": "HR questions",
            },
            user=user,
            aad_object_id=aad_object_id,
            activity_id=activity_id,
            mention=mention,
            channel_data={
                "teamsChannelId": channel,
                "teamsTeamId": "19:team@thread.tacv2",
                "channel": {"id": channel},
                "team": {"id": "19:team@thread.tacv2"},
            },
        )

    def group_message(
        self,
        text: str,
        *,
        chat: str = "19:group-chat@thread.v2",
        mention: str | None = "Parley",
        user: str = "29:carol",
        aad_object_id: str | None = "aad-carol",
        activity_id: str | None = None,
    ) -> Json:
        return self.activity(
            "message",
            text=f"<at>{mention}</at> {text}" if mention else text,
            conversation={"conversationType": "groupChat", "id": chat, "isGroup": True},
            user=user,
            aad_object_id=aad_object_id,
            activity_id=activity_id,
            mention=mention,
        )

    def activity(
        self,
        kind: str,
        *,
        text: str | None = None,
        conversation: Json,
        user: str = "29:alice",
        aad_object_id: str | None = None,
        activity_id: str | None = None,
        mention: str | None = None,
        channel_data: Json | None = None,
        channel_id: str = CHANNEL_ID,
    ) -> Json:
        sender: Json = {"id": user, "name": "Display Name Of " + user}
        if aad_object_id:
            sender["aadObjectId"] = aad_object_id
        activity: Json = {
            "type": kind,
            "id": activity_id or next_activity_id(),
            "timestamp": "2026-01-05T09:30:00.000Z",
            "serviceUrl": self.service_url,
            "channelId": channel_id,
            "from": sender,
            "conversation": {**conversation, "tenantId": self.tenant_id},
            "recipient": {"id": self.bot_id, "name": mention or "Parley"},
            "locale": "en-US",
            "channelData": {**(channel_data or {}), "tenant": {"id": self.tenant_id}},
        }
        if text is not None:
            activity["text"] = text
            activity["textFormat"] = "plain"
        if mention:
            activity["entities"] = [
                {
                    "type": "mention",
                    "text": f"<at>{mention}</at>",
                    "mentioned": {"id": self.bot_id, "name": mention},
                },
                {"type": "clientInfo", "locale": "en-US", "country": "US", "platform": "Web"},
            ]
        return activity

    def feedback_invoke(
        self,
        reply_to_id: str,
        reaction: str = "like",
        *,
        conversation: Json,
        user: str = "29:alice",
        aad_object_id: str | None = "aad-alice",
        comment: str = "",
    ) -> Json:
        """A click on Teams' feedback buttons under the message `reply_to_id` (after the
        person submitted the form that follows)."""
        activity = self.activity(
            "invoke", conversation=conversation, user=user, aad_object_id=aad_object_id
        )
        activity["name"] = "message/submitAction"
        activity["replyToId"] = reply_to_id
        activity["value"] = {
            "actionName": "feedback",
            "actionValue": {
                "reaction": reaction,
                "feedback": json.dumps({"feedbackText": comment}),
            },
        }
        return activity

    def reaction(
        self,
        reply_to_id: str,
        *,
        conversation: Json,
        added: tuple[str, ...] = (),
        removed: tuple[str, ...] = (),
        user: str = "29:alice",
        aad_object_id: str | None = "aad-alice",
    ) -> Json:
        """A messageReaction activity: reactions (Teams types: like, heart, laugh...) put
        on or taken off the message `reply_to_id`."""
        activity = self.activity(
            "messageReaction", conversation=conversation, user=user, aad_object_id=aad_object_id
        )
        activity["replyToId"] = reply_to_id
        if added:
            activity["reactionsAdded"] = [{"type": kind} for kind in added]
        if removed:
            activity["reactionsRemoved"] = [{"type": kind} for kind in removed]
        return activity

    # -- configuring -------------------------------------------------------------------

    def add_member(self, user: str, aad_object_id: str | None, name: str) -> None:
        """A person the members endpoint knows, in every conversation."""
        member: Json = {
            "id": user,
            "name": name,
            "userRole": "user",
            "tenantId": self.tenant_id,
        }
        if aad_object_id:
            member["aadObjectId"] = aad_object_id
        with self._lock:
            self._members[user] = member

    def refuse_personal_chat(self, user: str) -> None:
        """The person has not installed the app for themselves: opening a 1:1 chat with
        them is refused with 403, as Teams does."""
        with self._lock:
            self._no_personal_app.add(user)

    def fail(
        self,
        op: Op = "send",
        status: int = 429,
        *,
        retry_after: float | None = 1,
        times: int | None = 1,
        code: str | None = None,
        message: str = "",
    ) -> None:
        """Answer the next `times` calls of `op` with `status` (None: every call)."""
        default_code = {
            429: "TooManyRequests",
            412: "PreconditionFailed",
            403: "Forbidden",
            404: "NotFound",
        }.get(status, "ServiceError")
        failure = _Failure(
            status,
            retry_after if status == 429 else None,
            times,
            code or default_code,
            message or f"injected failure {status}",
        )
        with self._lock:
            self._failures.setdefault(op, []).append(failure)

    def delete_message(self, activity_id: str) -> None:
        """A person (or an admin) deletes a message."""
        with self._lock:
            self._messages[activity_id].deleted = True

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def stop_stream(
        self, stream_id: str, reason: str = "Content stream was cancelled by user."
    ) -> None:
        """What the user's Stop button (or the two-minute limit) does: the next chunk of
        this stream is refused with 403 ContentStreamNotAllowed and `reason`."""
        with self._lock:
            message = self._messages[stream_id]
            message.streaming = False
            message.stop_reason = reason

    # -- inspecting --------------------------------------------------------------------

    def calls_to(self, op: str, *, status: int | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.op == op and (status is None or c.status == status)]

    def activities(self, conversation_id: str | None = None) -> list[Json]:
        """Bodies the connector accepted (POST and PUT), oldest first."""
        with self._lock:
            return [
                c.body
                for c in self.calls
                if c.op in ("send", "update")
                and c.status < 300
                and (conversation_id is None or c.conversation_id == conversation_id)
            ]

    def messages(self, conversation_id: str) -> list[Json]:
        """What people see in a conversation (a channel thread is the channel's id with
        `;messageid=<root>`), oldest first, deleted ones left out."""
        with self._lock:
            return [
                m.as_dict()
                for m in self._messages.values()
                if m.conversation_id == conversation_id and not m.deleted
            ]

    def texts(self, conversation_id: str) -> list[str]:
        return [m["text"] for m in self.messages(conversation_id)]

    def message(self, activity_id: str) -> Json:
        with self._lock:
            return self._messages[activity_id].as_dict()

    def history(self, activity_id: str) -> list[str]:
        with self._lock:
            return list(self._messages[activity_id].history)

    def open_streams(self) -> list[Json]:
        with self._lock:
            return [m.as_dict() for m in self._messages.values() if m.streaming and not m.deleted]

    @property
    def token_requests(self) -> list[Call]:
        return self.calls_to("token")

    # -- OpenID ------------------------------------------------------------------------

    async def _metadata(self, request: web.Request) -> web.Response:
        with self._lock:
            self.metadata_fetches += 1
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.example/v1/.well-known/auth",
                "jwks_uri": f"{self.url}/v1/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        with self._lock:
            self.jwks_fetches += 1
            jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
            jwk.update(
                {"kid": self.kid, "x5t": self.kid, "use": "sig", "endorsements": self.endorsements}
            )
        return web.json_response({"keys": [jwk]})

    # -- login -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        tenant = request.match_info["tenant"]
        headers = dict(request.headers)
        record: Json = {"tenant": tenant, **{k: str(v) for k, v in form.items()}}
        failure = self._take_failure("token")
        body: Json
        if failure is not None:
            status, body = failure.status, {"error": failure.code}
        elif tenant not in (self.tenant_id, "botframework.com"):
            status, body = 400, {"error": "invalid_request", "error_description": "tenant"}
        elif form.get("grant_type") != "client_credentials" or form.get("scope") != SCOPE:
            status, body = 400, {"error": "invalid_request"}
        elif form.get("client_id") != self.app_id or form.get("client_secret") != self.app_password:
            status, body = 401, {"error": "invalid_client"}
        else:
            token = f"fake-access-{secrets.token_hex(12)}"
            with self._lock:
                self._access_tokens[token] = time.time() + self.access_token_lifetime
            status = 200
            body = {
                "token_type": "Bearer",
                "expires_in": self.access_token_lifetime,
                "ext_expires_in": self.access_token_lifetime,
                "access_token": token,
            }
        self._record("token", "POST", None, None, record, headers, status)
        return web.json_response(body, status=status)

    # -- connector ---------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        return await self._serve(request, "send", self._do_send)

    async def _update(self, request: web.Request) -> web.Response:
        return await self._serve(request, "update", self._do_update)

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._serve(request, "delete", self._do_delete)

    async def _create(self, request: web.Request) -> web.Response:
        return await self._serve(request, "create", self._do_create)

    async def _member(self, request: web.Request) -> web.Response:
        return await self._serve(request, "member", self._do_member)

    async def _serve(self, request: web.Request, op: str, handler: Any) -> web.Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        conversation_id = request.match_info.get("conversation_id")
        activity_id = request.match_info.get("activity_id") or request.match_info.get("member_id")
        raw = await request.read()
        headers = dict(request.headers)
        body: Any = None
        extra: dict[str, str] = {}
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _Refusal(400, "BadSyntax", "body is not JSON") from None
            if not self._authorized(headers.get("Authorization", "")):
                raise _Refusal(401, "Unauthorized", "Authorization has been denied.")
            failure = self._take_failure(op)
            if failure is not None:
                if failure.retry_after is not None:
                    extra["Retry-After"] = _seconds(failure.retry_after)
                raise _Refusal(failure.status, failure.code, failure.message)
            if raw and len(raw.decode().encode("utf-16-le")) > MESSAGE_SIZE_LIMIT:
                raise _Refusal(413, "MessageSizeTooBig", "Message size too large")
            with self._lock:
                status, answer = handler(conversation_id, activity_id, body)
        except _Refusal as refusal:
            status = refusal.status
            answer = {"error": {"code": refusal.code, "message": refusal.message}}
        self._record(op, request.method, conversation_id, activity_id, body, headers, status)
        return web.json_response(answer, status=status, headers=extra)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        with self._lock:
            expiry = self._access_tokens.get(token)
        return scheme == "Bearer" and expiry is not None and expiry > time.time()

    def _do_create(self, _: str | None, __: str | None, body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict):
            raise _Refusal(400, "BadArgument", "the conversation parameters are a JSON object")
        members, bot = body.get("members"), body.get("bot")
        if body.get("isGroup") is not False or not isinstance(members, list) or len(members) != 1:
            raise _Refusal(400, "BadArgument", "a 1:1 chat has isGroup false and one member")
        if not isinstance(bot, dict) or bot.get("id") != self.bot_id:
            raise _Refusal(400, "BadArgument", "bot is not this bot")
        if body.get("tenantId") != self.tenant_id:
            raise _Refusal(400, "BadArgument", "tenantId missing or unknown")
        member = members[0].get("id") if isinstance(members[0], dict) else None
        if not isinstance(member, str) or not member:
            raise _Refusal(400, "BadArgument", "the member needs an id")
        if member in self._no_personal_app:
            raise _Refusal(403, "Forbidden", "The bot is not part of the conversation roster.")
        conversation_id = self.personal_chats.setdefault(member, f"a:1personal-{member}")
        return 201, {"id": conversation_id}

    def _do_member(self, _: str | None, member_id: str | None, body: Any) -> tuple[int, Json]:
        member = self._members.get(member_id or "")
        if member is None:
            raise _Refusal(404, "MemberNotFoundInConversation", "The member was not found.")
        return 200, dict(member)

    def _do_send(self, conversation_id: str, reply_to: str | None, body: Any) -> tuple[int, Json]:
        if not isinstance(body, dict):
            raise _Refusal(400, "BadArgument", "an activity is a JSON object")
        kind = body.get("type")
        text = body.get("text")
        info = _stream_info(body)
        if info is not None:
            return self._stream(conversation_id, body, info)
        if kind == "typing":
            return 200, {}
        if kind != "message":
            raise _Refusal(400, "BadArgument", f"unsupported activity type {kind!r}")
        if not isinstance(text, str) or not text:
            raise _Refusal(400, "BadArgument", "a message needs text")
        message = self._new_message(conversation_id, body, reply_to)
        message.text = text
        message.history.append(text)
        message.feedback_loop = _feedback_loop(body)
        return 201, {"id": message.id}

    def _stream(self, conversation_id: str, body: Json, info: Json) -> tuple[int, Json]:
        conversation = body.get("conversation") or {}
        if conversation.get("conversationType", "personal") != "personal":
            raise _Refusal(403, "ContentStreamNotAllowed", "Content stream is not allowed")
        kind, text = body.get("type"), body.get("text")
        stream_type = info.get("streamType", "streaming")
        stream_id, sequence = info.get("streamId"), info.get("streamSequence")
        if not isinstance(text, str) or not text:
            raise _Refusal(400, "BadRequest", "Start streaming activities should include text")
        if stream_type == "final":
            if kind != "message" or sequence is not None or not stream_id:
                raise _Refusal(400, "BadRequest", "final needs type message, a streamId, no seq")
        elif kind != "typing" or not isinstance(sequence, int):
            raise _Refusal(400, "BadRequest", "stream chunks are typing with a streamSequence")
        if not stream_id:
            if sequence != 1:
                raise _Refusal(400, "BadRequest", "the first streamSequence must be 1")
            message = self._new_message(conversation_id, body, None)
            message.streaming = message.streamed = True
            message.sequence = 1
            self._apply_chunk(message, stream_type, text)
            return 201, {"id": message.id}
        found = self._messages.get(str(stream_id))
        if found is None or found.conversation_id != conversation_id:
            raise _Refusal(404, "NotFound", "no such stream")
        message = found
        if message.stop_reason is not None:
            raise _Refusal(403, "ContentStreamNotAllowed", message.stop_reason)
        if not message.streaming:
            raise _Refusal(
                403,
                "ContentStreamNotAllowed",
                "Content stream is not allowed on an already completed streamed message",
            )
        if stream_type == "final":
            message.text = text
            message.streaming = False
            message.text_format = body.get("textFormat")
            message.history.append(text)
            message.feedback_loop = _feedback_loop(body)
            return 202, {}
        assert isinstance(sequence, int)
        if sequence <= message.sequence:
            raise _Refusal(400, "BadRequest", "streamSequence must increase")
        message.sequence = sequence
        self._apply_chunk(message, stream_type, text)
        return 202, {}

    def _apply_chunk(self, message: Message, stream_type: str, text: str) -> None:
        if stream_type == "informative":
            message.informative = text
            return
        if not text.startswith(message.text):
            raise _Refusal(
                400,
                "BadRequest",
                "Request streamed content should contain the previously streamed content",
            )
        message.text = text
        message.history.append(text)

    def _do_update(
        self, conversation_id: str, activity_id: str | None, body: Any
    ) -> tuple[int, Json]:
        message = self._messages.get(activity_id or "")
        if message is None or message.deleted or message.conversation_id != conversation_id:
            raise _Refusal(404, "ActivityNotFoundInConversation", "Unknown activity")
        if message.streaming:
            raise _Refusal(403, "ContentStreamNotAllowed", "the message is still streaming")
        if not isinstance(body, dict) or body.get("type") != "message":
            raise _Refusal(400, "BadArgument", "an update is a message activity")
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise _Refusal(400, "BadArgument", "a message needs text")
        message.text = text
        message.text_format = body.get("textFormat")
        message.updates += 1
        message.history.append(text)
        message.feedback_loop = _feedback_loop(body)
        return 200, {"id": message.id}

    def _do_delete(
        self, conversation_id: str, activity_id: str | None, body: Any
    ) -> tuple[int, Json]:
        message = self._messages.get(activity_id or "")
        if message is None or message.deleted or message.conversation_id != conversation_id:
            raise _Refusal(404, "ActivityNotFoundInConversation", "Unknown activity")
        message.deleted = True
        message.streaming = False
        return 200, {}

    def _new_message(self, conversation_id: str, body: Json, reply_to: str | None) -> Message:
        message_id = str(1_700_000_000_000 + next(self._ids))
        message = Message(
            message_id,
            conversation_id,
            text_format=body.get("textFormat"),
            reply_to_id=reply_to or body.get("replyToId"),
        )
        self._messages[message_id] = message
        return message

    def _take_failure(self, op: str) -> _Failure | None:
        with self._lock:
            for key in (op, "any"):
                queue = self._failures.get(key)
                if not queue or (key == "any" and op == "token"):
                    continue
                failure = queue[0]
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        queue.pop(0)
                return failure
        return None

    def _record(
        self,
        op: str,
        method: str,
        conversation_id: str | None,
        activity_id: str | None,
        body: Any,
        headers: dict[str, str],
        status: int,
    ) -> None:
        with self._lock:
            self.calls.append(
                Call(
                    op,
                    method,
                    conversation_id,
                    activity_id,
                    body,
                    headers,
                    status,
                    time.monotonic(),
                )
            )


_activity_ids = itertools.count(int(time.time() * 1000) * 10)


def next_activity_id() -> str:
    """A unique activity id, shaped like Teams' (a number in a string)."""
    return str(next(_activity_ids))


def _stream_info(body: Json) -> Json | None:
    """The stream fields of an activity: a streaminfo entity, else channelData."""
    for entity in body.get("entities") or []:
        if isinstance(entity, dict) and (
            entity.get("type") == "streaminfo" or "streamType" in entity
        ):
            return entity
    data = body.get("channelData")
    if isinstance(data, dict) and "streamType" in data:
        return data
    return None


def _feedback_loop(body: Json) -> bool:
    data = body.get("channelData")
    return isinstance(data, dict) and data.get("feedbackLoopEnabled") is True


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
