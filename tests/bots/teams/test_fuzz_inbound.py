"""Fuzz the Teams ingress: activities with generated, often malformed, fields POSTed with a
valid Bot Framework token (its serviceurl claim matching the activity's serviceUrl, so the
body is really parsed). Never a 5xx, no error logged, only valid sealed messages queued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from bots.teams.inbound import ROUTE, teams_routes
from parley.server import create_web_app
from tests.fakes.bot_framework import APP_ID, APP_PASSWORD, TENANT_ID, FakeBotFramework
from tests.support.config import make_sealer, make_settings
from tests.support.queue import assert_no_errors, queued_messages
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake

QUEUE = "fuzz-teams-test"
Client = TestClient[Any, Any]
ALLOWED = {200, 202, 400, 401, 404, 413}

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
# Around and over MAX_ACTIVITY_BYTES (256 KiB) and the app's body limit.
huge = st.sampled_from([10_000, 200_000, 400_000]).map(lambda n: "\u00e9\U0001f600x" * (n // 3))


def field(typical: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes any JSON value of the wrong type, rarely huge."""
    return st.integers(0, 99).flatmap(
        lambda roll: huge if roll == 0 else json_values if roll < 12 else typical
    )


BOT = f"28:{APP_ID}"
ids = st.sampled_from(["29:alice", "aad-alice", BOT, APP_ID, ""]) | st.text(max_size=12)
conversation_ids = st.sampled_from(
    ["a:1personal", "19:c@thread.tacv2;messageid=1700000000001", "19:g@thread.v2", "", ";"]
) | st.text(max_size=30)
accounts = st.fixed_dictionaries(
    {},
    optional={
        "id": field(ids),
        "name": field(st.text(max_size=20)),
        "aadObjectId": field(ids),
        "role": field(st.sampled_from(["user", "bot"])),
    },
)
conversations = st.fixed_dictionaries(
    {},
    optional={
        "id": field(conversation_ids),
        "conversationType": field(st.sampled_from(["personal", "channel", "groupChat"])),
        "tenantId": field(st.just(TENANT_ID)),
        "isGroup": field(st.booleans()),
        "name": field(st.text(max_size=20)),
    },
)
mentions = st.fixed_dictionaries(
    {"type": field(st.sampled_from(["mention", "clientInfo"]))},
    optional={
        "text": field(st.sampled_from(["<at>Parley</at>", "<at></at>", "<at>x"])),
        "mentioned": field(accounts),
    },
)
texts = st.sampled_from(["<at>Parley</at> hi", "hello", "", "<at>Parley</at>"]) | st.text()


