"""What the ingress left in the Celery queue, read back the way a worker would."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
import redis

from parley.message import InboundMessage
from tests.support.config import make_sealer
from workers.celery_app import ANSWER_TASK
from workers.payload import open_message


def queued_payloads(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The task payloads, in the order workers take them (kombu LPUSHes, workers BRPOP)."""
    payloads = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == ANSWER_TASK
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        payloads.append(args[0])
    return payloads


def queued_messages(client: redis.Redis, queue: str) -> list[InboundMessage]:
    """The queued messages, opened: each must be a valid sealed task."""
    sealer = make_sealer()
    return [open_message(payload, sealer) for payload in queued_payloads(client, queue)]


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    caplog.clear()
    assert not errors, [(r.name, r.getMessage()[:500], r.exc_text) for r in errors]
