"""Teams' inbound half: POST /api/messages, the Bot Framework messaging endpoint.

Every activity is authenticated before anything else happens: the Bearer JWT must be signed
by a key from the Bot Framework's OpenID metadata (jwks_uri; cached a day, fetched again
when a token names an unknown key), issued by https://api.botframework.com for our app id,
unexpired (five minutes of clock skew), by a key endorsed for the activity's channelId and
with a serviceurl claim equal to the activity's serviceUrl. Anything else gets 401 and
changes nothing. Requests without a token are accepted only when PARLEY_TEAMS_ALLOW_ANONYMOUS
is set (the Bot Framework Emulator), which is announced by a warning at start-up.

Messages are normalized (personal chats; channel posts and group chats that @mention the
bot, the mention removed by its entity so the bot's display name does not matter), queued
through the Intake (which deduplicates on the activity id) and acknowledged with 202 at
once: the answer comes from the worker, which also shows the typing indicator. Channel
posts without a mention are queued only as follow-ups in a thread Parley takes part in, or
as new posts in a channel an admin set to `mode all`. A message that is a `config …`
command runs in the background instead (bots.teams.commands). Ratings arrive as the
feedback buttons' invoke and as "like" reactions. Other activity types are acknowledged
with 200 and ignored.

Why not botbuilder's JwtTokenValidation: it fetches the metadata with blocking `requests`
calls without a timeout inside the event loop, keeps the metadata URL in a class-global,
raises IndexError on an unknown key and refreshes at most hourly, treats an empty app id
as "authentication disabled", and sends tokens of other issuers (emulator, skills) to
login.microsoftonline.com. The checks here are the same ones, done with PyJWT; botbuilder
supplies the constants, the endorsement check and the activity schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import jwt
from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes
from botframework.connector.auth import (
    AuthenticationConstants,
    EndorsementsValidator,
)
from jwt.algorithms import RSAAlgorithm
from redis.exceptions import RedisError

from bots.base import CommandCall, Commands, Feedback, Intake, IntakeUnavailable, Rating
from bots.teams.commands import (
    COMMAND,
    CommandRequest,
    TeamsCommandRunner,
    bot_name,
    mark_mentions,
    parse_command,
)
from bots.teams.outbound import create_tokens
from parley.message import InboundMessage
from parley.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "teams"
ROUTE = "/api/messages"

# Activities are a few KB; Teams caps messages at about 100 KB (UTF-16).
MAX_ACTIVITY_BYTES = 256 * 1024
CLOCK_SKEW_SECONDS = 300
KEYS_MAX_AGE_SECONDS = 24 * 3600
# A token naming an unknown key fetches the keys again, but not more often than this: a
# stranger's made-up key ids must not turn the ingress into a JWKS request amplifier.
KEYS_MIN_REFRESH_SECONDS = 300.0
HTTP_TIMEOUT = 10.0

ISSUER: str = AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
ALGORITHMS: tuple[str, ...] = tuple(AuthenticationConstants.ALLOWED_SIGNING_ALGORITHMS)
SERVICE_URL_CLAIM: str = AuthenticationConstants.SERVICE_URL_CLAIM

_AT = re.compile(r"<at\b[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_FEEDBACK_RATINGS: dict[str, Rating] = {"like": "good", "dislike": "bad"}
_SPACES = re.compile(r"[ \t\u00a0]{2,}")


class Unauthorized(Exception):
    """The request is not from the Bot Framework for this bot: 401."""


class KeysUnavailable(Exception):
    """The signing keys could not be fetched, so nothing can be verified now: 503."""


# -- signing keys ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningKey:
    key: Any  # cryptography's RSAPublicKey
    endorsements: frozenset[str]


class OpenIdKeys:
    """The signing keys listed at the OpenID metadata's jwks_uri.

    Cached for `max_age`; a key id not in the cache fetches them again (key rollover), at
    most once per `min_refresh_interval`. When a scheduled refresh fails the cached keys
    stay in use; with none cached, KeysUnavailable.
    """

    def __init__(
        self,
        metadata_url: str,
        *,
        max_age: float = KEYS_MAX_AGE_SECONDS,
        min_refresh_interval: float = KEYS_MIN_REFRESH_SECONDS,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.metadata_url = metadata_url
        self._max_age = max_age
        self._min_refresh = min_refresh_interval
        self._timeout = timeout
        self._keys: dict[str, SigningKey] | None = None
        self._fetched_at = 0.0
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> SigningKey | None:
        now = time.monotonic()
        if self._keys is None or now - self._fetched_at > self._max_age:
            await self._refresh(now)
        elif kid not in self._keys and (
            self._tried_at is None or now - self._tried_at >= self._min_refresh
        ):
            log.info("token signed by unknown key %r: fetching the signing keys again", kid)
            await self._refresh(now)
        assert self._keys is not None
        return self._keys.get(kid)

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self._tried_at is not None and self._tried_at >= asked_at:
                if self._keys is None:
                    raise KeysUnavailable("the signing keys could not be fetched")
                return  # another request refreshed while this one waited
            self._tried_at = time.monotonic()
            try:
                keys = await self._fetch()
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                if self._keys is None:
                    log.error("cannot fetch Bot Framework signing keys: %r", exc)
                    raise KeysUnavailable(f"signing keys unavailable: {exc!r}") from exc
                log.warning("cannot refresh Bot Framework signing keys, keeping old ones: %r", exc)
                return
            self._keys, self._fetched_at = keys, time.monotonic()
            log.info("fetched %d Bot Framework signing keys", len(keys))

    async def _fetch(self) -> dict[str, SigningKey]:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(self.metadata_url) as resp:
                resp.raise_for_status()
                metadata = await resp.json(content_type=None)
            jwks_uri = metadata["jwks_uri"]
            if not isinstance(jwks_uri, str):
                raise TypeError("jwks_uri is not a string")
            async with session.get(jwks_uri) as resp:
                resp.raise_for_status()
                jwks = await resp.json(content_type=None)
        keys: dict[str, SigningKey] = {}
        for raw in jwks["keys"]:
            if not isinstance(raw, dict) or raw.get("kty") != "RSA":
                continue
            kid, endorsements = raw.get("kid"), raw.get("endorsements", [])
            if not isinstance(kid, str) or not isinstance(endorsements, list):
                continue
            try:
                public_key = RSAAlgorithm.from_jwk(json.dumps(raw))
            except (jwt.InvalidKeyError, ValueError, KeyError):
                log.warning("ignoring a malformed signing key %s", kid)
                continue
            keys[kid] = SigningKey(
                public_key, frozenset(e for e in endorsements if isinstance(e, str))
            )
        return keys


# -- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent an activity: the verified token's claims and its key's endorsements, or
    anonymous (the Emulator, when allowed)."""

    claims: Mapping[str, Any]
    endorsements: frozenset[str] | None  # None: anonymous

    @property
    def anonymous(self) -> bool:
        return self.endorsements is None

    def check_activity(self, channel_id: str | None, service_url: str | None) -> None:
        """The parts of authentication that need the activity itself."""
        if self.endorsements is None:
            return
        if not channel_id or not EndorsementsValidator.validate(channel_id, self.endorsements):
            raise Unauthorized(f"signing key not endorsed for channel {channel_id!r}")
        claimed = self.claims.get(SERVICE_URL_CLAIM)
        if not service_url or claimed != service_url:
            raise Unauthorized("serviceurl claim does not match the activity's serviceUrl")


