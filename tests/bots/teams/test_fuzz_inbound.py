"""Fuzz the Teams ingress: activities with generated, often malformed, fields POSTed with a
valid Bot Framework token (its serviceurl claim matching the activity's serviceUrl, so the
body is really parsed): messages (questions and `config` commands), feedback invokes and
reactions. Never a 5xx, no error logged (the commands' answers included), only valid
sealed messages queued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from admin.setup import create_admin
from bots.teams.inbound import ROUTE, TeamsIngress
from parley.server import create_web_app
from tests.fakes.bot_framework import APP_ID, APP_PASSWORD, TENANT_ID, FakeBotFramework
from tests.support.config import make_sealer, make_settings
from tests.support.queue import assert_no_errors, queued_messages
from workers import keys
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
texts = (
    st.sampled_from(
        [
            "<at>Parley</at> hi",
            "hello",
            "",
            "<at>Parley</at>",
            "<at>Parley</at> config status",
            "config",
            "config mode all",
            "config persona set <b>be</b> &amp; brief",
            "config admins add <at>Dana</at> <at>Smith</at>",
            "config forget thread https://teams.microsoft.com/l/message/19%3Ac/1?parentMessageId=x",
            "config set temperature 9",
        ]
    )
    | st.text()
)
feedback_values = st.fixed_dictionaries(
    {
        "actionName": field(st.sampled_from(["feedback", "other"])),
        "actionValue": field(
            st.fixed_dictionaries(
                {"reaction": field(st.sampled_from(["like", "dislike", "meh"]))},
                optional={"feedback": field(st.just('{"feedbackText": "nice"}'))},
            )
            | st.sampled_from(['{"reaction": "like"}', "{not json"])
        ),
    },
)
reactions = st.lists(
    field(st.fixed_dictionaries({"type": field(st.sampled_from(["like", "heart"]))})),
    max_size=3,
)
senders = st.fixed_dictionaries(
    {"id": field(ids)}, optional={"aadObjectId": field(ids), "name": field(st.text(max_size=9))}
)


def activities(service_url: str) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "type": field(
            st.sampled_from(
                ["message", "conversationUpdate", "typing", "invoke", "messageReaction"]
            )
        ),
        "name": field(st.sampled_from(["message/submitAction", "adaptiveCard/action"])),
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
        "value": field(feedback_values),
        "reactionsAdded": field(reactions),
        "reactionsRemoved": field(reactions),
    }
    required = ("type", "id", "conversation", "from", "recipient", "serviceUrl", "channelId")
    plausible = st.fixed_dictionaries(
        {k: fields[k] for k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )
    sparse = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(plausible, sparse)


def mutated(bf: FakeBotFramework) -> st.SearchStrategy[dict[str, Any]]:
    """A real personal, channel or group message (a question or a command), feedback invoke
    or reaction with one to three fields (top-level or inside conversation / from /
    recipient / value) replaced or removed."""
    thread = {"conversationType": "channel", "id": "19:c@thread.tacv2;messageid=17000"}
    bases = [
        bf.personal_message("hello there"),
        bf.channel_message("what is the VPN?"),
        bf.group_message("lunch menu?"),
        bf.personal_message("config status"),
        bf.channel_message("config admins add <at>Dana</at>"),
        bf.feedback_invoke("1700000000001", "dislike", conversation=thread),
        bf.reaction("1700000000001", conversation=thread, added=("like",), removed=("like",)),
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
            ("name",),
            ("value",),
            ("value", "actionName"),
            ("value", "actionValue"),
            ("replyToId",),
            ("reactionsAdded",),
            ("reactionsRemoved",),
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


async def _model_info() -> dict[str, Any]:
    return {"model_id": "fuzz-model"}


@pytest.fixture
async def ingress(
    redis_url: str, aredis: Redis, fake_bf: FakeBotFramework
) -> AsyncIterator[TeamsIngress]:
    config = make_settings(
        microsoft_app_id=APP_ID,
        microsoft_app_password=APP_PASSWORD,
        microsoft_app_tenant_id=TENANT_ID,
        teams_openid_metadata_url=fake_bf.openid_url,
        teams_login_url=fake_bf.login_url,
        redis_url=redis_url,
        queue_name=QUEUE,
        admins=f"teams:aad-alice,teams:{APP_ID}",
    )
    admin = create_admin(config, aredis, _model_info)
    intake = QueueIntake(
        aredis,
        publisher(create_celery(config), config),
        make_sealer(),
        dedupe_ttl=600,
        thread_ttl=600,
        channels=admin.channels,
    )
    teams = TeamsIngress(config, intake, commands=admin.commands, feedback=admin.feedback)
    yield teams
    await _settled(teams)


async def _settled(ingress: TeamsIngress) -> None:
    """Wait for the commands the last request started: their answers may log too."""
    if ingress.commands is not None:
        await ingress.commands.join()


@pytest.fixture
async def client(aredis: Redis, ingress: TeamsIngress) -> AsyncIterator[Client]:
    c: Client = TestClient(
        TestServer(
            create_web_app(routes=[web.post(ROUTE, ingress.handle)], redis=aredis),
            host="127.0.0.1",
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
    ingress: TeamsIngress,
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
    await _settled(ingress)
    assert_no_errors(caplog)
    kind = activity.get("type") if isinstance(activity, dict) else None
    known = ("message", "invoke", "messageReaction", "typing", "conversationUpdate")
    event(f"{kind if kind in known else 'other type'}: HTTP {resp.status}")
    event(f"HTTP {resp.status}, {drain_queue(sync_redis)} queued")


RATED = "1700000000001"  # an answer of Parley's in the fuzzed channel thread


def ratings(bf: FakeBotFramework) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed feedback invokes and reactions around one known answer, with generated
    values, reactions, reply ids and senders."""
    thread = {"conversationType": "channel", "id": "19:c@thread.tacv2;messageid=17000"}

    def build(
        invoke: bool, value: Any, added: Any, removed: Any, reply_to: Any, sender: Any
    ) -> dict[str, Any]:
        activity = (
            bf.feedback_invoke(RATED, conversation=thread)
            if invoke
            else bf.reaction(RATED, conversation=thread)
        )
        if invoke:
            activity["value"] = value
        else:
            activity["reactionsAdded"], activity["reactionsRemoved"] = added, removed
        activity["replyToId"] = reply_to
        activity["from"] = sender
        return activity

    return st.builds(
        build,
        st.booleans(),
        field(feedback_values),
        field(reactions),
        field(reactions),
        field(st.sampled_from([RATED, "1700000000002", ""])),
        field(senders),
    )


