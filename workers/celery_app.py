"""The Celery application: at-least-once delivery and one thin task.

acks_late + reject_on_worker_lost + prefetch 1 mean a task is only acknowledged once it
finished, so a crash hands it to another worker after the visibility timeout. The pipeline
is idempotent (workers/ledger.py), which is what makes redelivery safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown
from pydantic import ValidationError
from redis.exceptions import RedisError

from parley.settings import Settings
from privacy.crypto import Sealer, SealError
from workers.intake import Publish
from workers.payload import open_message

if TYPE_CHECKING:
    from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

ANSWER_TASK = "parley.answer"
# Infrastructure errors (Redis down mid-task) are retried by Celery with these limits.
INFRA_RETRY_LIMIT = 30
INFRA_RETRY_MAX_DELAY = 30


def create_celery(settings: Settings) -> Celery:
    app = Celery("parley", broker=settings.effective_broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        task_default_queue=settings.queue_name,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for tasks of crashed workers often enough that recovery takes about
            # one visibility timeout, not the default ten sweeps of ten seconds.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # The ingress must answer Slack within 3 s: fail fast when the broker is down.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )
    sealer = Sealer(settings.require_encryption_key())
    runtime_lock = threading.Lock()
    runtimes: list[WorkerRuntime] = []

    def runtime() -> WorkerRuntime:
        with runtime_lock:
            if not runtimes:
                # Imported here: the pipeline loads the language analysis, which the
                # ingress (a publisher of this app) never needs.
                from workers.runtime import WorkerRuntime

                runtimes.append(WorkerRuntime(settings, republish=publisher(app, settings)))
            return runtimes[0]

    @worker_ready.connect(weak=False)
    def _warm_up(**_: Any) -> None:
        # Load the language analysis and connect now, not on the first message, and start
        # the heartbeat that `status` counts workers by.
        try:
            runtime().warm_up()
        except Exception:
            log.exception("could not prepare the pipeline; the first message will try again")

    @worker_shutdown.connect(weak=False)
    def _close_runtime(**_: Any) -> None:
        with runtime_lock:
            while runtimes:
                runtimes.pop().close()

    @app.task(name=ANSWER_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def answer(self: Task[Any, Any], payload: dict[str, Any]) -> str:
        try:
            message = open_message(payload, sealer)
        except ValidationError as exc:
            # Nothing can be answered from a malformed payload; keeping it would loop.
            log.error("dropping a malformed task payload: %s", exc.errors(include_input=False))
            return "malformed"
        except (ValueError, SealError) as exc:
            log.error(
                "dropping a task whose text cannot be opened (%s); do the ingress and "
                "the workers share PARLEY_ENCRYPTION_KEY?",
                exc.__class__.__name__,
            )
            return "malformed"
        try:
            return runtime().answer(message).value
        except (RedisError, _try_later()) as exc:
            delay = min(2**self.request.retries, INFRA_RETRY_MAX_DELAY)
            log.warning("message %s: %r, retrying in %ss", message.message_key, exc, delay)
            raise self.retry(exc=exc, countdown=delay, max_retries=INFRA_RETRY_LIMIT) from exc

    return app


def _try_later() -> type[Exception]:
    from workers.pipeline import TryLater

    return TryLater


def publisher(app: Celery, settings: Settings) -> Publish:
    """An async publish function for the ingress; the blocking publish runs off the loop."""

    async def publish(payload: dict[str, Any]) -> None:
        await asyncio.to_thread(
            app.send_task,
            ANSWER_TASK,
            args=[payload],
            queue=settings.queue_name,
            # The payload is sealed: its repr tells nobody anything and costs CPU per event.
            argsrepr="",
        )

    return publish
