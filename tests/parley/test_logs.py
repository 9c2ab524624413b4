from __future__ import annotations

import json
import logging

from parley.logs import CorrelationFilter, JsonFormatter, correlated


def test_json_lines_carry_the_extra_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "workers.pipeline",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "message %s answered",
            "args": ("slack:T1:C1:1.2",),
            "message_key": "slack:T1:C1:1.2",
            "redacted": {"PERSON": 1},
        }
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "message slack:T1:C1:1.2 answered"
    assert entry["level"] == "INFO"
    assert entry["message_key"] == "slack:T1:C1:1.2"
    assert entry["redacted"] == {"PERSON": 1}


def test_records_logged_while_handling_a_message_carry_its_correlation_id() -> None:
    log = logging.getLogger("tests.correlation")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    handler.addFilter(CorrelationFilter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with correlated("slack:T1:C1:1.2"):
            log.info("inside")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(JsonFormatter().format(r)) for r in seen)
    assert inside["correlation_id"] == "slack:T1:C1:1.2"
    assert outside["correlation_id"] == "-"
