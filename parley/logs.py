"""Log set-up: plain lines for people, or one JSON object per line for log pipelines.

Records carry ids, timings and counts as `extra` fields (message, thread, outcome, entity
counts); message text never goes into a record, redacted or not.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


# The message being handled, as its key (platform:tenant:message id; no text, no names):
# every record logged while handling it carries it, across modules and awaits.
_CORRELATION: ContextVar[str] = ContextVar("parley_correlation_id", default="-")


@contextlib.contextmanager
def correlated(message_key: str) -> Iterator[None]:
    token = _CORRELATION.set(message_key)
    try:
        yield
    finally:
        _CORRELATION.reset(token)


class CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = _CORRELATION.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s[%(process)d] %(correlation_id)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # slack_sdk logs request bodies (message text) at DEBUG: keep it quiet even when we debug.
    for noisy in ("slack_sdk", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
