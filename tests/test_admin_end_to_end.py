"""Admins configure Parley from Slack, over real HTTP into `parley serve`, with a real
worker process, real Redis and the fake Slack and TGI: what they set shows in the next
prompt the model server receives, and every attempt is in the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.scan import redis_dump
from tests.support.service import ParleyService, parley_env, wait_until

CHANNEL = "C0HELP"
PROGRESS = "Thinking…"  # the placeholder an answer replaces (update mode)
ADMIN, ANN, BOB = "U0ADMIN", "U0ANN", "U0BOB"
PERSONA = "You are the IT helpdesk of Acme. Answer in one sentence."


@pytest.fixture
def service(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> Iterator[ParleyService]:
    env = parley_env(
        redis_url=redis_url,
        tgi_url=fake_tgi.url,
        slack_api_url=fake_slack.url,
        PARLEY_ADMINS=f"slack:{ADMIN}",
        PARLEY_SLACK_REPLY_MODE="update",
    )
    svc = ParleyService(env, tmp_path)
    svc.start_serve()
    svc.start_worker()
    yield svc
    svc.stop()


def _command(svc: ParleyService, slack: FakeSlack, text: str, user: str) -> str:
    answer = svc.command(text, user=user, response_url=slack.response_url("unused"))
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


def _texts(slack: FakeSlack, thread: str) -> list[str]:
    return [m["text"] for m in slack.thread_replies(CHANNEL, thread)]


def _answered(svc: ParleyService, slack: FakeSlack, thread: str, count: int = 1) -> list[str]:
    def done() -> bool:
        texts = _texts(slack, thread)
        return len(texts) >= count and not any(PROGRESS in t for t in texts)

    wait_until(
        done,
        20,
        f"{count} answer(s) in thread {thread}",
        svc.logs,
    )
    return _texts(slack, thread)


def _audit(svc: ParleyService) -> list[dict[str, Any]]:
    result = svc.cli("audit", "--jsonl")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_admins_set_persona_parameters_mode_and_on_off_and_everything_is_audited(
    service: ParleyService, fake_slack: FakeSlack, fake_tgi: FakeTGI
) -> None:
    # A member may not change settings: refused politely, audited, nothing changed.
    refused = _command(service, fake_slack, "set temperature 1", ANN)
    assert "Only admins of this channel can use `/parley set`" in refused
    # An admin's invalid value gets a clear message and changes nothing.
    invalid = _command(service, fake_slack, "set temperature 5", ADMIN)
    assert "temperature must be a number from 0 to 2" in invalid
    assert "Nothing was changed" in invalid

    assert "persona is set" in _command(service, fake_slack, f"persona set {PERSONA}", ADMIN)
    assert "now 0.2" in _command(service, fake_slack, "set temperature 0.2", ADMIN)
    mention = ev.mention("how do I reset my VPN token?")
    assert service.deliver(mention)[0] == 200
    texts = _answered(service, fake_slack, mention["ts"])
    assert texts == ["You said: how do I reset my VPN token?"], service.logs()
    prompt = fake_tgi.prompts[-1]
    assert prompt.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + PERSONA
    )
    assert fake_tgi.generations[-1].body["parameters"]["temperature"] == 0.2

    # In mode mentions a plain channel message is not answered; in mode all it is.
    quiet = ev.message("is the wiki down?")
    assert service.deliver(quiet)[0] == 200
    assert "every new message" in _command(service, fake_slack, "mode all", ADMIN)
    loud = ev.message("is the printer on floor 3 broken?")
    assert service.deliver(loud)[0] == 200
    assert _answered(service, fake_slack, loud["ts"]) == [
        "You said: is the printer on floor 3 broken?"
    ]
    assert _texts(fake_slack, quiet["ts"]) == []

    # Disabled: a mention is told so, a follow-up in a known thread gets nothing, and the
    # model is not asked.
    assert "no longer answers" in _command(service, fake_slack, "disable", ADMIN)
    generations = len(fake_tgi.generations)
    follow_up = ev.message("and the scanner?", thread_ts=loud["ts"])
    assert service.deliver(follow_up)[0] == 200
    asked = ev.mention("are you there?")
    assert service.deliver(asked)[0] == 200
    [notice] = _answered(service, fake_slack, asked["ts"])
    assert "turned off in this channel" in notice
    time.sleep(1.0)
    assert len(_texts(fake_slack, loud["ts"])) == 1
    assert len(fake_tgi.generations) == generations
    status = _command(service, fake_slack, "status", ANN)
    assert "Answers: off" in status
    assert "You: member" in status

    entries = [(e["actor"], e["action"], e["outcome"]) for e in _audit(service)]
    assert entries == [
        (ANN, "set temperature", "refused"),
        (ADMIN, "set temperature", "invalid"),
        (ADMIN, "persona set", "done"),
        (ADMIN, "set temperature", "done"),
        (ADMIN, "mode all", "done"),
        (ADMIN, "disable", "done"),
    ]
    table = service.cli("audit")
    assert "refused" in table.stdout
    assert "set temperature:  -> 0.2" in table.stdout


def test_ratings_export_and_forget_me(
    service: ParleyService,
    fake_slack: FakeSlack,
    sync_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    mention = ev.mention("I'm John Smith (john.smith@acme.com) and my laptop won't boot", user=ANN)
    assert service.deliver(mention)[0] == 200
    _answered(service, fake_slack, mention["ts"])
    answer_ts = fake_slack.thread_replies(CHANNEL, mention["ts"])[0]["ts"]
    for user in (ANN, BOB):
        reaction = ev.reaction("+1", channel=CHANNEL, ts=answer_ts, user=user)
        assert service.deliver(reaction)[0] == 200
    other = ev.reaction("tada", channel=CHANNEL, ts=answer_ts, user=BOB)
    assert service.deliver(other)[0] == 200
    status = _command(service, fake_slack, "status", BOB)
    assert "1 answered, 0 failed" in status
    assert ":+1: 2 :-1: 0" in status

    out = tmp_path / "transcripts.jsonl"
    result = service.cli("export", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote 1 records from 1 threads" in result.stderr
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    user_turn = record["messages"][1]
    assert user_turn["role"] == "user"
    assert "<PERSON_1>" in user_turn["content"]
    assert "<EMAIL_ADDRESS_1>" in user_turn["content"]
    assert record["messages"][-1]["role"] == "assistant"
    assert record["metadata"]["rating"] == {"good": 2, "bad": 0}
    text = out.read_text()
    for raw in ("John Smith", "john.smith@acme.com", ANN, BOB):
        assert raw not in text

    reply = _command(service, fake_slack, "forget me", ANN)
    assert "erased what I kept about you" in reply
    assert "1 thread(s) (2 turns)" in reply
    dump = redis_dump(sync_redis)
    assert ANN not in dump, "no key or value names Ann any more"
    assert "John Smith" not in dump
    assert BOB in dump, "Bob's own rating stays"
