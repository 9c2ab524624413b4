"""Teams end to end: activities POSTed with Bot Framework tokens into `parley serve`, a real
Celery worker process, real Redis, and the fake Bot Framework (OpenID + JWKS, login, Bot
Connector) and TGI on loopback. `parley serve` serves Slack and Teams side by side.

One service for the module (starting a worker costs seconds); each test starts from an
empty Redis database (the redis_url fixture) and waits for its answers to be complete.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from admin.feedback import FeedbackStore, Usage
from tests.conftest import REDIS_URL, slack_for_parley
from tests.fakes.bot_framework import APP_ID, APP_PASSWORD, TENANT_ID, FakeBotFramework
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events
from tests.support.scan import message_keys, redis_dump
from tests.support.service import ParleyService, parley_env, wait_until
from workers import keys

QUEUE = "parley-test"
CHANNEL = "19:hr-questions@thread.tacv2"
ADMIN, ADMIN_AAD = "29:admin", "aad-admin"


class Teams:
    """The running service and the fakes around it."""

    def __init__(self, service: ParleyService, bf: FakeBotFramework, tgi: FakeTGI) -> None:
        self.service = service
        self.bf = bf
        self.tgi = tgi

    def deliver(self, activity: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        body = json.dumps(activity).encode()
        status, _ = self.service.post("/api/messages", body, headers or self.bf.auth_header())
        return status

    def wait_for_texts(
        self, conversation_id: str, expected: list[str], timeout: float = 20
    ) -> None:
        """Wait until the conversation shows exactly `expected` with no stream left open,
        then make sure it stays so: a duplicate answer would show up in the meantime."""
        bf = self.bf

        def done() -> bool:
            return bf.texts(conversation_id) == expected and not bf.open_streams()

        wait_until(
            done,
            timeout,
            f"answers {expected} in {conversation_id}, have {bf.texts(conversation_id)}",
            self.service.logs,
        )
        time.sleep(0.5)
        assert bf.texts(conversation_id) == expected
        assert not bf.open_streams()


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Teams]:
    with (
        FakeBotFramework() as bf,
        FakeTGI(token_interval=0.02) as tgi,
        slack_for_parley() as slack,
    ):
        env = parley_env(
            redis_url=REDIS_URL,
            tgi_url=tgi.url,
            slack_api_url=slack.url,
            MicrosoftAppId=APP_ID,
            MicrosoftAppPassword=APP_PASSWORD,
            MicrosoftAppTenantId=TENANT_ID,
            PARLEY_TEAMS_LOGIN_URL=bf.login_url,
            PARLEY_TEAMS_OPENID_METADATA_URL=bf.openid_url,
            PARLEY_ADMINS=f"teams:{ADMIN_AAD}",
        )
        service = ParleyService(env, tmp_path_factory.mktemp("teams-e2e"))
        try:
            serve = service.start_serve()
            serve.wait_for_log("listening on")
            if "POST /api/messages" not in serve.logs():
                pytest.fail(
                    "`parley serve` does not route POST /api/messages: parley/cli.py must add "
                    "bots.teams.inbound.teams_routes(settings, intake) when Teams is configured"
                )
            service.start_worker()
            yield Teams(service, bf, tgi)
        finally:
            service.stop()


@pytest.fixture
def env(teams: Teams, redis_url: str) -> Iterator[Teams]:
    """The module's service, with Redis emptied (redis_url) and the fakes reset."""
    teams.bf.clear_failures()
    yield teams
    logs = teams.service.logs()
    assert "vacation days" not in logs, "message text never reaches the logs"


def _stream_types(bf: FakeBotFramework, conversation_id: str) -> list[str]:
    types = []
    for body in bf.activities(conversation_id):
        for entity in body.get("entities") or []:
            if entity.get("type") == "streaminfo":
                types.append(entity["streamType"])
    return types


def test_a_forged_token_is_refused_and_nothing_is_enqueued(
    env: Teams, sync_redis: redis.Redis
) -> None:
    before = message_keys(sync_redis)
    generations = len(env.tgi.generations)
    bf = env.bf
    activity = bf.personal_message("how many vacation days do I carry over?")
    for headers in (
        bf.auth_header(bf.forged_token()),
        bf.auth_header(bf.expired_token()),
        bf.auth_header(bf.wrong_audience_token()),
        {"Content-Type": "application/json"},
    ):
        assert env.deliver(activity, headers) == 401
    time.sleep(0.5)
    assert message_keys(sync_redis) == before
    assert sync_redis.llen(QUEUE) == 0
    assert len(env.tgi.generations) == generations
    assert bf.calls_to("send") == []
    # Slack's route is served beside Teams' and still checks its own signatures.
    body = slack_events.body_of(slack_events.envelope(slack_events.mention("hello")))
    status, _ = env.service.post("/slack/events", body, {"Content-Type": "application/json"})
    assert status == 401


