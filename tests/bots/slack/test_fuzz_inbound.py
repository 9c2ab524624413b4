"""Fuzz the Slack ingress: correctly signed deliveries with generated bodies, in process
over real HTTP. Whatever Slack (or a compromised signing secret) sends, the ingress answers
without a 5xx, logs no unhandled error, and queues only valid sealed messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from bots.slack.inbound import create_slack_app, slack_routes
from parley.server import create_web_app
from tests.fakes.slack_api import FakeSlack
from tests.support import slack_events as ev
from tests.support.config import make_sealer, make_settings
from tests.support.queue import assert_no_errors, queued_messages
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake

QUEUE = "fuzz-slack-test"
Client = TestClient[Any, Any]
ALLOWED = {200, 400, 401, 404, 413}

# -- strategies ------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
huge = st.sampled_from([10_000, 300_000, 1_100_000]).map(lambda n: "\u00e9\U0001f600x" * (n // 3))
ts_like = st.sampled_from(["1700000000.000100", "1700000000.000200"]) | st.from_regex(
    r"\A[0-9]{1,10}\.[0-9]{1,6}\Z"
)
ids = st.sampled_from(["C1", "D1", "G1", ev.BOT_USER, "U1", ev.BOT_ID]) | st.text(
    min_size=1, max_size=12
)
texts = st.sampled_from([f"<@{ev.BOT_USER}> help", f"<@{ev.BOT_USER}|x>", "hi", ""]) | st.text()


def field(typical: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes any JSON value of the wrong type, rarely huge."""
    return st.integers(0, 39).flatmap(
        lambda roll: huge if roll == 0 else json_values if roll < 8 else typical
    )


event_types = st.sampled_from(["app_mention", "message", "reaction_added", "app_home_opened"])
EVENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": field(event_types),
    "user": field(ids),
    "text": field(texts),
    "ts": field(ts_like),
    "channel": field(ids),
    "thread_ts": field(ts_like),
    "event_ts": field(ts_like),
    "channel_type": field(st.sampled_from(["im", "channel", "group", "mpim"])),
    "subtype": field(st.sampled_from(["thread_broadcast", "file_share", "message_changed"])),
    "bot_id": field(ids),
    "team": field(st.just(ev.TEAM)),
    "blocks": json_values,
}
REQUIRED = ("type", "user", "text", "ts", "channel")
# Envelopes that reach the listeners: the usual fields present, each maybe wrong.
plausible_events = st.fixed_dictionaries(
    {k: EVENT_FIELDS[k] for k in REQUIRED},
    optional={k: v for k, v in EVENT_FIELDS.items() if k not in REQUIRED},
)
# Any subset of the fields.
sparse_events = st.fixed_dictionaries({}, optional=EVENT_FIELDS)
plausible_envelopes = st.fixed_dictionaries(
    {
        "type": st.just("event_callback"),
        "team_id": st.just(ev.TEAM),
        "event_id": st.from_regex(r"\AEv[0-9A-Z]{1,12}\Z"),
        "event": plausible_events,
    },
    optional={"api_app_id": field(st.just(ev.API_APP_ID)), "authorizations": json_values},
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": field(st.sampled_from(["event_callback", "url_verification", "app_rate_limited"])),
        "event": st.one_of(sparse_events, json_values),
        "team_id": field(st.just(ev.TEAM)),
        "api_app_id": field(st.just(ev.API_APP_ID)),
        "event_id": field(st.from_regex(r"\AEv[0-9A-Z]{1,12}\Z")),
        "event_time": json_values,
        "challenge": json_values,
        "token": json_values,
        "authorizations": json_values,
        "enterprise_id": json_values,
        "is_enterprise_install": json_values,
    },
)
bodies = st.one_of(plausible_envelopes, plausible_envelopes, envelopes, json_values).map(
    lambda value: json.dumps(value).encode()
)


# -- the ingress -----------------------------------------------------------------------


@pytest.fixture
async def client(redis_url: str, aredis: Redis, fake_slack: FakeSlack) -> AsyncIterator[Client]:
    config = make_settings(
        slack_bot_token=ev.BOT_TOKEN,
        slack_signing_secret=ev.SIGNING_SECRET,
        slack_api_url=fake_slack.url,
        redis_url=redis_url,
        queue_name=QUEUE,
    )
    intake = QueueIntake(
        aredis,
        publisher(create_celery(config), config),
        make_sealer(),
        dedupe_ttl=600,
        thread_ttl=600,
    )
    app = create_web_app(
        routes=slack_routes(create_slack_app(config, intake), config), redis=aredis
    )
    c: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await c.start_server()
    yield c
    await c.close()


