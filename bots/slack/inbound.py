"""Slack's inbound half: a slack-bolt AsyncApp whose listeners normalize, deduplicate and
enqueue, then acknowledge. Used as is by the HTTP route and by Socket Mode.

Bolt verifies the v0 signature (HMAC-SHA256, 5-minute window) and answers url_verification.
Listeners run before the response is sent (process_before_response), so a message is only
acknowledged once it is safely queued; when the queue is down Slack gets 503 and retries.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.base import Commands, Feedback, Intake, IntakeUnavailable, Rating
from bots.slack.commands import register_commands
from parley.message import InboundMessage
from parley.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "slack"

# Message subtypes that are still a person writing to us; every other subtype (edits,
# deletions, joins, our own chat.update echoes) is never answered.
_ANSWERABLE_SUBTYPES = {None, "thread_broadcast", "file_share"}


def create_slack_app(
    settings: Settings,
    intake: Intake,
    *,
    commands: Commands | None = None,
    feedback: Feedback | None = None,
    socket_mode: bool = False,
) -> AsyncApp:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    secret = settings.slack_signing_secret
    app = AsyncApp(
        logger=_bolt_logger(),
        client=AsyncWebClient(token=token, base_url=settings.slack_api_url),
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=True,
        request_verification_enabled=not socket_mode,
        # Our own messages (and chat.update echoes) never reach the listeners.
        ignoring_self_events_enabled=True,
    )

    async def enqueue(
        event: dict[str, Any], body: dict[str, Any], text: str, *, addressed: bool = True
    ) -> None:
        message = normalize(event, body, text, addressed=addressed)
        if message is None:
            return
        if await intake.submit(message):
            log.info("queued %s", message.message_key)
        else:
            log.info("duplicate delivery of %s ignored", message.message_key)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        if event.get("bot_id") or event.get("subtype") not in _ANSWERABLE_SUBTYPES:
            return
        await enqueue(event, body, strip_mention(event.get("text") or "", context.bot_user_id))

    @app.event("message")
    async def on_message(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        if event.get("subtype") not in _ANSWERABLE_SUBTYPES or event.get("bot_id"):
            return
        bot_user_id = context.bot_user_id
        if not event.get("user") or event.get("user") == bot_user_id:
            return
        text = event.get("text") or ""
        if event.get("channel_type") == "im":
            await enqueue(event, body, strip_mention(text, bot_user_id))
        elif bot_user_id and f"<@{bot_user_id}>" in text:
            # The app_mention event for this message answers it; whichever of the two
            # arrives first is queued and the other is a duplicate of the same message.
            await enqueue(event, body, strip_mention(text, bot_user_id))
        elif event.get("thread_ts"):
            if await intake.is_active_thread(
                PLATFORM, _team(event, body), event["channel"], event["thread_ts"]
            ):
                await enqueue(event, body, text, addressed=False)
        elif await intake.reads_channel(PLATFORM, _team(event, body), event["channel"]):
            # An admin set this channel to `mode all`: every new message is a question.
            await enqueue(event, body, text, addressed=False)

    @app.event("reaction_added")
    async def on_reaction_added(event: dict[str, Any], body: dict[str, Any], context: Any) -> None:
        await rate(event, body, context, added=True)

    @app.event("reaction_removed")
    async def on_reaction_removed(
        event: dict[str, Any], body: dict[str, Any], context: Any
    ) -> None:
        await rate(event, body, context, added=False)

    async def rate(
        event: dict[str, Any], body: dict[str, Any], context: Any, *, added: bool
    ) -> None:
        """👍/👎 on one of Parley's answers rates it; other reactions mean nothing."""
        item = event.get("item")
        rating = reaction_rating(event.get("reaction"))
        if feedback is None or rating is None or not isinstance(item, dict):
            return
        channel, ts, user = item.get("channel"), item.get("ts"), event.get("user")
        if item.get("type") != "message" or event.get("item_user") != context.bot_user_id:
            return
        if not (isinstance(channel, str) and isinstance(ts, str) and isinstance(user, str)):
            return
        answer, team = f"{channel}:{ts}", _team(event, body)
        try:
            if added:
                await feedback.rate(PLATFORM, team, answer, user, rating)
            else:
                await feedback.withdraw(PLATFORM, team, answer, user, rating)
        except RedisError as exc:
            # A rating is not worth a retry storm from Slack: log it and move on.
            log.warning("could not record a rating: %r", exc)

    if commands is not None:
        register_commands(app, settings.slack_command, commands)

    # Acknowledge every other subscribed event, so that Slack does not retry them.
    @app.event(re.compile(".*"))
    async def on_other_event() -> None:
        return None

    @app.error
    async def on_error(error: Exception, response: BoltResponse | None) -> None:
        if isinstance(error, IntakeUnavailable) and response is not None:
            log.warning("queue unavailable, asking Slack to retry: %s", error)
            response.status = 503
            response.body = "queue unavailable, retry later"
        else:
            log.error("error handling a Slack request: %r", error)

    return app


