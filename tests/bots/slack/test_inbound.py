"""The Slack ingress in process: real slack-bolt, real Redis and Celery publish, the fake
Slack Web API for auth.test, and signed HTTP requests on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from admin.setup import create_admin
from bots.slack.inbound import create_slack_app, slack_routes, strip_mention
from parley.server import create_web_app
from parley.settings import Settings
from tests.fakes.slack_api import FakeSlack
from tests.support import slack_events as ev
from tests.support.config import make_sealer, make_settings
from tests.support.processes import free_port
from tests.support.queue import queued_messages
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake

QUEUE = "inbound-test"


def _settings(redis_url: str, slack_url: str) -> Settings:
    return make_settings(
        slack_bot_token=ev.BOT_TOKEN,
        slack_signing_secret=ev.SIGNING_SECRET,
        slack_api_url=slack_url,
        redis_url=redis_url,
        queue_name=QUEUE,
    )


async def _no_model() -> dict[str, Any]:
    raise ConnectionError("no model server in these tests")


async def _client(settings: Settings, client_redis: Redis) -> TestClient[Any, Any]:
    celery = create_celery(settings)
    intake = QueueIntake(
        client_redis,
        publisher(celery, settings),
        make_sealer(),
        dedupe_ttl=600,
        thread_ttl=600,
    )
    admin = create_admin(settings, client_redis, _no_model)
    slack = create_slack_app(settings, intake, commands=admin.commands, feedback=admin.feedback)
    client: TestClient[Any, Any] = TestClient(
        TestServer(
            create_web_app(routes=slack_routes(slack, settings), redis=client_redis),
            host="127.0.0.1",
        )
    )
    await client.start_server()
    return client


@pytest.fixture
async def client(
    redis_url: str, aredis: Redis, fake_slack: FakeSlack
) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(_settings(redis_url, fake_slack.url), aredis)
    yield c
    await c.close()


def _queued(sync_redis: redis.Redis) -> list[dict[str, Any]]:
    return [m.model_dump() for m in queued_messages(sync_redis, QUEUE)]


async def _deliver(client: TestClient[Any, Any], event: dict[str, Any]) -> int:
    body = ev.body_of(ev.envelope(event))
    resp = await client.post("/slack/events", data=body, headers=ev.sign(body))
    return resp.status


async def test_a_mention_is_normalized_and_queued(
    client: TestClient[Any, Any], sync_redis: redis.Redis
) -> None:
    event = ev.mention("my VPN drops every five minutes", channel="C1", user="U1")
    assert await _deliver(client, event) == 200
    [task] = _queued(sync_redis)
    assert task["platform"] == "slack"
    assert task["tenant"] == ev.TEAM
    assert task["channel"] == "C1"
    assert task["thread"] == event["ts"]
    assert task["user"] == "U1"
    assert task["text"] == "my VPN drops every five minutes"
    assert task["message_id"] == f"C1:{event['ts']}"
    assert task["reply_to"] == {
        "channel": "C1",
        "thread_ts": event["ts"],
        "team": ev.TEAM,
        "user": "U1",
    }


async def test_a_mention_inside_a_thread_replies_to_the_thread_root(
    client: TestClient[Any, Any], sync_redis: redis.Redis
) -> None:
    event = ev.mention("any news?", thread_ts="1700000000.000001")
    assert await _deliver(client, event) == 200
    [task] = _queued(sync_redis)
    assert task["thread"] == "1700000000.000001"
    assert task["reply_to"]["thread_ts"] == "1700000000.000001"


async def test_direct_messages_are_answered(
    client: TestClient[Any, Any], sync_redis: redis.Redis
) -> None:
    assert await _deliver(client, ev.message("hi", channel="D1", channel_type="im")) == 200
    assert [t["text"] for t in _queued(sync_redis)] == ["hi"]


async def test_follow_ups_only_in_threads_parley_takes_part_in(
    client: TestClient[Any, Any], sync_redis: redis.Redis
) -> None:
    root = ev.mention("first")
    await _deliver(client, root)
    await _deliver(client, ev.message("follow-up", thread_ts=root["ts"]))
    await _deliver(client, ev.message("someone else's thread", thread_ts="1.000001"))
    await _deliver(client, ev.message("top-level chatter"))
    assert [t["text"] for t in _queued(sync_redis)] == ["first", "follow-up"]


@pytest.mark.parametrize(
    "event",
    [
        ev.message("from another bot", bot_id="B0OTHER", thread_ts="1.1", channel_type="im"),
        ev.message("mine", user=ev.BOT_USER, channel_type="im"),
        ev.message("edited", subtype="message_changed", channel_type="im"),
        ev.message("gone", subtype="message_deleted", channel_type="im"),
        ev.message("joined", subtype="channel_join", channel_type="im"),
        {
            "type": "reaction_added",
            "user": "U1",
            "reaction": "thumbsup",
            "item": {"type": "message", "channel": "C1", "ts": "1.1"},
            "event_ts": "1.2",
        },
    ],
    ids=["other-bot", "own-message", "edit", "delete", "join", "other-event"],
)
async def test_ignored_events_are_acknowledged_and_not_queued(
    client: TestClient[Any, Any], sync_redis: redis.Redis, event: dict[str, Any]
) -> None:
    assert await _deliver(client, event) == 200
    assert _queued(sync_redis) == []


async def test_redis_down_answers_503_so_slack_retries(
    redis_url: str, fake_slack: FakeSlack, sync_redis: redis.Redis
) -> None:
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    c = await _client(_settings(redis_url, fake_slack.url), down)
    try:
        assert await _deliver(c, ev.mention("hello")) == 503
        resp = await c.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["redis"].startswith("unreachable")
    finally:
        await c.close()
        await down.aclose()


async def test_health_endpoints(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"<@{ev.BOT_USER}> hello", "hello"),
        (f"hey <@{ev.BOT_USER}|parley>  can you help <@U0BOB>?", "hey can you help <@U0BOB>?"),
        ("no mention", "no mention"),
    ],
)
def test_strip_mention(text: str, expected: str) -> None:
    assert strip_mention(text, ev.BOT_USER) == expected


@pytest.mark.parametrize(("text", "unknown"), [("help", False), ("", False), ("frobnicate", True)])
async def test_the_slash_command_answers_ephemerally(
    client: TestClient[Any, Any], sync_redis: redis.Redis, text: str, unknown: bool
) -> None:
    body = urlencode(
        {
            "command": "/parley",
            "text": text,
            "team_id": ev.TEAM,
            "channel_id": "C1",
            "user_id": "U1",
            "response_url": "http://127.0.0.1:9/unused",
            "trigger_id": "t",
        }
    ).encode()
    headers = {**ev.sign(body), "Content-Type": "application/x-www-form-urlencoded"}
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["response_type"] == "ephemeral"
    assert ("I don't know" in answer["text"]) == unknown
    assert "`/parley status`" in answer["text"]
    assert _queued(sync_redis) == []


@pytest.mark.parametrize(
    "body", [b'{"type": "event_callback", ', b"[1, 2]", b"\xff\xfe not utf-8", b""]
)
async def test_malformed_bodies_get_a_clear_4xx_and_nothing_is_queued(
    client: TestClient[Any, Any], sync_redis: redis.Redis, body: bytes
) -> None:
    signed = await client.post("/slack/events", data=body, headers=ev.sign(body))
    assert 400 <= signed.status < 500
    unsigned = await client.post(
        "/slack/events", data=body, headers={"Content-Type": "application/json"}
    )
    assert unsigned.status == 401
    assert _queued(sync_redis) == []
    assert sync_redis.keys("parley:*") == []


async def test_an_event_without_a_user_is_acknowledged_and_dropped(
    client: TestClient[Any, Any], sync_redis: redis.Redis
) -> None:
    event = ev.mention("hi")
    del event["user"]
    assert await _deliver(client, event) == 200
    assert _queued(sync_redis) == []
