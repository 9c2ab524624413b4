"""`parley chat` scripted end to end: a real `parley chat` process typing into the queue, a
real `parley worker` answering through the TGI emulator, real Redis in between."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support.scan import redis_dump
from tests.support.service import ParleyService, parley_env
from workers import keys


@pytest.fixture
def worker(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> Iterator[ParleyService]:
    env = parley_env(redis_url=redis_url, tgi_url=fake_tgi.url, slack_api_url=fake_slack.url)
    svc = ParleyService(env, tmp_path)
    svc.start_worker()
    yield svc
    svc.stop()


def _chat(svc: ParleyService, *lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", "chat"],
        input="".join(f"{line}\n" for line in lines),
        env={**svc.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_scripted_chat_is_answered_remembered_redacted_and_configurable(
    worker: ParleyService, fake_tgi: FakeTGI, sync_redis: redis.Redis
) -> None:
    result = _chat(
        worker,
        "my laptop is slow, write to ann.smith@acme.com",
        "/persona set You are the IT helpdesk. Be brief.",
        "what should I try first?",
        "/status",
        "/new",
        "hello again",
        "/quit",
    )
    assert result.returncode == 0, result.stderr + worker.logs()
    out = result.stdout
    # The answer streams back; the person sees the value they wrote, the model never does.
    assert "parley> You said: my laptop is slow, write to ann.smith@acme.com\n" in out
    assert all("ann.smith@acme.com" not in p for p in fake_tgi.prompts)
    assert "<EMAIL_ADDRESS_1>" in fake_tgi.prompts[0]
    assert "persona is set" in out
    assert "parley> You said: what should I try first?\n" in out
    second = fake_tgi.prompts[1]
    assert "You are the IT helpdesk. Be brief." in second, "the persona applies at once"
    assert "my laptop is slow" in second, "the thread's earlier turn is remembered"
    assert "**Parley in this channel**" in out
    assert "answered, 0 failed" in out
    third = fake_tgi.prompts[2]
    assert "my laptop is slow" not in third, "/new starts a thread with no memory"
    usage = sync_redis.hgetall(keys.usage("console", "local", "console"))
    assert usage["answered"] == "3"
    # Nothing of the conversation is left in clear text, and the session's stream is gone.
    dump = redis_dump(sync_redis)
    assert "ann.smith@acme.com" not in dump
    assert "laptop" not in dump
    assert not sync_redis.keys("parley:console:*")


def test_without_a_worker_the_chat_says_what_to_start(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    env = parley_env(redis_url=redis_url, tgi_url=fake_tgi.url, slack_api_url=fake_slack.url)
    svc = ParleyService(env, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=svc.env,
        text=True,
    )
    try:
        out, _ = process.communicate("anyone there?\n", timeout=14)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    assert "is a worker running?" in out
    assert "parley worker" in out


def test_chat_without_redis_says_how_to_start_it(tmp_path: Path) -> None:
    env = parley_env(
        redis_url="redis://127.0.0.1:1/0", tgi_url="http://127.0.0.1:1", slack_api_url="x"
    )
    result = _chat(ParleyService(env, tmp_path), "hello")
    assert result.returncode == 3
    assert "Redis at redis://127.0.0.1:1/0 is not reachable" in result.stderr
    assert "redis-server" in result.stderr
