"""One asyncio event loop per worker process, shared by all of Celery's pool threads.

Celery's thread pool gives each task a thread; the thread hands the pipeline coroutine to
this loop and waits. All generations of the process then share one loop, one Redis pool and
one HTTP session per service, so a single process keeps 100+ generations in flight while
the work per thread is only waiting on a future.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis.asyncio import Redis

from bots.base import Outbound
from bots.registry import outbound_factory
from guardrails.limits import RateLimiter
from llm.base import GenerationParams
from llm.retry import RetryPolicy
from llm.tgi import create_model
from parley.message import InboundMessage
from parley.settings import Settings
from privacy.crypto import Sealer
from privacy.redactor import create_redactor
from workers.ledger import ReplyLedger
from workers.memory import ThreadMemory
from workers.ordering import ThreadOrder
from workers.pipeline import Outcome, Pipeline

T = TypeVar("T")


def redis_client(settings: Settings, *, max_connections: int) -> Redis:
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=10,
        retry_on_timeout=True,
    )


def lease_seconds(settings: Settings) -> float:
    """How long a crashed runner's lease outlives it: well under the visibility timeout, so
    the redelivered task finds the lease free."""
    return min(30.0, settings.visibility_timeout / 3)


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="parley-loop", daemon=True
        )
        self._thread.start()
        self._pipeline: Pipeline | None = None
        self._outbounds: dict[str, Outbound] = {}
        self._lock = threading.Lock()

    def answer(self, message: InboundMessage) -> Outcome:
        pipeline = self._get_pipeline()
        return self._run(pipeline.answer(message))

    def close(self) -> None:
        if self._pipeline is not None:
            self._run(self._aclose(self._pipeline))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _get_pipeline(self) -> Pipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._run(self._build())
            return self._pipeline

    async def _build(self) -> Pipeline:
        s = self._settings
        redis = redis_client(s, max_connections=s.worker_concurrency * 2 + 8)
        return Pipeline(
            redis=redis,
            model=create_model(s),
            outbound=self._outbound,
            memory=ThreadMemory(
                redis,
                Sealer(s.require_encryption_key()),
                ttl=s.memory_ttl_seconds,
                max_turns=s.memory_max_turns,
            ),
            order=ThreadOrder(redis, max_wait=s.visibility_timeout + s.longest_task_seconds),
            ledger=ReplyLedger(redis, ttl=s.dedupe_ttl_seconds, lease_ttl=lease_seconds(s)),
            system_prompt=s.system_prompt,
            params=GenerationParams(
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                repetition_penalty=s.repetition_penalty,
            ),
            retry=RetryPolicy.from_settings(s),
            redactor=create_redactor(s, redis),
            restore_personal_data=s.restore_personal_data,
            user_index_ttl=s.memory_ttl_seconds,
            limiter=RateLimiter.from_settings(s, redis),
            max_message_chars=s.max_message_chars,
            injection_action=s.injection_action,
        )

    def _outbound(self, platform: str) -> Outbound:
        # Only called from the loop thread, so the cache needs no lock.
        if platform not in self._outbounds:
            self._outbounds[platform] = outbound_factory(platform)(self._settings)
        return self._outbounds[platform]

    async def _aclose(self, pipeline: Pipeline) -> None:
        for outbound in self._outbounds.values():
            await outbound.aclose()
        await pipeline.model.aclose()
        await pipeline.redis.aclose()