def activities(service_url: str) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "type": field(st.sampled_from(["message", "conversationUpdate", "typing", "invoke"])),
        "id": field(ids),
        "conversation": field(conversations),
        "from": field(accounts),
        "recipient": field(accounts),
        "text": field(texts),
        "serviceUrl": field(st.just(service_url)),
        "channelId": field(st.sampled_from(["msteams", "emulator"])),
        "entities": field(st.lists(field(mentions), max_size=3)),
        "channelData": json_values,
        "timestamp": field(st.just("2026-01-05T09:30:00.000Z")),
        "replyToId": field(ids),
        "textFormat": field(st.sampled_from(["plain", "markdown"])),
        "attachments": json_values,
        "locale": json_values,
        "value": json_values,
    }
    required = ("type", "id", "conversation", "from", "recipient", "serviceUrl", "channelId")
    plausible = st.fixed_dictionaries(
        {k: fields[k] for k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )
    sparse = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(plausible, sparse)


def mutated(bf: FakeBotFramework) -> st.SearchStrategy[dict[str, Any]]:
    """A real personal, channel or group message with one to three fields (top-level or
    inside conversation / from / recipient) replaced or removed."""
    bases = [
        bf.personal_message("hello there"),
        bf.channel_message("what is the VPN?"),
        bf.group_message("lunch menu?"),
    ]
    every = activities(bf.service_url)
    paths = st.sampled_from(
        [
            ("type",),
            ("id",),
            ("text",),
            ("entities",),
            ("channelId",),
            ("conversation",),
            ("from",),
            ("recipient",),
            ("channelData",),
            ("conversation", "id"),
            ("conversation", "conversationType"),
            ("conversation", "tenantId"),
            ("from", "id"),
            ("from", "aadObjectId"),
            ("recipient", "id"),
        ]
    )
    edits = st.lists(st.tuples(paths, st.one_of(st.none(), json_values, texts)), max_size=3)

    def apply(base: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
        activity: dict[str, Any] = json.loads(json.dumps(base))
        activity["id"] = f"fuzz-{id(changes)}-{len(changes)}"
        for path, value in changes:
            target: dict[str, Any] = activity
            for key in path[:-1]:
                if not isinstance(target.get(key), dict):
                    break
                target = target[key]
            else:
                if value is None:
                    target.pop(path[-1], None)
                else:
                    target[path[-1]] = value
        return activity

    return st.one_of(st.builds(apply, st.sampled_from(bases), edits), every)


# -- the ingress -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_bf() -> Iterator[FakeBotFramework]:
    with FakeBotFramework() as bf:
        yield bf


@pytest.fixture
async def client(redis_url: str, aredis: Redis, fake_bf: FakeBotFramework) -> AsyncIterator[Client]:
    config = make_settings(
        microsoft_app_id=APP_ID,
        microsoft_app_password=APP_PASSWORD,
        microsoft_app_tenant_id=TENANT_ID,
        teams_openid_metadata_url=fake_bf.openid_url,
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
    c: Client = TestClient(
        TestServer(
            create_web_app(routes=teams_routes(config, intake), redis=aredis), host="127.0.0.1"
        )
    )
    await c.start_server()
    yield c
    await c.close()


def drain_queue(sync_redis: redis.Redis) -> int:
    """Open every queued task (it must be a valid sealed message), then empty the queue."""
    messages = queued_messages(sync_redis, QUEUE)
    sync_redis.delete(QUEUE)
    for message in messages:
        assert message.platform == "teams"
        assert message.text
        assert message.channel
        assert message.thread
        assert message.user
    return len(messages)


def token_for(bf: FakeBotFramework, activity: Any) -> dict[str, str]:
    """A valid token whose serviceurl claim matches the activity's, when it has one (not a
    huge one: the header would pass aiohttp's 8 KiB limit, an HTTP-level 400)."""
    service_url = activity.get("serviceUrl") if isinstance(activity, dict) else None
    if isinstance(service_url, str) and 0 < len(service_url) < 2000:
        return bf.auth_header(service_url=service_url)
    return bf.auth_header()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
async def test_tokened_activities_never_get_a_5xx(
    client: Client,
    fake_bf: FakeBotFramework,
    sync_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    activity = data.draw(st.one_of(mutated(fake_bf), mutated(fake_bf), json_values))
    body = json.dumps(activity).encode()
    resp = await client.post(ROUTE, data=body, headers=token_for(fake_bf, activity))
    text = await resp.text()
    assert resp.status in ALLOWED, (resp.status, text, body[:2000])
    assert_no_errors(caplog)
    event(f"HTTP {resp.status}, {drain_queue(sync_redis)} queued")


@FUZZ
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
async def test_tokened_raw_bytes_never_get_a_5xx(
    client: Client,
    fake_bf: FakeBotFramework,
    sync_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
) -> None:
    resp = await client.post(ROUTE, data=body, headers=fake_bf.auth_header())
    assert resp.status in ALLOWED, (resp.status, await resp.text(), body)
    assert_no_errors(caplog)
    assert drain_queue(sync_redis) == 0


async def test_a_plausible_activity_is_still_queued(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    """The harness reaches the queue: not everything is refused before parsing."""
    activity = fake_bf.personal_message("caf\u00e9 \U0001f600 " + "x" * 5000)
    resp = await client.post(
        ROUTE, data=json.dumps(activity).encode(), headers=token_for(fake_bf, activity)
    )
    assert resp.status == 202
    assert drain_queue(sync_redis) == 1
