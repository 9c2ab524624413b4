"""Messages whose task the broker lost are queued again, once, and only those."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from parley.message import InboundMessage
from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.config import make_sealer
from tests.support.service import ParleyService, parley_env, wait_until
from workers import keys
from workers.intake import QueueIntake
from workers.ledger import ReplyLedger
from workers.recovery import LostTaskRecovery

QUEUE = "recovery-test"
CHANNEL = "C0HELP"  # where slack_events puts mentions


def _message(ts: str) -> InboundMessage:
    return InboundMessage(
        platform="slack",
        tenant="T1",
        channel="C1",
        thread=ts,
        user="U1",
        text="my laptop will not boot",
        message_id=f"C1:{ts}",
        reply_to={"channel": "C1", "thread_ts": ts},
        received_at=time.time(),
    )


class Broker:
    """Records what is published, as a broker that then loses it would."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, payload: dict[str, Any]) -> None:
        self.published.append(payload)


def _recovery(aredis: Redis, broker: Broker, stale_after: float = 0.0) -> LostTaskRecovery:
    return LostTaskRecovery(
        aredis,
        ReplyLedger(aredis, ttl=600, lease_ttl=5),
        broker.publish,
        stale_after=stale_after,
        queue_name=QUEUE,
        lock_seconds=0.2,
    )


async def _submit(aredis: Redis, broker: Broker, ts: str) -> InboundMessage:
    intake = QueueIntake(aredis, broker.publish, make_sealer(), dedupe_ttl=600, thread_ttl=600)
    message = _message(ts)
    assert await intake.submit(message)
    return message


async def test_a_lost_message_is_queued_again_with_the_same_sealed_payload(
    aredis: Redis,
) -> None:
    broker = Broker()
    message = await _submit(aredis, broker, "1.1")
    assert await _recovery(aredis, broker, stale_after=60).sweep() == 0, "not stale yet"
    await asyncio.sleep(0.25)  # the lock of that sweep expires
    assert await _recovery(aredis, broker).sweep() == 1
    assert broker.published == [broker.published[0]] * 2, "the very payload, still sealed"
    assert "laptop" not in json.dumps(broker.published)
    # Its clock restarted: the next sweep (another worker's, the lock expired) waits again.
    await asyncio.sleep(0.25)
    assert await _recovery(aredis, broker, stale_after=30).sweep() == 0
    assert await aredis.zscore(keys.PENDING_SINCE, message.message_key) is not None


async def test_finished_answered_now_or_backlogged_messages_are_left_alone(
    aredis: Redis,
) -> None:
    broker = Broker()
    done = await _submit(aredis, broker, "2.1")
    busy = await _submit(aredis, broker, "2.2")
    ledger = ReplyLedger(aredis, ttl=600, lease_ttl=5)
    async with aredis.pipeline(transaction=True) as pipe:
        ledger.stage_finished(pipe, done.message_key, "answered")
        await pipe.execute()
    assert not await aredis.exists(keys.pending(done.message_key)), "finishing cleans up"
    async with ledger.lease(busy.message_key) as holder:
        assert holder
        assert await _recovery(aredis, broker).sweep() == 0
    await aredis.rpush(QUEUE, "a task still on its way")
    await asyncio.sleep(0.25)
    assert await _recovery(aredis, broker).sweep() == 0, "a backlog may still carry it"
    assert len(broker.published) == 2


async def test_one_worker_sweeps_at_a_time(aredis: Redis) -> None:
    broker = Broker()
    await _submit(aredis, broker, "3.1")
    first, second = _recovery(aredis, broker), _recovery(aredis, broker)
    assert await first.sweep() == 1
    assert await second.sweep() == 0
    assert len(broker.published) == 2


@pytest.fixture
def service(
    redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack, tmp_path: Path
) -> Iterator[ParleyService]:
    env = parley_env(
        redis_url=redis_url,
        tgi_url=fake_tgi.url,
        slack_api_url=fake_slack.url,
        PARLEY_QUEUE=QUEUE,
        PARLEY_VISIBILITY_TIMEOUT="10",
        PARLEY_GENERATION_TIMEOUT="3",
    )
    svc = ParleyService(env, tmp_path)
    yield svc
    svc.stop()


def test_a_task_the_broker_lost_is_answered_anyway(
    service: ParleyService, fake_slack: FakeSlack, sync_redis: redis.Redis
) -> None:
    service.start_serve()
    mention = ev.mention("is the printer on floor 2 fixed?")
    assert service.deliver(mention)[0] == 200
    # The broker loses the task (as when a worker dies between taking and recording it).
    assert sync_redis.lpop(QUEUE) is not None
    service.start_worker()
    wait_until(
        lambda: (
            [m["text"] for m in fake_slack.thread_replies(CHANNEL, mention["ts"])]
            == ["You said: is the printer on floor 2 fixed?"]
            and not fake_slack.open_streams()
        ),
        60,
        "the lost message's answer",
        service.logs,
    )
    assert "its task was lost by the broker; queued it again" in service.logs()
    assert not sync_redis.exists(keys.pending(f"slack:{ev.TEAM}:{CHANNEL}:{mention['ts']}"))