class BotFrameworkAuth:
    def __init__(self, *, app_id: str | None, keys: OpenIdKeys, allow_anonymous: bool) -> None:
        self._app_id = app_id
        self._keys = keys
        self._allow_anonymous = allow_anonymous

    async def verify(self, authorization: str | None) -> Caller:
        """Raises Unauthorized, or KeysUnavailable when nothing can be verified now."""
        if not authorization:
            if self._allow_anonymous:
                return Caller({}, None)
            raise Unauthorized("no Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization is not a Bearer token")
        if not self._app_id:
            raise Unauthorized("no MicrosoftAppId configured to check the audience against")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"token signing algorithm {alg!r} not allowed")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token names no signing key")
        key = await self._keys.get(kid)
        if key is None:
            raise Unauthorized(f"token signed by unknown key {kid!r}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._app_id,
                issuer=ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return Caller(claims, key.endorsements)


# -- normalizing -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message activity, read: where it was written and whether it addresses the bot."""

    kind: str  # "personal" | "channel" | "groupChat"
    tenant: str
    channel: str  # conversation.id before ';' (channel-level settings use this)
    thread: str
    user: str
    text: str
    activity_id: str
    mentioned: bool
    reply_to: dict[str, Any]

    @property
    def addressed(self) -> bool:
        return self.kind == "personal" or self.mentioned

    @property
    def new_post(self) -> bool:
        """A channel post that starts its own thread, not a reply in one."""
        return self.kind == "channel" and self.thread == self.activity_id

    def message(self) -> InboundMessage:
        return InboundMessage(
            platform=PLATFORM,
            tenant=self.tenant,
            channel=self.channel,
            thread=self.thread,
            user=self.user,
            text=self.text,
            # Activity ids are unique within a conversation, not across them.
            message_id=f"{self.channel}:{self.activity_id}",
            reply_to=self.reply_to,
            received_at=time.time(),
            addressed=self.addressed,
            direct=self.kind == "personal",
        )


def read_message(
    activity: Any,
    raw: Mapping[str, Any],
    *,
    app_id: str | None,
    default_tenant: str | None = None,
) -> Incoming | None:
    """Turn a message activity into an Incoming, or None when it cannot be answered."""
    conversation, sender = activity.conversation, activity.from_property
    conversation_id = getattr(conversation, "id", None)
    activity_id = activity.id
    if not (isinstance(conversation_id, str) and conversation_id and activity_id and sender):
        log.warning("ignoring a Teams message without conversation, id or sender")
        return None
    bot_ids = bot_ids_of(activity, app_id)
    if sender.id in bot_ids:
        return None
    user = sender.aad_object_id or sender.id
    if not isinstance(user, str) or not user:
        log.warning("ignoring a Teams message without a sender id")
        return None
    kind = _kind(conversation)
    channel, _, rest = conversation_id.partition(";")
    if not channel:
        log.warning("ignoring a Teams message whose conversation id names no conversation")
        return None
    thread = channel
    if kind == "channel":
        # A channel thread is conversation.id + ";messageid=<root>"; a new post is its own root.
        thread = _message_id_of(rest) or str(activity_id)
    text, mentioned = strip_mentions(activity.text or "", raw.get("entities"), bot_ids)
    tenant = _tenant(raw) or default_tenant or "unknown"
    return Incoming(
        kind=kind,
        tenant=tenant,
        channel=channel,
        thread=thread,
        user=user,
        text=text,
        activity_id=str(activity_id),
        mentioned=mentioned,
        reply_to=conversation_reference(
            activity, tenant, channel, thread if kind == "channel" else None
        ),
    )


def bot_ids_of(activity: Any, app_id: str | None) -> set[str]:
    """The ids the bot goes by in an activity: the recipient, and the app id as such and
    as a Teams bot id."""
    recipient = getattr(activity, "recipient", None)
    candidates = (getattr(recipient, "id", None), app_id, f"28:{app_id}" if app_id else None)
    return {i for i in candidates if isinstance(i, str) and i}


def strip_mentions(text: str, entities: object, bot_ids: set[str]) -> tuple[str, bool]:
    """Remove the bot's mentions, found by the mention entities whose mentioned.id is the
    bot (so a renamed bot is still found); other people's mentions keep their names.
    Returns the text and whether the bot was mentioned."""
    mentioned = False
    names: set[str] = set()
    for entity in entities if isinstance(entities, list) else []:
        if not isinstance(entity, dict) or str(entity.get("type", "")).lower() != "mention":
            continue
        who = entity.get("mentioned")
        if not isinstance(who, dict) or who.get("id") not in bot_ids:
            continue
        mentioned = True
        written = entity.get("text")
        if isinstance(written, str) and written:
            text = text.replace(written, " ")
            if match := _AT.fullmatch(written.strip()):
                names.add(match.group(1).strip())
        if isinstance(who.get("name"), str):
            names.add(who["name"].strip())

    def keep_name(match: re.Match[str]) -> str:
        inner = match.group(1)
        return " " if inner.strip() in names else inner

    text = _AT.sub(keep_name, text)
    return _SPACES.sub(" ", text).strip(), mentioned


def conversation_reference(
    activity: Any, tenant: str, channel: str, thread: str | None
) -> dict[str, Any]:
    """The ConversationReference as JSON: all the worker needs to answer proactively.

    It travels through the broker, so people's display names are left out; a channel
    reply is addressed to the thread (`;messageid=`), which is what threads it in Teams.
    """
    reference = TurnContext.get_conversation_reference(activity)
    if reference.user is not None:
        reference.user.name = None
    if reference.conversation is not None:
        reference.conversation.name = None
        if thread is not None:
            reference.conversation.id = f"{channel};messageid={thread}"
    data = cast(dict[str, Any], reference.serialize())
    conversation = data.setdefault("conversation", {})
    conversation.pop("tenantID", None)  # botbuilder's spelling; Teams writes tenantId
    conversation["tenantId"] = tenant
    return data


def _kind(conversation: Any) -> str:
    kind = getattr(conversation, "conversation_type", None)
    if kind in ("personal", "channel", "groupChat"):
        return str(kind)
    # The Emulator and Web Chat send no conversationType.
    return "groupChat" if getattr(conversation, "is_group", False) else "personal"


def _message_id_of(rest: str) -> str | None:
    for item in rest.split(";"):
        key, _, value = item.partition("=")
        if key.strip().lower() == "messageid" and value.strip():
            return value.strip()
    return None


def _tenant(raw: Mapping[str, Any]) -> str | None:
    conversation = raw.get("conversation")
    if isinstance(conversation, dict) and isinstance(conversation.get("tenantId"), str):
        return str(conversation["tenantId"]) or None
    data = raw.get("channelData")
    tenant = data.get("tenant") if isinstance(data, dict) else None
    if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
        return str(tenant["id"]) or None
    return None


# -- the route -------------------------------------------------------------------------


class TeamsIngress:
    """POST /api/messages: verify, then enqueue questions, run `config` commands and
    record ratings; acknowledge at once."""

    def __init__(
        self,
        settings: Settings,
        intake: Intake,
        *,
        keys: OpenIdKeys | None = None,
        commands: Commands | None = None,
        feedback: Feedback | None = None,
    ):
        self._app_id = settings.microsoft_app_id
        self._intake = intake
        self._auth = BotFrameworkAuth(
            app_id=settings.microsoft_app_id,
            keys=keys or OpenIdKeys(settings.teams_openid_metadata_url),
            allow_anonymous=settings.teams_allow_anonymous,
        )
        self._default_tenant = settings.microsoft_app_tenant_id
        # Answering a command needs the bot's own token, as the worker's replies do.
        self.commands = (
            TeamsCommandRunner(commands, create_tokens(settings)) if commands is not None else None
        )
        self._feedback = feedback

    async def handle(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_ACTIVITY_BYTES:
            return web.Response(status=413, text="activity too large")
        body = await request.read()  # over the app's client_max_size: 413 by aiohttp
        if len(body) > MAX_ACTIVITY_BYTES:
            return web.Response(status=413, text="activity too large")
        try:
            caller = await self._auth.verify(request.headers.get("Authorization"))
        except Unauthorized as exc:
            log.warning("refused a Teams request: %s", exc)
            return web.Response(status=401, text="unauthorized")
        except KeysUnavailable:
            return web.Response(status=503, text="cannot verify requests right now, retry later")
        activity, raw = _parse(body)
        if activity is None or raw is None:
            return web.Response(status=400, text="malformed activity")
        try:
            caller.check_activity(activity.channel_id, activity.service_url)
        except Unauthorized as exc:
            log.warning("refused a Teams activity: %s", exc)
            return web.Response(status=401, text="unauthorized")
        if activity.type == ActivityTypes.invoke:
            return await self._invoke(activity, raw)
        if activity.type == ActivityTypes.message_reaction:
            return await self._reaction(activity, raw)
        if activity.type != ActivityTypes.message:
            log.debug("ignoring a Teams %s activity", activity.type)
            return web.Response(status=200)
        incoming = read_message(
            activity, raw, app_id=self._app_id, default_tenant=self._default_tenant
        )
        if incoming is None:
            return web.Response(status=200)
        if incoming.addressed and self._run_command(activity, raw, incoming):
            return web.Response(status=202)
        try:
            if not incoming.addressed and not await self._reads(incoming):
                return web.Response(status=200)
            if not incoming.text:
                log.info("ignoring an empty Teams message %s", incoming.activity_id)
                return web.Response(status=200)
            message = incoming.message()
            if await self._intake.submit(message):
                log.info("queued %s (%s)", message.message_key, incoming.kind)
            else:
                log.info("duplicate delivery of %s ignored", message.message_key)
        except IntakeUnavailable as exc:
            log.warning("queue unavailable, asking Teams to retry: %s", exc)
            return web.Response(status=503, text="queue unavailable, retry later")
        return web.Response(status=202)

    async def _reads(self, incoming: Incoming) -> bool:
        """Whether a message that does not address the bot is for it all the same: a reply
        in a channel thread Parley takes part in, or a new post in a channel an admin set to
        `mode all`. Teams delivers channel messages without a mention only with the
        ChannelMessage.Read.Group permission (resource-specific consent, in the manifest)."""
        if incoming.kind != "channel":
            return False
        if incoming.new_post:
            return await self._intake.reads_channel(PLATFORM, incoming.tenant, incoming.channel)
        return await self._intake.is_active_thread(
            PLATFORM, incoming.tenant, incoming.channel, incoming.thread
        )

    # -- commands ----------------------------------------------------------------------

    def _run_command(self, activity: Any, raw: Mapping[str, Any], incoming: Incoming) -> bool:
        """Start the admin command this message is, if it is one."""
        if self.commands is None:
            return False
        entities, bot_ids = raw.get("entities"), bot_ids_of(activity, self._app_id)
        marked = mark_mentions(activity.text or "", entities, bot_ids)
        text = parse_command(strip_mentions(marked, entities, bot_ids)[0])
        sender, recipient = activity.from_property, activity.recipient
        if text is None or not isinstance(activity.service_url, str):
            return False
        if not isinstance(getattr(sender, "id", None), str):
            return False
        personal = incoming.kind == "personal"
        conversation_id = str(activity.conversation.id)
        in_thread = incoming.kind != "channel" or not incoming.new_post
        call = CommandCall(
            platform=PLATFORM,
            tenant=incoming.tenant,
            channel=incoming.channel,
            user=incoming.user,
            text=text,
            prefix=COMMAND if personal else f"@{bot_name(entities, bot_ids) or 'Parley'} {COMMAND}",
            direct=personal,
            # Typed inside a thread (a channel reply; a chat is one thread), so that
            # `config forget thread` needs no link there.
            thread=incoming.thread if in_thread else None,
        )
        bot = {"id": getattr(recipient, "id", None) or f"28:{self._app_id}"}
        if isinstance(getattr(recipient, "name", None), str):
            bot["name"] = recipient.name
        started = self.commands.start(
            CommandRequest(
                call=call,
                kind=incoming.kind,
                service_url=activity.service_url,
                conversation_id=conversation_id,
                activity_id=incoming.activity_id,
                roster=_team_id(raw) or incoming.channel,
                bot=bot,
                sender=sender.id,
            )
        )
        log.info(
            "admin command %s in %s conversation %s",
            "started" if started else "redelivered, ignored",
            incoming.kind,
            incoming.channel,
        )
        return True

    # -- ratings -----------------------------------------------------------------------

    async def _invoke(self, activity: Any, raw: Mapping[str, Any]) -> web.Response:
        """Teams' feedback buttons under an answer: a message/submitAction invoke, answered
        with an invoke response. The comment people may write is not kept (it is free
        text, possibly personal data): only the rating."""
        if activity.name != "message/submitAction":
            return web.Response(status=200)
        value = raw.get("value")
        if not isinstance(value, dict) or value.get("actionName") != "feedback":
            return web.Response(status=200)
        action = value.get("actionValue")
        if isinstance(action, str):  # some clients send it as a JSON string
            try:
                action = json.loads(action)
            except ValueError:
                action = None
        reaction = action.get("reaction") if isinstance(action, dict) else None
        rating = _FEEDBACK_RATINGS.get(reaction) if isinstance(reaction, str) else None
        rated = _rated(activity, raw, self._default_tenant)
        if rating is None or rated is None:
            return web.Response(status=400, text="malformed feedback")
        if self._feedback is not None:
            tenant, answer, user = rated
            try:
                await self._feedback.rate(PLATFORM, tenant, answer, user, rating)
            except RedisError as exc:
                log.warning("could not record a rating: %r", exc)
                return web.Response(status=503, text="cannot record feedback right now")
        return web.json_response({"status": 200})

    async def _reaction(self, activity: Any, raw: Mapping[str, Any]) -> web.Response:
        """A 👍 (Teams' "like") added to or removed from one of Parley's answers. Teams has
        no 👎 reaction among its standard ones; a bad rating comes from the buttons."""
        rated = _rated(activity, raw, self._default_tenant)
        if self._feedback is None or rated is None:
            return web.Response(status=200)
        tenant, answer, user = rated
        try:
            for field, added in (("reactionsAdded", True), ("reactionsRemoved", False)):
                reactions = raw.get(field)
                for reaction in reactions if isinstance(reactions, list) else []:
                    if not isinstance(reaction, dict) or reaction.get("type") != "like":
                        continue
                    if added:
                        await self._feedback.rate(PLATFORM, tenant, answer, user, "good")
                    else:
                        await self._feedback.withdraw(PLATFORM, tenant, answer, user, "good")
        except RedisError as exc:
            # A rating is not worth a retry storm from Teams: log it and move on.
            log.warning("could not record a rating: %r", exc)
        return web.Response(status=200)


def _rated(
    activity: Any, raw: Mapping[str, Any], default_tenant: str | None
) -> tuple[str, str, str] | None:
    """(tenant, answer id, user) of a rating: the answer is the message it replies to,
    named as the pipeline records it ("<conversation before ';'>:<activity id>")."""
    conversation_id = getattr(activity.conversation, "id", None)
    reply_to_id, sender = activity.reply_to_id, activity.from_property
    if not (isinstance(conversation_id, str) and conversation_id.partition(";")[0]):
        return None
    if not (isinstance(reply_to_id, str) and reply_to_id and sender is not None):
        return None
    user = sender.aad_object_id or sender.id
    if not isinstance(user, str) or not user:
        return None
    tenant = _tenant(raw) or default_tenant or "unknown"
    return tenant, f"{conversation_id.partition(';')[0]}:{reply_to_id}", user


def _team_id(raw: Mapping[str, Any]) -> str | None:
    data = raw.get("channelData")
    team = data.get("team") if isinstance(data, dict) else None
    if isinstance(team, dict) and isinstance(team.get("id"), str) and team["id"]:
        return str(team["id"])
    return None


def teams_routes(
    settings: Settings,
    intake: Intake,
    *,
    commands: Commands | None = None,
    feedback: Feedback | None = None,
) -> list[web.RouteDef]:
    """POST /api/messages, the messaging endpoint of the Azure Bot registration."""
    if settings.teams_allow_anonymous:
        log.warning(
            "PARLEY_TEAMS_ALLOW_ANONYMOUS is on: %s accepts requests WITHOUT authentication. "
            "Only for the Bot Framework Emulator on a developer machine; never in production.",
            ROUTE,
        )
    ingress = TeamsIngress(settings, intake, commands=commands, feedback=feedback)
    return [web.post(ROUTE, ingress.handle)]


def _parse(body: bytes) -> tuple[Any, dict[str, Any] | None]:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(raw, dict):
        return None, None
    try:
        activity = Activity().deserialize(raw)
    except Exception:  # msrest raises its own DeserializationError for wrong types
        return None, None
    return activity, raw