def test_a_personal_chat_streams_the_answer_and_remembers(env: Teams) -> None:
    bf = env.bf
    question = bf.personal_message("how many vacation days do I carry over?")
    conversation = question["conversation"]["id"]
    assert env.deliver(question) == 202
    first = "You said: how many vacation days do I carry over?"
    env.wait_for_texts(conversation, [first])
    kinds = _stream_types(bf, conversation)
    assert kinds[0] == "informative"
    assert "streaming" in kinds
    assert kinds[-1] == "final"

    follow_up = bf.personal_message("and next year?")
    assert env.deliver(follow_up) == 202
    env.wait_for_texts(conversation, [first, "You said: and next year?"])
    prompt = env.tgi.prompts[-1]
    assert prompt.index("vacation days") < prompt.index("and next year?")


def test_a_channel_mention_is_answered_in_its_thread_without_the_mention(env: Teams) -> None:
    bf = env.bf
    earlier = len(bf.calls)
    root = "1700000000777"
    activity = bf.channel_message(
        "how many vacation days do I carry over?", root=root, mention="HR Helper"
    )
    thread = activity["conversation"]["id"]
    assert thread.endswith(f";messageid={root}")
    assert env.deliver(activity) == 202
    env.wait_for_texts(thread, ["You said: how many vacation days do I carry over?"])
    prompt = env.tgi.prompts[-1]
    assert "<at>" not in prompt
    assert "HR Helper" not in prompt
    assert _stream_types(bf, thread) == [], "channels are answered by edits, not streams"
    assert bf.calls_to("update")
    answer_calls = [c for c in bf.calls[earlier:] if c.op in ("send", "update")]
    assert answer_calls
    assert all(c.conversation_id == thread for c in answer_calls)


def test_a_redelivered_activity_makes_no_duplicate(env: Teams) -> None:
    bf = env.bf
    generations = len(env.tgi.generations)
    question = bf.personal_message("is the office open on Friday?", conversation_id="a:1redelivery")
    conversation = question["conversation"]["id"]
    for _ in range(3):
        assert env.deliver(question) == 202
    env.wait_for_texts(conversation, ["You said: is the office open on Friday?"])
    # A later message is answered; a duplicate of the first would show up by then.
    assert env.deliver(bf.personal_message("thanks", conversation_id=conversation)) == 202
    env.wait_for_texts(
        conversation, ["You said: is the office open on Friday?", "You said: thanks"]
    )
    assert len(env.tgi.generations) == generations + 2


def test_429_from_the_connector_is_retried(env: Teams) -> None:
    bf = env.bf
    bf.fail("send", 429, retry_after=1, times=2)
    question = bf.personal_message("can I expense a monitor?", conversation_id="a:1throttled")
    conversation = question["conversation"]["id"]
    assert env.deliver(question) == 202
    env.wait_for_texts(conversation, ["You said: can I expense a monitor?"])
    throttled = bf.calls_to("send", status=429)
    assert len(throttled) == 2
    later = [c for c in bf.calls_to("send") if c.at > throttled[-1].at]
    assert later[0].at - throttled[-1].at >= 0.9  # Retry-After was honoured


# -- administration and ratings ----------------------------------------------------------


def _private(bf: FakeBotFramework, user: str) -> list[str]:
    """What the bot wrote to `user` in their 1:1 chat (the fake lives for the module)."""
    chat = bf.personal_chats.get(user)
    return bf.texts(chat) if chat else []


def _next_private(env: Teams, user: str, activity: dict[str, Any]) -> str:
    """Deliver a command and wait for its answer in the 1:1 chat with `user`."""
    before = len(_private(env.bf, user))
    assert env.deliver(activity) == 202
    wait_until(
        lambda: len(_private(env.bf, user)) > before,
        10,
        f"a private answer to {user}",
        env.service.logs,
    )
    return _private(env.bf, user)[before]


def _usage(channel: str) -> Usage:
    async def read() -> Usage:
        client = AsyncRedis.from_url(REDIS_URL)
        try:
            return await FeedbackStore(client, ttl=600).usage("teams", TENANT_ID, channel)
        finally:
            await client.aclose()

    return asyncio.run(read())