@FUZZ
@given(data=st.data())
async def test_ratings_never_get_a_5xx(
    client: Client,
    fake_bf: FakeBotFramework,
    aredis: Redis,
    sync_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    async with aredis.pipeline(transaction=True) as pipe:
        pipe.hset(
            keys.answer("teams", TENANT_ID, f"19:c@thread.tacv2:{RATED}"),
            mapping={"message_key": "teams:t:19:c@thread.tacv2:1", "channel": "19:c"},
        )
        await pipe.execute()
    activity = data.draw(ratings(fake_bf))
    resp = await client.post(
        ROUTE, data=json.dumps(activity).encode(), headers=token_for(fake_bf, activity)
    )
    assert resp.status in {200, 400, 413}, (resp.status, await resp.text(), activity)
    assert_no_errors(caplog)
    rated = sum(int(v) for v in sync_redis.hvals(keys.usage("teams", TENANT_ID, "19:c")))
    event(f"{activity['type']}: HTTP {resp.status}, {'some' if rated else 'no'} rating")
    assert drain_queue(sync_redis) == 0


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


async def test_a_plausible_command_and_rating_are_still_handled(
    client: Client, ingress: TeamsIngress, fake_bf: FakeBotFramework
) -> None:
    """The harness reaches the commands and the ratings too."""
    command = fake_bf.personal_message("config status", conversation_id="a:1fuzz-plausible")
    resp = await client.post(
        ROUTE, data=json.dumps(command).encode(), headers=token_for(fake_bf, command)
    )
    assert resp.status == 202
    await _settled(ingress)
    assert fake_bf.texts("a:1fuzz-plausible")[-1].startswith("**Parley in this channel**")
    thread = {"conversationType": "channel", "id": "19:c@thread.tacv2;messageid=17000"}
    invoke = fake_bf.feedback_invoke("1700000000001", "like", conversation=thread)
    resp = await client.post(
        ROUTE, data=json.dumps(invoke).encode(), headers=token_for(fake_bf, invoke)
    )
    assert (resp.status, await resp.json()) == (200, {"status": 200})