def _bolt_logger() -> logging.Logger:
    """Bolt copies this logger's level into its middleware loggers. Its request verification
    logs the whole body (message text) at INFO when a signature is invalid: keep only
    warnings and errors."""
    bolt_log = logging.getLogger("bots.slack.bolt")
    bolt_log.setLevel(logging.WARNING)
    return bolt_log


def slack_routes(app: AsyncApp, settings: Settings) -> list[web.RouteDef]:
    """POST /slack/events for the Events API and slash commands."""
    secret = settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if secret else None

    async def slack_events(request: web.Request) -> web.Response:
        try:
            bolt_request = await to_bolt_request(request)
            well_formed = is_well_formed(bolt_request.body)
        except Exception:
            well_formed = False
        if not well_formed:
            # Bolt parses before it verifies, and its middleware assumes Slack's shapes:
            # check the signature here so that garbage from strangers still gets 401, and
            # only bad payloads that Slack signed get 400.
            if not await _signed_by_slack(request, verifier):
                return web.Response(status=401, text="invalid request signature")
            log.warning("rejecting a signed Slack request whose body is malformed")
            return web.Response(status=400, text="malformed request body")
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    return [web.post("/slack/events", slack_events)]


# Event fields the listeners and bolt's middleware read as strings.
_EVENT_STRINGS = (
    "type",
    "subtype",
    "user",
    "channel",
    "channel_type",
    "ts",
    "thread_ts",
    "text",
    "bot_id",
    "team",
)


def is_well_formed(body: object) -> bool:
    """The shape bolt and the listeners rely on: an object whose `event`, if any, is an
    object whose string fields are strings."""
    if not isinstance(body, dict) or not isinstance(body.get("type", ""), str):
        return False
    if "event" not in body:
        return True
    event = body["event"]
    # null counts as absent, except for the event type, which bolt matches on.
    return isinstance(event, dict) and all(
        isinstance(event[name], str)
        for name in _EVENT_STRINGS
        if name in event and (event[name] is not None or name == "type")
    )


async def _signed_by_slack(request: web.Request, verifier: SignatureVerifier | None) -> bool:
    if verifier is None:
        return False
    try:
        return verifier.is_valid_request(await request.read(), dict(request.headers))
    except UnicodeDecodeError:  # Slack only sends UTF-8; such a body cannot be verified
        return False


def normalize(
    event: dict[str, Any], body: dict[str, Any], text: str, *, addressed: bool = True
) -> InboundMessage | None:
    """Turn a Slack message event into the platform-neutral message, or None if unusable."""
    channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
    if not (channel and ts and user):
        log.warning("ignoring a Slack event without channel, ts or user")
        return None
    team = _team(event, body)
    thread = event.get("thread_ts") or ts
    return InboundMessage(
        platform=PLATFORM,
        tenant=team,
        channel=channel,
        thread=thread,
        user=user,
        text=text,
        message_id=f"{channel}:{ts}",
        reply_to={"channel": channel, "thread_ts": thread, "team": team, "user": user},
        received_at=time.time(),
        addressed=addressed,
        direct=event.get("channel_type") == "im",
    )


_GOOD = {"+1", "thumbsup"}
_BAD = {"-1", "thumbsdown"}


def reaction_rating(reaction: object) -> Rating | None:
    """good, bad or None for a reaction name (skin tones ignored: "+1::skin-tone-3")."""
    if not isinstance(reaction, str):
        return None
    name = reaction.partition("::")[0]
    if name in _GOOD:
        return "good"
    if name in _BAD:
        return "bad"
    return None


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """Remove mentions of the bot (`<@U123>` or `<@U123|name>`); keep other people's."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _team(event: dict[str, Any], body: dict[str, Any]) -> str:
    team = body.get("team_id") or event.get("team") or "unknown"
    return str(team)
