"""One asyncio event loop per worker process, shared by all of Celery's pool threads.

Celery's thread pool gives each task a thread; the thread hands the pipeline coroutine to
this loop and waits. All generations of the process then share one loop, one Redis pool and
one HTTP session per service, so a single process keeps 100+ generations in flight while
the work per thread is only waiting on a future.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from admin.channels import ChannelStore
from admin.feedback import FeedbackStore
from bots.base import Outbound
from bots.registry import outbound_factory
from guardrails.limits import RateLimiter
from knowledge.base import Retriever
from llm.base import ChatModel
from llm.factory import create_model
from llm.retry import RetryPolicy
from parley import metrics
from parley.message import InboundMessage
from parley.settings import Settings
from privacy.crypto import Sealer
from privacy.redactor import create_redactor
from workers import keys
from workers.connections import redis_client
from workers.ledger import ReplyLedger
from workers.memory import ThreadMemory
from workers.ordering import ThreadOrder
from workers.pipeline import Outcome, Pipeline
from workers.recovery import LostTaskRecovery, Republish

T = TypeVar("T")
log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10


def lease_seconds(settings: Settings) -> float:
    """How long a crashed runner's lease outlives it: well under the visibility timeout, so
    the redelivered task finds the lease free."""
    return min(30.0, settings.visibility_timeout / 3)


class WorkerRuntime:
    def __init__(self, settings: Settings, *, republish: Republish | None = None) -> None:
        self._settings = settings
        self._republish = republish  # queues a task again; None: no recovery sweeps
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="parley-loop", daemon=True
        )
        self._thread.start()
        self._pipeline: Pipeline | None = None
        self._outbounds: dict[str, Outbound] = {}
        self._lock = threading.Lock()
        self._heartbeat: asyncio.Task[None] | None = None

    def answer(self, message: InboundMessage) -> Outcome:
        pipeline = self._get_pipeline()
        return self._run(pipeline.answer(message))

    def warm_up(self) -> None:
        pipeline = self._get_pipeline()
        if pipeline.retriever is not None:
            # In the background: a worker takes messages while its knowledge bases load (a
            # question that needs one meanwhile waits for that load, not for a second one).
            asyncio.run_coroutine_threadsafe(_preload(pipeline.retriever), self._loop)

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
                self._heartbeat = self._run(self._start_heartbeat(self._pipeline.redis))
            return self._pipeline

    async def _start_heartbeat(self, redis: Redis) -> asyncio.Task[None]:
        assert self._pipeline is not None
        s = self._settings
        recovery = None
        # AMQP hands a task over atomically; only the Redis transport can lose one.
        if self._republish is not None and s.effective_broker_url == s.redis_url:
            recovery = LostTaskRecovery(
                redis,
                self._pipeline.ledger,
                self._republish,
                # Past Celery's own redelivery of unacknowledged tasks (the visibility
                # timeout), and a beat more for it to happen.
                stale_after=s.visibility_timeout + HEARTBEAT_SECONDS,
                queue_name=s.queue_name,
                lock_seconds=HEARTBEAT_SECONDS,
            )
        model = self._pipeline.model
        return asyncio.get_running_loop().create_task(_heartbeat(redis, model, s, recovery))

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
            channels=ChannelStore(redis, s),
            feedback=FeedbackStore(redis, ttl=s.memory_ttl_seconds),
            retry=RetryPolicy.from_settings(s),
            redactor=create_redactor(s, redis),
            restore_personal_data=s.restore_personal_data,
            user_index_ttl=s.memory_ttl_seconds,
            limiter=RateLimiter.from_settings(s, redis),
            max_message_chars=s.max_message_chars,
            injection_action=s.injection_action,
            retriever=_retriever(s),
            knowledge_top_k=s.knowledge_top_k,
            knowledge_min_score=s.knowledge_min_score,
            knowledge_handoff=s.knowledge_handoff,
        )

    def _outbound(self, platform: str) -> Outbound:
        # Only called from the loop thread, so the cache needs no lock.
        if platform not in self._outbounds:
            self._outbounds[platform] = outbound_factory(platform)(self._settings)
        return self._outbounds[platform]

    async def _aclose(self, pipeline: Pipeline) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            with contextlib.suppress(RedisError):
                await pipeline.redis.delete(keys.worker_heartbeat(_process_name()))
        for outbound in self._outbounds.values():
            await outbound.aclose()
        await pipeline.model.aclose()
        if pipeline.retriever is not None:
            await pipeline.retriever.aclose()
        await pipeline.redis.aclose()


def _retriever(settings: Settings) -> Retriever | None:
    """The knowledge bases' retriever; nothing is loaded until a channel that uses one asks.
    None when the `knowledge` extra is not installed or the embedder's settings are wrong
    (PARLEY_EMBEDDINGS_MODEL naming no model, say): channels that use a knowledge base are
    told an admin must fix it, and every other channel is answered as usual."""
    from knowledge.base import KnowledgeError  # no third-party import: always there

    try:
        from knowledge.factory import create_retriever

        return create_retriever(settings)
    except ImportError as exc:
        log.warning("knowledge bases unavailable in this worker (%s); install '.[knowledge]'", exc)
    except KnowledgeError as exc:
        log.error("knowledge bases unavailable in this worker: %s", exc)
    return None


async def _preload(retriever: Retriever) -> None:
    started = time.monotonic()
    try:
        loaded = await retriever.preload()
    except Exception:
        log.exception("could not load the knowledge bases; the first question will try again")
        return
    if loaded:
        log.info(
            "knowledge bases loaded in %.1f s: %s", time.monotonic() - started, ", ".join(loaded)
        )


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _heartbeat(
    redis: Redis, model: ChatModel, settings: Settings, recovery: LostTaskRecovery | None
) -> None:
    """Announce this process while it runs (`status` counts the workers this way; the key
    expires soon after a crash), check that the model server answers (parley_model_up),
    and sweep for messages the broker lost."""
    key = keys.worker_heartbeat(_process_name())
    info = json.dumps({"started": time.time(), "concurrency": settings.worker_concurrency})
    while True:
        try:
            await redis.set(key, info, ex=HEARTBEAT_SECONDS * 3)
        except RedisError as exc:
            log.warning("cannot write the worker heartbeat: %r", exc)
        try:
            await asyncio.wait_for(model.server_info(), timeout=HEARTBEAT_SECONDS / 2)
            metrics.MODEL_UP.set(1)
        except Exception:
            metrics.MODEL_UP.set(0)
        if recovery is not None:
            try:
                await recovery.sweep()
            except Exception:
                log.exception("the sweep for lost messages failed; trying again next beat")
        await asyncio.sleep(HEARTBEAT_SECONDS)
