"""One worker process keeps many generations in flight: 64 threads at once against a slow
model finish in about the time of one, not 32 times it as a 2-process prefork pool would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

from parley.message import InboundMessage
from tests.conftest import slack_for_parley
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.config import make_sealer, make_settings
from tests.support.service import ParleyService, parley_env, wait_until
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake

THREADS = 64
ANSWER = " ".join(f"word{i}" for i in range(20))


def _message(i: int) -> InboundMessage:
    ts = f"1700000000.{i:06d}"
    channel = f"C{i:03d}"
    return InboundMessage(
        platform="slack",
        tenant=ev.TEAM,
        channel=channel,
        thread=ts,
        user="U1",
        text=f"question {i}",
        message_id=f"{channel}:{ts}",
        reply_to={"channel": channel, "thread_ts": ts, "team": ev.TEAM, "user": "U1"},
        received_at=time.time(),
    )


async def test_64_threads_at_once_finish_in_about_the_time_of_one(
    redis_url: str, aredis: Redis, tmp_path: Path
) -> None:
    with (
        FakeTGI(responder=lambda _: ANSWER, ttft=0.5, token_interval=0.1) as tgi,
        slack_for_parley() as slack,
    ):
        env = parley_env(
            redis_url=redis_url,
            tgi_url=tgi.url,
            slack_api_url=slack.url,
            PARLEY_WORKER_CONCURRENCY="128",
            PARLEY_RATE_LIMIT_USER_PER_MINUTE="0",  # one user asks all 65 questions
            PARLEY_REPLY_UPDATE_INTERVAL="0.5",
        )
        svc = ParleyService(env, tmp_path)
        try:
            svc.start_worker()
            settings = make_settings(redis_url=redis_url, queue_name=env["PARLEY_QUEUE"])
            intake = QueueIntake(
                aredis,
                publisher(create_celery(settings), settings),
                make_sealer(),
                dedupe_ttl=600,
                thread_ttl=600,
            )

            def finished(n: int) -> bool:
                done = sum(
                    1
                    for i in range(n)
                    if any(
                        r["text"] == ANSWER
                        for r in slack.thread_replies(f"C{i:03d}", f"1700000000.{i:06d}")
                    )
                )
                return done == n and not slack.open_streams()

            # One thread alone, for the baseline.
            start = time.monotonic()
            await intake.submit(_message(0))
            await asyncio.to_thread(wait_until, lambda: finished(1), 30, "one answer", svc.logs)
            one = time.monotonic() - start

            tgi.reset()
            start = time.monotonic()
            await asyncio.gather(*(intake.submit(_message(i)) for i in range(1, THREADS + 1)))
            await asyncio.to_thread(
                wait_until, lambda: finished(THREADS + 1), 60, f"{THREADS} answers", svc.logs
            )
            many = time.monotonic() - start
        finally:
            svc.stop()
        print(
            f"\none thread: {one:.2f}s; {THREADS} threads at once: {many:.2f}s; "
            f"peak generations in flight: {tgi.max_in_flight}"
        )
        assert tgi.max_in_flight >= THREADS
        assert many < one * 2.5, f"{THREADS} threads took {many:.2f}s, one took {one:.2f}s"
