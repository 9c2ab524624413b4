"""Erasure through the real pipeline: forget a thread, or everything about one person."""

from __future__ import annotations

import time

import redis
from redis.asyncio import Redis

from parley.message import InboundMessage
from privacy.crypto import Sealer
from privacy.redactor import create_redactor
from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.config import make_settings
from tests.support.scan import redis_dump
from workers import keys
from workers.erasure import create_erasure
from workers.memory import ThreadMemory
from workers.pipeline import Outcome
from workers.runtime import WorkerRuntime


def _message(text: str, thread: str, user: str, sync_redis: redis.Redis) -> InboundMessage:
    ts = ev.next_ts()
    message = InboundMessage(
        platform="slack",
        tenant=ev.TEAM,
        channel="C1",
        thread=thread,
        user=user,
        text=text,
        message_id=f"C1:{ts}",
        reply_to={"channel": "C1", "thread_ts": thread, "team": ev.TEAM, "user": user},
        received_at=time.time(),
    )
    sync_redis.rpush(keys.thread_queue(message.thread_key), message.message_key)
    return message


async def test_forget_user_then_thread(
    redis_url: str,
    aredis: Redis,
    sync_redis: redis.Redis,
    fake_tgi: FakeTGI,
    fake_slack: FakeSlack,
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        tgi_url=fake_tgi.url,
        slack_bot_token=ev.BOT_TOKEN,
        slack_api_url=fake_slack.url,
        reply_update_interval=0.02,
    )
    runtime = WorkerRuntime(settings)
    thread = ev.next_ts()
    try:
        alice = _message("I'm John Smith, john.smith@acme.com", thread, "UALICE", sync_redis)
        bob = _message("and I'm bob@acme.com", thread, "UBOB", sync_redis)
        assert runtime.answer(alice) is Outcome.ANSWERED
        assert runtime.answer(bob) is Outcome.ANSWERED
    finally:
        runtime.close()

    sealer = Sealer(settings.require_encryption_key())
    memory = ThreadMemory(aredis, sealer, ttl=600, max_turns=50)
    erasure = create_erasure(settings, aredis)
    report = await erasure.forget_user("slack", ev.TEAM, "UALICE")
    assert (report.threads, report.turns) == (1, 2)
    turns = await memory.load(alice.thread_key)
    assert [t.user for t in turns] == ["UBOB", None]
    assert "UALICE" not in redis_dump(sync_redis)
    values = await create_redactor(settings, aredis).restorable(alice.thread_key)
    assert set(values.values()) == {"bob@acme.com"}

    await erasure.forget_thread(alice.thread_key)
    assert await memory.load(alice.thread_key) == []
    assert await create_redactor(settings, aredis).restorable(alice.thread_key) == {}
