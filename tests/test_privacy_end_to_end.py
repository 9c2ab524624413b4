"""Raw personal data is never at rest and never sent to the model: a conversation full of
it runs through `parley serve` and `parley worker`, then every Redis key and value (broker
queues included), every log line and every request body the TGI emulator received is
scanned for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events
from tests.support.scan import redis_dump
from tests.support.service import ParleyService, parley_env, wait_until

CHANNEL = "C0HELP"
SHOWN_BACK = [
    "John Smith",
    "john.smith@acme.com",
    "+34 612 345 678",
    "12345678Z",
    "ES91 2100 0418 4502 0005 1332",
    "4111 1111 1111 1111",
    "10.20.30.40",
]
SECRETS = ["Hunter2pass!", "xoxb-123456789012-abcdefghijkl", "AKIAIOSFODNN7EXAMPLE"]
TURNS = [
    "Hi, I'm John Smith (john.smith@acme.com, +34 612 345 678). My password: Hunter2pass! "
    "and the VPN rejects it.",
    "Mi DNI es 12345678Z y mi IBAN ES91 2100 0418 4502 0005 1332; tarjeta "
    "4111 1111 1111 1111, IP 10.20.30.40.",
    "The bot token xoxb-123456789012-abcdefghijkl and key AKIAIOSFODNN7EXAMPLE leaked, "
    "John Smith says.",
]


@pytest.fixture
def service(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> Iterator[ParleyService]:
    env = parley_env(redis_url=redis_url, tgi_url=fake_tgi.url, slack_api_url=fake_slack.url)
    svc = ParleyService(env, tmp_path)
    svc.start_serve()
    svc.start_worker()
    yield svc
    svc.stop()


def test_personal_data_never_reaches_redis_logs_or_the_model(
    service: ParleyService, fake_slack: FakeSlack, fake_tgi: FakeTGI, sync_redis: redis.Redis
) -> None:
    root = slack_events.mention(TURNS[0])
    assert service.deliver(root)[0] == 200
    for text in TURNS[1:]:
        assert service.deliver(slack_events.message(text, thread_ts=root["ts"]))[0] == 200
    # A broker snapshot while the work may still be queued, and one after.
    at_rest = [redis_dump(sync_redis)]

    def answered() -> bool:
        replies = fake_slack.thread_replies(CHANNEL, root["ts"])
        return (
            len(replies) == len(TURNS)
            and not fake_slack.open_streams()
            and all(r["text"].startswith("You said:") for r in replies)
        )

    wait_until(answered, 30, "three answers", service.logs)
    at_rest.append(redis_dump(sync_redis))
    service.stop()  # flush the logs
    sent_to_model = json.dumps([r.body for r in fake_tgi.requests])
    logs = service.logs()

    assert "<PERSON_1>" in sent_to_model, "the model sees placeholders"
    for value in SHOWN_BACK + SECRETS:
        for where, text in [
            ("Redis", at_rest[0]),
            ("Redis", at_rest[1]),
            ("the model", sent_to_model),
            ("the logs", logs),
        ]:
            assert value not in text, f"{value!r} found in {where}"

    shown = "\n".join(r["text"] for r in fake_slack.thread_replies(CHANNEL, root["ts"]))
    for value in SHOWN_BACK:
        assert value in shown, "people read their own values back"
    for secret in SECRETS:
        assert secret not in shown, "secrets are never shown again"
