"""The Teams ingress in process: real token checks against the fake Bot Framework's OpenID
metadata and JWKS, real Redis and Celery publish, activities POSTed over loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from bots.teams.inbound import ROUTE, OpenIdKeys, TeamsIngress, strip_mentions, teams_routes
from parley.server import create_web_app
from parley.settings import Settings
from tests.fakes.bot_framework import APP_ID, APP_PASSWORD, TENANT_ID, FakeBotFramework
from tests.support.config import make_sealer, make_settings
from tests.support.processes import free_port
from tests.support.queue import queued_messages
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake

QUEUE = "teams-inbound-test"
Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def fake_bf() -> Iterator[FakeBotFramework]:
    with FakeBotFramework() as bf:
        yield bf


def _settings(redis_url: str, bf: FakeBotFramework, **values: Any) -> Settings:
    return make_settings(
        **{
            "microsoft_app_id": APP_ID,
            "microsoft_app_password": APP_PASSWORD,
            "microsoft_app_tenant_id": TENANT_ID,
            "teams_openid_metadata_url": bf.openid_url,
            "redis_url": redis_url,
            "queue_name": QUEUE,
            **values,
        }
    )


def _intake(settings: Settings, client_redis: Redis) -> QueueIntake:
    return QueueIntake(
        client_redis,
        publisher(create_celery(settings), settings),
        make_sealer(),
        dedupe_ttl=600,
        thread_ttl=600,
    )


async def _client(routes: list[web.RouteDef], client_redis: Redis) -> Client:
    client: Client = TestClient(
        TestServer(create_web_app(routes=routes, redis=client_redis), host="127.0.0.1")
    )
    await client.start_server()
    return client


@pytest.fixture
async def client(redis_url: str, aredis: Redis, fake_bf: FakeBotFramework) -> AsyncIterator[Client]:
    settings = _settings(redis_url, fake_bf)
    c = await _client(teams_routes(settings, _intake(settings, aredis)), aredis)
    yield c
    await c.close()


def _queued(sync_redis: redis.Redis) -> list[dict[str, Any]]:
    return [m.model_dump() for m in queued_messages(sync_redis, QUEUE)]


async def _post(
    client: Client, activity: Any, headers: dict[str, str] | None, *, raw: bytes | None = None
) -> int:
    body = raw if raw is not None else json.dumps(activity).encode()
    resp = await client.post(ROUTE, data=body, headers=headers or {})
    return resp.status


async def _deliver(client: Client, bf: FakeBotFramework, activity: dict[str, Any]) -> int:
    return await _post(client, activity, bf.auth_header())


async def test_a_personal_message_is_verified_normalized_and_queued(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    activity = fake_bf.personal_message("how many vacation days do I carry over?")
    assert await _deliver(client, fake_bf, activity) == 202
    [task] = _queued(sync_redis)
    conversation_id = activity["conversation"]["id"]
    assert task["platform"] == "teams"
    assert task["tenant"] == TENANT_ID
    assert (task["channel"], task["thread"]) == (conversation_id, conversation_id)
    assert task["user"] == "aad-alice"
    assert task["text"] == "how many vacation days do I carry over?"
    assert task["message_id"] == f"{conversation_id}:{activity['id']}"
    reference = task["reply_to"]
    assert reference["serviceUrl"] == fake_bf.service_url
    assert reference["channelId"] == "msteams"
    assert reference["activityId"] == activity["id"]
    assert reference["bot"]["id"] == fake_bf.bot_id
    assert reference["conversation"] == {
        "conversationType": "personal",
        "id": conversation_id,
        "tenantId": TENANT_ID,
    }
    # Display names are personal data: they stay out of the broker.
    assert reference["user"] == {"id": "29:alice", "aadObjectId": "aad-alice"}
    assert "Display Name" not in json.dumps(task)


def _refused_headers(bf: FakeBotFramework) -> dict[str, dict[str, str]]:
    other_service = "https://smba.trafficmanager.net/emea/"
    return {
        "missing": {"Content-Type": "application/json"},
        "not bearer": {"Authorization": f"Basic {bf.token()}"},
        "garbage": {"Authorization": "Bearer not-a-jwt"},
        "forged": bf.auth_header(bf.forged_token()),
        "expired": bf.auth_header(bf.expired_token()),
        "wrong audience": bf.auth_header(bf.wrong_audience_token()),
        "wrong issuer": bf.auth_header(bf.wrong_issuer_token()),
        "no serviceurl claim": bf.auth_header(bf.token_without_serviceurl()),
        "other serviceurl": bf.auth_header(bf.token(service_url=other_service)),
        "unknown key": bf.auth_header(bf.token(kid="somebody-elses-key")),
        "forged RS512": bf.auth_header(bf.token(forged=True, algorithm="RS512")),
        "alg none": bf.auth_header(_handmade_token(bf, "none", b"")),
        "HS256 keyed with the public key": bf.auth_header(
            _handmade_token(bf, "HS256", bf.public_key_pem())
        ),
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade_token(bf: FakeBotFramework, alg: str, hmac_key: bytes) -> str:
    """The classic forgeries PyJWT will not mint: alg none, HMAC keyed with the public key."""
    good = jwt.decode(bf.token(), options={"verify_signature": False})
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": bf.kid}).encode())
    payload = _b64(json.dumps(good).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(hmac_key, signing_input, hashlib.sha256).digest() if hmac_key else b""
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not bearer",
        "garbage",
        "forged",
        "expired",
        "wrong audience",
        "wrong issuer",
        "no serviceurl claim",
        "other serviceurl",
        "unknown key",
        "forged RS512",
        "alg none",
        "HS256 keyed with the public key",
    ],
)
async def test_a_refused_token_gets_401_and_changes_nothing(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis, case: str
) -> None:
    activity = fake_bf.personal_message("please enqueue me")
    assert await _post(client, activity, _refused_headers(fake_bf)[case]) == 401
    assert sync_redis.keys("*") == []


async def test_the_signing_key_must_be_endorsed_for_the_activitys_channel(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    activity = fake_bf.personal_message("from another channel")
    activity["channelId"] = "webchat"  # the key is endorsed for msteams only
    assert await _deliver(client, fake_bf, activity) == 401
    del activity["channelId"]
    assert await _deliver(client, fake_bf, activity) == 401
    assert sync_redis.keys("*") == []


async def test_a_token_expired_within_the_clock_skew_is_accepted(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    headers = fake_bf.auth_header(fake_bf.token(expires_in=-120))
    assert await _post(client, fake_bf.personal_message("clocks drift"), headers) == 202
    assert len(_queued(sync_redis)) == 1


async def test_anonymous_requests_only_when_enabled_with_a_warning(
    redis_url: str,
    aredis: Redis,
    fake_bf: FakeBotFramework,
    sync_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(redis_url, fake_bf, microsoft_app_id=None, teams_allow_anonymous=True)
    with caplog.at_level(logging.WARNING, logger="bots.teams.inbound"):
        routes = teams_routes(settings, _intake(settings, aredis))
    warnings = [r for r in caplog.records if "PARLEY_TEAMS_ALLOW_ANONYMOUS" in r.getMessage()]
    assert len(warnings) == 1
    client = await _client(routes, aredis)
    try:
        caplog.clear()
        assert await _post(client, fake_bf.personal_message("from the emulator"), None) == 202
        # A token that is there is still checked, and a bad one refused.
        forged = fake_bf.auth_header(fake_bf.forged_token())
        assert await _post(client, fake_bf.personal_message("forged"), forged) == 401
        assert not [r for r in caplog.records if "ALLOW_ANONYMOUS" in r.getMessage()]
    finally:
        await client.close()
    assert [t["text"] for t in _queued(sync_redis)] == ["from the emulator"]


async def test_no_anonymous_access_because_an_app_id_is_empty(
    redis_url: str, aredis: Redis, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    settings = _settings(redis_url, fake_bf, microsoft_app_id="")
    client = await _client(teams_routes(settings, _intake(settings, aredis)), aredis)
    try:
        assert await _post(client, fake_bf.personal_message("hi"), None) == 401
        assert await _deliver(client, fake_bf, fake_bf.personal_message("hi")) == 401
    finally:
        await client.close()
    assert sync_redis.keys("*") == []


async def test_signing_keys_are_cached_and_fetched_again_for_a_new_key(
    redis_url: str, aredis: Redis, sync_redis: redis.Redis
) -> None:
    with FakeBotFramework() as bf:
        settings = _settings(redis_url, bf)
        keys = OpenIdKeys(settings.teams_openid_metadata_url, min_refresh_interval=0)
        ingress = TeamsIngress(settings, _intake(settings, aredis), keys=keys)
        client = await _client([web.post(ROUTE, ingress.handle)], aredis)
        try:
            for n in range(3):
                assert await _deliver(client, bf, bf.personal_message(f"question {n}")) == 202
            assert (bf.metadata_fetches, bf.jwks_fetches) == (1, 1)
            old_token = bf.token()
            bf.rotate_key()  # the Bot Framework rolls its keys over
            assert await _deliver(client, bf, bf.personal_message("after rollover")) == 202
            assert bf.jwks_fetches == 2
            # The old key is gone from the JWKS: its tokens are refused from now on.
            assert await _post(client, bf.personal_message("old"), bf.auth_header(old_token)) == 401
        finally:
            await client.close()
    assert len(_queued(sync_redis)) == 4


async def test_unknown_key_ids_do_not_refetch_the_keys_every_time(
    client: Client, fake_bf: FakeBotFramework
) -> None:
    assert await _deliver(client, fake_bf, fake_bf.personal_message("warm the cache")) == 202
    fetches = fake_bf.jwks_fetches
    for n in range(5):
        headers = fake_bf.auth_header(fake_bf.token(kid=f"made-up-{n}"))
        assert await _post(client, fake_bf.personal_message("x"), headers) == 401
    assert fake_bf.jwks_fetches <= fetches + 1


async def test_a_channel_mention_is_found_by_its_entity_and_answered_in_its_thread(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    # The bot was renamed in the manifest: people now mention "HR Helper".
    activity = fake_bf.channel_message(
        "how many vacation days do I carry over? cc <at>Alice Smith</at>",
        root="1700000000001",
        mention="HR Helper",
    )
    assert await _deliver(client, fake_bf, activity) == 202
    [task] = _queued(sync_redis)
    assert task["text"] == "how many vacation days do I carry over? cc Alice Smith"
    assert task["channel"] == "19:hr-questions@thread.tacv2"
    assert task["thread"] == "1700000000001"
    conversation = task["reply_to"]["conversation"]
    assert conversation["id"] == "19:hr-questions@thread.tacv2;messageid=1700000000001"
    assert conversation["conversationType"] == "channel"
    assert "name" not in conversation


async def test_a_new_channel_post_is_its_own_thread(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    post = fake_bf.channel_message("new topic")  # conversation id ends ;messageid=<its id>
    bare = fake_bf.channel_message("no messageid", channel="19:it@thread.tacv2")
    bare["conversation"]["id"] = "19:it@thread.tacv2"
    for activity in (post, bare):
        assert await _deliver(client, fake_bf, activity) == 202
    first, second = _queued(sync_redis)
    assert first["thread"] == post["id"]
    assert second["thread"] == bare["id"]
    assert second["reply_to"]["conversation"]["id"] == f"19:it@thread.tacv2;messageid={bare['id']}"


async def test_channel_messages_without_a_mention_only_in_an_active_thread(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    root = "1700000000100"
    quiet = fake_bf.channel_message("people talking", root=root, mention=None)
    assert await _deliver(client, fake_bf, quiet) == 200
    assert _queued(sync_redis) == []
    asked = fake_bf.channel_message("where is the policy?", root=root)
    assert await _deliver(client, fake_bf, asked) == 202
    follow_up = fake_bf.channel_message("and for part-time staff?", root=root, mention=None)
    assert await _deliver(client, fake_bf, follow_up) == 202
    elsewhere = fake_bf.channel_message("other thread", root="1700000000999", mention=None)
    assert await _deliver(client, fake_bf, elsewhere) == 200
    chatter = fake_bf.group_message("lunch?", mention=None)
    assert await _deliver(client, fake_bf, chatter) == 200
    assert [t["text"] for t in _queued(sync_redis)] == [
        "where is the policy?",
        "and for part-time staff?",
    ]


async def test_a_group_chat_mention_is_one_thread_per_chat(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    activity = fake_bf.group_message("summarise the leave policy")
    assert await _deliver(client, fake_bf, activity) == 202
    [task] = _queued(sync_redis)
    assert task["text"] == "summarise the leave policy"
    assert task["channel"] == task["thread"] == "19:group-chat@thread.v2"
    assert task["reply_to"]["conversation"]["conversationType"] == "groupChat"


async def test_a_redelivered_activity_makes_one_task(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    activity = fake_bf.personal_message("only once please")
    for _ in range(3):
        assert await _deliver(client, fake_bf, activity) == 202
    other = fake_bf.personal_message("only once please")  # same text, another message
    assert await _deliver(client, fake_bf, other) == 202
    assert [t["message_id"].rsplit(":", 1)[1] for t in _queued(sync_redis)] == [
        activity["id"],
        other["id"],
    ]


async def test_other_activities_are_acknowledged_and_ignored(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    conversation = {"conversationType": "personal", "id": "a:1personal-alice"}
    update = fake_bf.activity("conversationUpdate", conversation=conversation)
    update["membersAdded"] = [{"id": fake_bf.bot_id}]
    reaction = fake_bf.activity("messageReaction", conversation=conversation)
    typing = fake_bf.activity("typing", conversation=conversation)
    mine = fake_bf.personal_message("echo of myself", user=fake_bf.bot_id, aad_object_id=None)
    empty = fake_bf.channel_message("")
    nameless = fake_bf.personal_message("no conversation", conversation_id=";messageid=1")
    for activity in (update, reaction, typing, mine, empty, nameless):
        assert await _deliver(client, fake_bf, activity) == 200
    assert _queued(sync_redis) == []


async def test_malformed_bodies(
    client: Client, fake_bf: FakeBotFramework, sync_redis: redis.Redis
) -> None:
    headers = fake_bf.auth_header()
    assert await _post(client, None, headers, raw=b'{"type": "message", ') == 400
    assert await _post(client, None, headers, raw=b"[1, 2]") == 400
    assert await _post(client, None, headers, raw=b"\xff\xfe") == 400
    bad_types = fake_bf.personal_message("x")
    bad_types["entities"] = "not a list"
    assert await _post(client, bad_types, headers) == 400
    # Strangers learn nothing about our parser: no token, no 400.
    assert await _post(client, None, {}, raw=b'{"type": ') == 401
    huge = b'{"type": "message", "text": "' + b"x" * 1_000_000 + b'"}'
    assert await _post(client, None, headers, raw=huge) == 413
    assert sync_redis.keys("*") == []


async def test_the_queue_being_down_asks_teams_to_retry(
    redis_url: str, aredis: Redis, fake_bf: FakeBotFramework
) -> None:
    settings = _settings(redis_url, fake_bf)
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    client = await _client(teams_routes(settings, _intake(settings, down)), aredis)
    try:
        assert await _deliver(client, fake_bf, fake_bf.personal_message("hello?")) == 503
    finally:
        await client.close()
        await down.aclose()


def test_strip_mentions_keeps_other_people_and_handles_odd_entities() -> None:
    bot = {"28:bot"}
    entities = [
        {"type": "Mention", "text": "<at>Parley Bot</at>", "mentioned": {"id": "28:bot"}},
        {"type": "mention", "text": "<at>Dana</at>", "mentioned": {"id": "29:dana"}},
        {"type": "mention"},
        "junk",
    ]
    text = "<at>Parley Bot</at>&#x20;ask <at>Dana</at> about  it"
    assert strip_mentions(text, entities, bot) == ("&#x20;ask Dana about it", True)
    # The entity's text is missing: its mentioned.name still finds the tag.
    named = [{"type": "mention", "mentioned": {"id": "28:bot", "name": "HR Helper"}}]
    assert strip_mentions("<at>HR Helper</at> hi", named, bot) == ("hi", True)
    assert strip_mentions("hello <at>Dana</at>", None, bot) == ("hello Dana", False)
