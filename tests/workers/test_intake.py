from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from bots.base import IntakeUnavailable
from parley.message import InboundMessage
from tests.support.config import make_sealer, make_settings
from tests.support.processes import free_port
from tests.support.queue import queued_payloads
from workers import keys
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake
from workers.payload import open_message


def _message(ts: str = "1700000000.000100", thread: str | None = None) -> InboundMessage:
    return InboundMessage(
        platform="slack",
        tenant="T1",
        channel="C1",
        thread=thread or ts,
        user="U1",
        text="my VPN drops every five minutes",
        message_id=f"C1:{ts}",
        reply_to={"channel": "C1", "thread_ts": thread or ts},
        received_at=time.time(),
    )


def _intake(redis: Redis, broker_url: str) -> QueueIntake:
    settings = make_settings(redis_url=broker_url, queue_name="intake-test")
    app = create_celery(settings)
    return QueueIntake(
        redis, publisher(app, settings), make_sealer(), dedupe_ttl=600, thread_ttl=600
    )


def _queued(sync_redis: Any) -> list[dict[str, Any]]:
    return queued_payloads(sync_redis, "intake-test")


async def test_a_message_is_queued_once_in_its_threads_order(
    aredis: Redis, redis_url: str, sync_redis: Any
) -> None:
    intake = _intake(aredis, redis_url)
    first, follow_up = _message("1.1"), _message("1.2", thread="1.1")
    assert await intake.submit(first)
    assert await intake.submit(follow_up)
    assert not await intake.submit(first), "a redelivery is a duplicate"

    queued = _queued(sync_redis)
    assert [open_message(t, make_sealer()) for t in queued] == [first, follow_up]
    assert all("VPN" not in json.dumps(t) for t in queued), "the broker holds no clear text"
    assert await aredis.lrange(keys.thread_queue(first.thread_key), 0, -1) == [
        first.message_key,
        follow_up.message_key,
    ]
    assert await intake.is_active_thread("slack", "T1", "C1", "1.1")
    assert not await intake.is_active_thread("slack", "T1", "C1", "9.9")


async def test_a_failed_publish_undoes_the_claim_so_the_retry_goes_through(
    aredis: Redis, redis_url: str, sync_redis: Any
) -> None:
    broken = _intake(aredis, f"redis://127.0.0.1:{free_port()}/0")
    message = _message("2.1")
    with pytest.raises(IntakeUnavailable):
        await broken.submit(message)
    assert await aredis.exists(keys.seen("slack", "T1", message.message_id)) == 0
    assert await aredis.llen(keys.thread_queue(message.thread_key)) == 0

    assert await _intake(aredis, redis_url).submit(message), "Slack's retry is accepted"
    assert len(_queued(sync_redis)) == 1


async def test_redis_down_is_reported_as_unavailable() -> None:
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    intake = QueueIntake(
        down,
        publisher(create_celery(make_settings()), make_settings()),
        make_sealer(),
        dedupe_ttl=60,
        thread_ttl=60,
    )
    with pytest.raises(IntakeUnavailable):
        await intake.submit(_message())
    with pytest.raises(IntakeUnavailable):
        await intake.is_active_thread("slack", "T1", "C1", "1.1")
    await down.aclose()