def _answer_recorded(sync_redis: redis.Redis, channel: str, activity_id: str) -> None:
    """Wait until the worker recorded the answer, so that ratings find it."""
    key = keys.answer("teams", TENANT_ID, f"{channel}:{activity_id}")
    wait_until(lambda: bool(sync_redis.exists(key)), 10, f"answer {activity_id} recorded")


def test_an_admins_persona_and_mode_all_apply_to_the_next_channel_post(env: Teams) -> None:
    bf = env.bf
    persona = "You are the HR helper of Acme. Cite the handbook."
    admin = {"user": ADMIN, "aad_object_id": ADMIN_AAD}
    said = _next_private(env, ADMIN, bf.channel_message(f"config persona set {persona}", **admin))
    assert said.startswith("📝 This channel's persona is set")
    said = _next_private(env, ADMIN, bf.channel_message("config mode all", **admin))
    assert said.startswith("💬 Parley now answers every new message")

    # Bob posts without mentioning Parley: Teams delivers it (resource-specific consent)
    # and, the channel being in mode all, Parley answers in the post's thread.
    post = bf.channel_message("who approves travel?", mention=None)
    assert env.deliver(post) == 202
    env.wait_for_texts(post["conversation"]["id"], ["You said: who approves travel?"])
    assert persona in env.tgi.prompts[-1]
    # A reply in a thread Parley takes no part in is still left alone.
    aside = bf.channel_message("lunch at noon?", root="1700000000888", mention=None)
    assert env.deliver(aside) == 200
    # And the channel's answers carry Teams' feedback buttons.
    [answer] = bf.messages(post["conversation"]["id"])
    assert answer["feedback_loop"]


def test_feedback_buttons_and_a_like_on_a_real_answer_are_counted(
    env: Teams, sync_redis: redis.Redis
) -> None:
    bf = env.bf
    question = bf.channel_message("where is the leave form?", root="1700000000910")
    thread = question["conversation"]["id"]
    assert env.deliver(question) == 202
    env.wait_for_texts(thread, ["You said: where is the leave form?"])
    [answer] = bf.messages(thread)
    _answer_recorded(sync_redis, CHANNEL, answer["id"])

    conversation = {"conversationType": "channel", "id": thread}
    invoke = bf.feedback_invoke(
        answer["id"], "dislike", conversation=conversation, user="29:carol", aad_object_id="c"
    )
    status, body = env.service.post("/api/messages", json.dumps(invoke).encode(), bf.auth_header())
    assert (status, json.loads(body)) == (200, {"status": 200})
    like = bf.reaction(answer["id"], conversation=conversation, added=("like",))
    assert env.deliver(like) == 200
    usage = _usage(CHANNEL)
    assert (usage.good, usage.bad, usage.answered) == (1, 1, 1)

    status_text = _next_private(
        env, ADMIN, bf.channel_message("config status", user=ADMIN, aad_object_id=ADMIN_AAD)
    )
    assert "1 answered" in status_text
    assert "rated 👍 1 👎 1" in status_text


def test_forget_me_in_teams_leaves_nothing_about_the_person(
    env: Teams, sync_redis: redis.Redis
) -> None:
    bf = env.bf
    chat = "a:1personal-forget"
    question = bf.personal_message("who is my HR contact?", conversation_id=chat)
    assert env.deliver(question) == 202
    env.wait_for_texts(chat, ["You said: who is my HR contact?"])
    [answer] = bf.messages(chat)
    _answer_recorded(sync_redis, chat, answer["id"])
    invoke = bf.feedback_invoke(answer["id"], "like", conversation={"id": chat})
    assert env.deliver(invoke) == 200
    assert _usage(chat).good == 1
    assert "aad-alice" in redis_dump(sync_redis)

    command = bf.personal_message("config forget me", conversation_id=chat)
    assert env.deliver(command) == 202
    wait_until(lambda: len(bf.texts(chat)) == 2, 10, "the answer to forget me", env.service.logs)
    reply = bf.messages(chat)[-1]
    assert reply["text"].startswith("🗑️ Done. I erased what I kept about you")
    assert "1 thread(s)" in reply["text"]
    assert "1 rating(s)" in reply["text"]
    assert reply["reply_to_id"] == command["id"]
    assert "aad-alice" not in redis_dump(sync_redis), "no key or value names her any more"
