from __future__ import annotations

import json
import logging

from parley.logs import JsonFormatter


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
