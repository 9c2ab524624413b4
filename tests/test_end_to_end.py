"""The whole service over real connections: signed Slack deliveries into `parley serve`,
a real Celery worker process, real Redis, and the fake Slack Web API and TGI on loopback."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events
from tests.support.processes import free_port
from tests.support.scan import message_keys
from tests.support.service import ParleyService, parley_env, wait_until
from workers.pipeline import MSG_MODEL_DOWN

CHANNEL = "C0HELP"


def _service(
    redis_url: str, tgi_url: str, fake_slack: FakeSlack, tmp_path: Path, **overrides: str
) -> ParleyService:
    env = parley_env(
        redis_url=redis_url, tgi_url=tgi_url, slack_api_url=fake_slack.url, **overrides
    )
    return ParleyService(env, tmp_path)


@pytest.fixture
def service(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> Iterator[ParleyService]:
    svc = _service(redis_url, fake_tgi.url, fake_slack, tmp_path)
    svc.start_serve()
    svc.start_worker()
    yield svc
    svc.stop()


def _texts(slack: FakeSlack, thread_ts: str) -> list[str]:
    return [reply["text"] for reply in slack.thread_replies(CHANNEL, thread_ts)]


def _wait_for_texts(
    slack: FakeSlack,
    svc: ParleyService,
    thread_ts: str,
    expected: list[str],
    timeout: float = 20,
) -> None:
    """Wait until the thread shows exactly `expected` with no stream left open, then make
    sure it stays so: a duplicate answer would show up in the meantime."""
    wait_until(
        lambda: _texts(slack, thread_ts) == expected and not slack.open_streams(),
        timeout,
        f"answers {expected} in thread {thread_ts}, have {_texts(slack, thread_ts)}",
        svc.logs,
    )
    time.sleep(0.5)
    assert _texts(slack, thread_ts) == expected
    assert not slack.open_streams()


def test_a_mention_gets_a_streamed_answer_and_a_follow_up_uses_memory(
    service: ParleyService, fake_slack: FakeSlack, fake_tgi: FakeTGI
) -> None:
    event = slack_events.mention("my VPN drops every five minutes")
    assert service.deliver(event)[0] == 200
    first_answer = "You said: my VPN drops every five minutes"
    _wait_for_texts(fake_slack, service, event["ts"], [first_answer])
    streamed = [c[0] for c in fake_slack.calls]
    assert "chat.startStream" in streamed
    assert "chat.stopStream" in streamed

    follow_up = slack_events.message("which client do we use?", thread_ts=event["ts"])
    assert service.deliver(follow_up)[0] == 200
    _wait_for_texts(
        fake_slack, service, event["ts"], [first_answer, "You said: which client do we use?"]
    )
    second_prompt = fake_tgi.prompts[-1]
    assert "my VPN drops every five minutes" in second_prompt
    assert "You said: my VPN drops every five minutes" in second_prompt
    assert second_prompt.index("my VPN drops") < second_prompt.index("which client")


def test_retries_and_the_mention_message_pair_make_one_answer(
    service: ParleyService, fake_slack: FakeSlack, fake_tgi: FakeTGI
) -> None:
    event = slack_events.mention("printer on floor 3 is jammed")
    assert service.deliver(event, event_id="Ev0001")[0] == 200
    assert service.deliver(event, event_id="Ev0001", retry_num=1)[0] == 200
    assert service.deliver(event, event_id="Ev0001", retry_num=2)[0] == 200
    # The same message also arrives as a `message` event with its own event id.
    twin = slack_events.message(event["text"], ts=event["ts"])
    assert service.deliver(twin)[0] == 200
    _wait_for_texts(fake_slack, service, event["ts"], ["You said: printer on floor 3 is jammed"])
    # Give any duplicate time to show up before asserting there is none.
    later = slack_events.mention("second question", thread_ts=event["ts"])
    service.deliver(later)
    _wait_for_texts(
        fake_slack,
        service,
        event["ts"],
        ["You said: printer on floor 3 is jammed", "You said: second question"],
    )
    assert len(fake_tgi.generations) == 2


def test_a_bad_signature_gets_401_and_enqueues_nothing(
    service: ParleyService, sync_redis: redis.Redis, fake_tgi: FakeTGI
) -> None:
    body = slack_events.body_of(
        slack_events.envelope(slack_events.mention("forged question about payroll"))
    )
    forged = slack_events.sign(body, secret="not-the-secret")
    stale = slack_events.sign(body, timestamp=int(__import__("time").time()) - 600)
    unsigned = {"Content-Type": "application/json"}
    for headers in (forged, stale, unsigned):
        status, _ = service.post("/slack/events", body, headers)
        assert status == 401
    assert message_keys(sync_redis) == []
    assert sync_redis.llen("parley-test") == 0
    assert "payroll" not in service.logs(), "refused bodies are not logged either"
    assert fake_tgi.generations == []


def test_url_verification_health_and_bad_input(service: ParleyService) -> None:
    body = b'{"type": "url_verification", "challenge": "abc123", "token": "x"}'
    status, text = service.post("/slack/events", body, slack_events.sign(body))
    assert status == 200
    assert json.loads(text) == {"challenge": "abc123"}

    huge = b'{"type": "event_callback", "pad": "' + b"x" * 1_000_000 + b'"}'
    assert service.post("/slack/events", huge, slack_events.sign(huge))[0] == 413
    broken = b'{"type": "event_callback", '
    status, _ = service.post("/slack/events", broken, slack_events.sign(broken))
    assert 400 <= status < 500
    import urllib.request

    with urllib.request.urlopen(service.url + "/readyz", timeout=5) as resp:
        assert resp.status == 200


def test_tgi_429_then_ok_yields_the_answer(
    service: ParleyService, fake_slack: FakeSlack, fake_tgi: FakeTGI
) -> None:
    fake_tgi.fail_next("429", times=2)
    event = slack_events.mention("reset my password please")
    service.deliver(event)
    _wait_for_texts(fake_slack, service, event["ts"], ["You said: reset my password please"])
    assert len(fake_tgi.generations) == 3


def test_tgi_down_yields_the_polite_failure_message(
    redis_url: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    svc = _service(redis_url, f"http://127.0.0.1:{free_port()}", fake_slack, tmp_path)
    try:
        svc.start_serve()
        svc.start_worker()
        event = slack_events.mention("is the wiki down?")
        svc.deliver(event)
        _wait_for_texts(fake_slack, svc, event["ts"], [MSG_MODEL_DOWN])
    finally:
        svc.stop()


def test_a_worker_killed_mid_generation_still_yields_exactly_one_answer(
    redis_url: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    answer_text = " ".join(f"step{i}" for i in range(40))
    with FakeTGI(responder=lambda _prompt: answer_text, token_interval=0.05) as tgi:
        svc = _service(
            redis_url,
            tgi.url,
            fake_slack,
            tmp_path,
            PARLEY_GENERATION_TIMEOUT="4",
            PARLEY_MODEL_RETRIES="1",
            PARLEY_VISIBILITY_TIMEOUT="10",
        )
        try:
            svc.start_serve()
            worker = svc.start_worker()
            event = slack_events.mention("walk me through the laptop setup")
            svc.deliver(event)
            wait_until(
                lambda: bool(fake_slack.calls_to("chat.appendStream")),
                10,
                "the answer to start streaming",
                svc.logs,
            )
            worker.kill(signal.SIGKILL)
            svc.start_worker()
            _wait_for_texts(fake_slack, svc, event["ts"], [answer_text], timeout=40)
            assert len(tgi.generations) == 2, "the redelivered task generated again"
        finally:
            svc.stop()


def test_a_threads_messages_are_answered_in_order_each_seeing_the_earlier(
    redis_url: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    with FakeTGI(ttft=0.3, token_interval=0.02) as tgi:
        svc = _service(redis_url, tgi.url, fake_slack, tmp_path)
        try:
            svc.start_serve()
            svc.start_worker()
            root = slack_events.mention("which VPN client do we use?")
            svc.deliver(root)
            time.sleep(0.1)
            svc.deliver(slack_events.message("and where do I download it?", thread_ts=root["ts"]))
            _wait_for_texts(
                fake_slack,
                svc,
                root["ts"],
                [
                    "You said: which VPN client do we use?",
                    "You said: and where do I download it?",
                ],
            )
            second_prompt = tgi.prompts[1]
            assert "which VPN client do we use?" in second_prompt
            assert "You said: which VPN client do we use?" in second_prompt
        finally:
            svc.stop()
        logs = svc.logs()
        assert "VPN client" not in logs, "message text never reaches the logs"
        assert "download it" not in logs


def test_direct_messages_are_answered(service: ParleyService, fake_slack: FakeSlack) -> None:
    dm = slack_events.message("how do I book a meeting room?", channel="D0ALICE", channel_type="im")
    assert service.deliver(dm)[0] == 200
    wait_until(
        lambda: (
            [r["text"] for r in fake_slack.thread_replies("D0ALICE", dm["ts"])]
            == ["You said: how do I book a meeting room?"]
        ),
        20,
        "the direct message's answer",
        service.logs,
    )


def test_socket_mode_runs_the_same_listeners(
    redis_url: str, fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    svc = _service(redis_url, fake_tgi.url, fake_slack, tmp_path)
    try:
        svc.start_serve("--socket-mode")
        svc.start_worker()
        event = slack_events.mention("is the wifi down?")
        envelope_id = fake_slack.push_event(event)
        fake_slack.wait_for_ack(envelope_id)
        fake_slack.push_event(event, retry_attempt=1)  # a retry: no second answer
        _wait_for_texts(fake_slack, svc, event["ts"], ["You said: is the wifi down?"])
    finally:
        svc.stop()


def test_slack_rate_limits_beyond_the_clients_retries_end_in_one_answer(
    redis_url: str, fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    svc = _service(redis_url, fake_tgi.url, fake_slack, tmp_path, PARLEY_SLACK_MAX_RETRIES="1")
    try:
        svc.start_serve()
        svc.start_worker()
        fake_slack.fail("chat.startStream", error="ratelimited", status=429, retry_after=0, times=3)
        fake_slack.fail(
            "chat.appendStream", error="ratelimited", status=429, retry_after=1, times=1
        )
        event = slack_events.mention("can I expense a monitor?")
        svc.deliver(event)
        _wait_for_texts(fake_slack, svc, event["ts"], ["You said: can I expense a monitor?"])
    finally:
        svc.stop()


def test_the_request_path_never_waits_on_the_model(
    redis_url: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    # The model takes 30 s to say anything; acknowledgements must not notice.
    with FakeTGI(ttft=30) as tgi:
        svc = _service(redis_url, tgi.url, fake_slack, tmp_path)
        try:
            svc.start_serve()
            worker = svc.start_worker()
            slowest = 0.0
            for i in range(5):
                started = time.monotonic()
                status, _ = svc.deliver(slack_events.mention(f"question {i}"))
                slowest = max(slowest, time.monotonic() - started)
                assert status == 200
            tgi.wait_for_requests(5, timeout=20)  # the work is under way meanwhile
            worker.kill()  # rather than wait 30 s for the answers to finish
        finally:
            svc.stop()
    assert slowest < 2.0, f"an acknowledgement took {slowest:.2f}s"
