"""Teams end to end: activities POSTed with Bot Framework tokens into `parley serve`, a real
Celery worker process, real Redis, and the fake Bot Framework (OpenID + JWKS, login, Bot
Connector) and TGI on loopback. `parley serve` serves Slack and Teams side by side.

One service for the module (starting a worker costs seconds); each test starts from an
empty Redis database (the redis_url fixture) and waits for its answers to be complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_URL, slack_for_parley
from tests.fakes.bot_framework import APP_ID, APP_PASSWORD, TENANT_ID, FakeBotFramework
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events
from tests.support.service import ParleyService, parley_env, wait_until
from workers import keys

QUEUE = "parley-test"


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
    def state() -> set[str]:
        # A worker starting up meanwhile binds its queue and announces itself: not ours.
        return {
            k
            for k in sync_redis.keys("*")
            if not k.startswith(("_kombu", keys.worker_heartbeat("")))
        }

    before = state()
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
    assert state() == before
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
