"""RabbitMQ as the broker (PARLEY_BROKER_URL=amqp://…) instead of Redis: the same service,
end to end, against the local RabbitMQ at 127.0.0.1:5672. Redis still holds memory,
deduplication and ordering."""

from __future__ import annotations

import functools
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.service import ParleyService, parley_env, wait_until

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def queue() -> Iterator[str]:
    if not _rabbitmq_up():
        pytest.fail(
            "RabbitMQ is not running at 127.0.0.1:5672: start it with `rabbitmq-server "
            "-detached` (.ci/run does)"
        )
    name = f"parley-test-{uuid.uuid4().hex[:8]}"
    yield name
    with Connection(AMQP_URL) as conn:
        conn.SimpleQueue(name).queue.delete()


def test_a_mention_is_answered_through_rabbitmq(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path, queue: str
) -> None:
    env = parley_env(
        redis_url=redis_url,
        tgi_url=fake_tgi.url,
        slack_api_url=fake_slack.url,
        PARLEY_BROKER_URL=AMQP_URL,
        PARLEY_QUEUE=queue,
    )
    svc = ParleyService(env, tmp_path)
    try:
        svc.start_serve()
        svc.start_worker()
        events = [ev.mention(f"question {n} about the VPN", channel="C0RABBIT") for n in range(5)]
        for event in events:
            assert svc.deliver(event)[0] == 200

        def answered(n: int) -> bool:
            replies = fake_slack.thread_replies("C0RABBIT", events[n]["ts"])
            expected = [f"You said: question {n} about the VPN"]
            return [m["text"] for m in replies] == expected and not fake_slack.open_streams()

        for n in range(len(events)):
            wait_until(functools.partial(answered, n), 20, f"answer {n}", svc.logs)
        status, body = svc.get("/readyz")
        assert status == 200, body
        assert '"broker": "ok"' in body
    finally:
        svc.stop()