def drain_queue(sync_redis: redis.Redis) -> int:
    """Open every queued task (it must be a valid sealed message), then empty the queue."""
    messages = queued_messages(sync_redis, QUEUE)
    sync_redis.delete(QUEUE)
    for message in messages:
        assert message.platform == "slack"
        assert message.channel
        assert message.thread
        assert message.user
    return len(messages)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=bodies)
async def test_signed_json_bodies_never_get_a_5xx(
    client: Client, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    resp = await client.post("/slack/events", data=body, headers=ev.sign(body))
    text = await resp.text()
    assert resp.status in ALLOWED, (resp.status, text, body[:2000])
    assert_no_errors(caplog)
    event(f"HTTP {resp.status}, {drain_queue(sync_redis)} queued")


form_bodies = st.dictionaries(
    st.sampled_from(["payload", "command", "text", "team_id", "channel_id", "user_id", "ssl_check"])
    | st.text(max_size=8),
    st.text(max_size=60) | json_values.map(json.dumps),
    max_size=6,
).map(lambda form: urlencode(form).encode())
raw_bodies = st.binary(max_size=300) | st.text(max_size=300).map(str.encode)


@FUZZ
@given(
    body=st.one_of(form_bodies, raw_bodies),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "text/plain", ""]
    ),
)
async def test_signed_forms_and_raw_bytes_never_get_a_5xx(
    client: Client,
    sync_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
) -> None:
    headers = ev.sign(body)
    headers["Content-Type"] = content_type
    resp = await client.post("/slack/events", data=body, headers=headers)
    text = await resp.text()
    assert resp.status in ALLOWED, (resp.status, text, body[:2000], content_type)
    assert_no_errors(caplog)
    event(f"HTTP {resp.status}, {drain_queue(sync_redis)} queued")


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": null}',
        b'{"event": []}',
        b'{"event": "x"}',
        b'{"type": "event_callback", "event": null}',
        b'{"type": "event_callback", "event": 1}',
    ],
)
async def test_a_non_object_event_is_refused_not_500(
    client: Client, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    resp = await client.post("/slack/events", data=body, headers=ev.sign(body))
    assert resp.status in ALLOWED
    assert_no_errors(caplog)


def _message(**fields: Any) -> dict[str, Any]:
    return {"type": "message", "user": "U1", "channel": "C1", "ts": ev.next_ts(), **fields}


@pytest.mark.parametrize(
    "event",
    [
        # on_message: `f"<@{bot_user_id}>" in text` with a number
        _message(text=5),
        # strip_mention: re.sub on a list
        _message(type="app_mention", text=["x"]),
        # normalize: InboundMessage(thread=5) fails validation
        _message(text="hi", channel_type="im", thread_ts=5),
        # on_message: `event.get("subtype") not in {...}` with a list (unhashable)
        _message(text="hi", channel_type="im", subtype=[]),
        # normalize: InboundMessage(user="") fails validation (min_length=1)
        _message(type="app_mention", text="hi", user=""),
        _message(type="app_mention", text="hi", channel=""),
        # slack-bolt matches the catch-all listener's regex against a list
        _message(type=[], text="hi"),
    ],
    ids=[
        "text-number",
        "mention-text-list",
        "thread_ts-number",
        "subtype-list",
        "empty-user",
        "empty-channel",
        "type-list",
    ],
)
async def test_wrong_typed_fields_are_refused_not_500(
    client: Client, caplog: pytest.LogCaptureFixture, event: dict[str, Any]
) -> None:
    body = json.dumps(ev.envelope(event)).encode()
    resp = await client.post("/slack/events", data=body, headers=ev.sign(body))
    assert resp.status in ALLOWED
    assert_no_errors(caplog)


async def test_a_plausible_fuzzed_mention_is_still_queued(
    client: Client, sync_redis: redis.Redis
) -> None:
    """The fuzz bodies reach the queue: a sanity check that the harness is not all 4xx."""
    body = json.dumps(ev.envelope(ev.mention("caf\u00e9 \U0001f600 " + "x" * 5000))).encode()
    resp = await client.post("/slack/events", data=body, headers=ev.sign(body))
    assert resp.status == 200
    assert drain_queue(sync_redis) == 1
