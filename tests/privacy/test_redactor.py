"""Redaction against the real analyzer and Redis: placeholders consistent per thread, values
sealed, restoration for display, erasure."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio import Redis

from privacy.redactor import Redactor, create_redactor, restore_text
from tests.support.config import make_settings
from tests.support.scan import redis_dump

THREAD = "slack:T1:C1:1700000000.000100"
RAW = [
    "John Smith",
    "john.smith@acme.com",
    "+34 612 345 678",
    "ES91 2100 0418 4502 0005 1332",
    "Hunter2pass!",
    "12345678Z",
]
MESSAGE = (
    "Hi, I'm John Smith (john.smith@acme.com, +34 612 345 678). My password: Hunter2pass! "
    "Please pay to ES91 2100 0418 4502 0005 1332, DNI 12345678Z. Ticket INC0012345, v2.3.1."
)


@pytest.fixture
def redactor(redis_url: str, aredis: Redis) -> Redactor:
    return create_redactor(make_settings(redis_url=redis_url, memory_ttl_seconds=600), aredis)


async def test_values_become_placeholders_consistent_per_thread(
    redactor: Redactor, sync_redis: redis.Redis
) -> None:
    first = await redactor.redact(THREAD, MESSAGE, user="U1")
    for value in RAW:
        assert value not in first.text
    assert "INC0012345" in first.text
    assert "v2.3.1" in first.text
    assert first.counts == {
        "PERSON": 1,
        "EMAIL_ADDRESS": 1,
        "PHONE_NUMBER": 1,
        "SECRET": 1,
        "IBAN_CODE": 1,
        "ES_NIF": 1,
    }
    again = await redactor.redact(THREAD, "John Smith again, at john.smith@acme.com", user="U2")
    assert again.text == "<PERSON_1> again, at <EMAIL_ADDRESS_1>"
    other = await redactor.redact("slack:T1:C1:other", "Mary Jones here", user="U1")
    assert other.text == "<PERSON_1> here", "numbering is per thread"

    stored = redis_dump(sync_redis)
    for value in RAW:
        assert value not in stored
    assert 0 < sync_redis.ttl(f"parley:pii:{THREAD}") <= 600


async def test_restore_shows_values_but_never_secrets(redactor: Redactor) -> None:
    redacted = await redactor.redact(THREAD, MESSAGE, user="U1")
    values = await redactor.restorable(THREAD)
    shown = restore_text(redacted.text, values)
    assert "John Smith" in shown
    assert "ES91 2100 0418 4502 0005 1332" in shown
    assert "Hunter2pass!" not in shown
    assert "<SECRET_1>" in shown
    assert restore_text("Ask <PERSON_9>", values) == "Ask <PERSON_9>", "invented ones stay"
    assert restore_text("Hello <PERSON_1>, write to <EMA", values, partial=True) == (
        "Hello John Smith, write to "
    )


async def test_concurrent_redactions_never_share_a_placeholder(redactor: Redactor) -> None:
    names = [f"user{i}@example.org" for i in range(8)]
    results = await asyncio.gather(
        *(redactor.redact(THREAD, f"Please add {n} to the group", user="U1") for n in names)
    )
    placeholders = {r.text.split("add ")[1].split(" to")[0] for r in results}
    assert len(placeholders) == len(names)
    assert set((await redactor.restorable(THREAD)).values()) == set(names)


async def test_forget_user_and_thread(redactor: Redactor, sync_redis: redis.Redis) -> None:
    await redactor.redact(THREAD, "I'm John Smith", user="U1")
    await redactor.redact(THREAD, "and I'm Mary Jones", user="U2")
    assert await redactor.forget_user(THREAD, "U1") == 1
    assert set((await redactor.restorable(THREAD)).values()) == {"Mary Jones"}
    await redactor.forget_thread(THREAD)
    assert sync_redis.exists(f"parley:pii:{THREAD}") == 0
