"""Redaction against the real analyzer and Redis: placeholders consistent per thread and
safe under concurrency, values sealed (nothing raw anywhere in Redis), restoration for
display and streaming, erasure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio import Redis

from parley.settings import SettingsError
from privacy.redactor import (
    Redactor,
    StreamRestorer,
    create_redactor,
    restore_text,
    split_partial,
)
from privacy.vault import vault_key
from tests.support.config import make_settings
from tests.support.scan import redis_dump

THREAD = "slack:T1:C1:1700000000.000100"
OTHER_THREAD = "slack:T1:C1:1700000000.000200"
TTL = 600
PATTERNS = {"EMPLOYEE_ID": r"\bEMP-\d{6}\b"}
RAW = [
    "John Smith",
    "john.smith@acme.com",
    "+34 612 345 678",
    "ES91 2100 0418 4502 0005 1332",
    "Hunter2pass!",
    "12345678Z",
    "EMP-204518",
]
MESSAGE = (
    "Hi, I'm John Smith (john.smith@acme.com, +34 612 345 678). My password: Hunter2pass! "
    "Please pay to ES91 2100 0418 4502 0005 1332, DNI 12345678Z, badge EMP-204518. "
    "Ticket INC0012345, v2.3.1."
)


@pytest.fixture
def redactor(redis_url: str, aredis: Redis) -> Redactor:
    settings = make_settings(
        redis_url=redis_url, memory_ttl_seconds=TTL, redaction_patterns=PATTERNS
    )
    return create_redactor(settings, aredis)


@pytest.fixture
async def second_redactor(redis_url: str) -> AsyncIterator[Redactor]:
    """Another worker: its own Redis connection."""
    client = Redis.from_url(redis_url)  # bytes replies, unlike `aredis`
    settings = make_settings(
        redis_url=redis_url, memory_ttl_seconds=TTL, redaction_patterns=PATTERNS
    )
    yield create_redactor(settings, client)
    await client.aclose()


async def test_values_become_placeholders_consistent_across_turns(redactor: Redactor) -> None:
    first = await redactor.redact(THREAD, MESSAGE, user="U1")
    assert first.text == (
        "Hi, I'm <PERSON_1> (<EMAIL_ADDRESS_1>, <PHONE_NUMBER_1>). My password: <SECRET_1> "
        "Please pay to <IBAN_CODE_1>, DNI <ES_NIF_1>, badge <EMPLOYEE_ID_1>. "
        "Ticket INC0012345, v2.3.1."
    )
    assert first.counts == {
        "PERSON": 1,
        "EMAIL_ADDRESS": 1,
        "PHONE_NUMBER": 1,
        "SECRET": 1,
        "IBAN_CODE": 1,
        "ES_NIF": 1,
        "EMPLOYEE_ID": 1,
    }
    again = await redactor.redact(
        THREAD, "John Smith again, now with Mary Jones, at john.smith@acme.com", user="U2"
    )
    assert again.text == "<PERSON_1> again, now with <PERSON_2>, at <EMAIL_ADDRESS_1>"
    assert again.counts == {"PERSON": 2, "EMAIL_ADDRESS": 1}


async def test_numbering_is_per_thread(redactor: Redactor) -> None:
    await redactor.redact(THREAD, "John Smith and Mary Jones", user="U1")
    other = await redactor.redact(OTHER_THREAD, "Mary Jones here", user="U1")
    assert other.text == "<PERSON_1> here"


async def test_text_without_personal_data_is_unchanged(redactor: Redactor) -> None:
    text = "The VPN fails since v2.3.1 (ticket INC0012345), error 0x80070005."
    result = await redactor.redact(THREAD, text, user="U1")
    assert (result.text, result.counts) == (text, {})


async def test_nothing_raw_at_rest(redactor: Redactor, sync_redis: redis.Redis) -> None:
    await redactor.redact(THREAD, MESSAGE, user="U1SECRETUSER")
    await redactor.restore(THREAD, "<PERSON_1>")
    stored = redis_dump(sync_redis)
    for value in [*RAW, "U1SECRETUSER"]:
        assert value not in stored, f"{value!r} is stored in clear"
    assert "John" not in stored
    assert sync_redis.keys("*") == [vault_key(THREAD)]


async def test_the_map_has_the_thread_ttl_refreshed_on_use(
    redactor: Redactor, sync_redis: redis.Redis
) -> None:
    await redactor.redact(THREAD, "I'm John Smith", user="U1")
    key = vault_key(THREAD)
    assert 0 < sync_redis.ttl(key) <= TTL
    sync_redis.expire(key, 30)
    await redactor.restore(THREAD, "Hello <PERSON_1>")
    assert sync_redis.ttl(key) > 30
    sync_redis.expire(key, 30)
    await redactor.restorable(THREAD)
    assert sync_redis.ttl(key) > 30
    sync_redis.expire(key, 30)
    await redactor.redact(THREAD, "nothing personal here", user="U1")
    await redactor.redact(THREAD, "John Smith again", user="U1")
    assert sync_redis.ttl(key) > 30


async def test_concurrent_redactions_in_one_thread(
    redactor: Redactor, second_redactor: Redactor
) -> None:
    """Two workers, two connections, interleaved: each new value gets its own number and
    a value both see gets one placeholder."""
    emails = [f"user{i}@example.org" for i in range(24)]
    workers = [redactor, second_redactor]
    results = await asyncio.gather(
        *(
            workers[i % 2].redact(THREAD, f"Add {e} and shared@example.org please", user="U1")
            for i, e in enumerate(emails)
        )
    )
    own = [r.text.split()[1] for r in results]
    shared = {r.text.split()[3] for r in results}
    assert len(set(own)) == len(emails)
    assert len(shared) == 1
    assert shared.isdisjoint(own)
    values = await redactor.restorable(THREAD)
    assert sorted(values.values()) == sorted([*emails, "shared@example.org"])
    numbers = sorted(int(p.rsplit("_", 1)[1].rstrip(">")) for p in values)
    assert numbers == list(range(1, len(emails) + 2))


async def test_restore_puts_back_the_values_people_wrote(redactor: Redactor) -> None:
    redacted = await redactor.redact(THREAD, MESSAGE, user="U1")
    shown = await redactor.restore(THREAD, redacted.text)
    for value in RAW:
        if value != "Hunter2pass!":
            assert value in shown
    assert "Hunter2pass!" not in shown, "secrets are never shown again"
    assert "<SECRET_1>" in shown
    answer = "Sure <PERSON_1>, I wrote to <EMAIL_ADDRESS_1> and to <PERSON_9>."
    assert await redactor.restore(THREAD, answer) == (
        "Sure John Smith, I wrote to john.smith@acme.com and to <PERSON_9>."
    ), "a placeholder the model invented stays as it is"


async def test_restore_is_per_thread(redactor: Redactor) -> None:
    await redactor.redact(THREAD, "I'm John Smith", user="U1")
    assert await redactor.restore(OTHER_THREAD, "Hi <PERSON_1>") == "Hi <PERSON_1>"


async def test_restore_with_bytes_replies(second_redactor: Redactor) -> None:
    await second_redactor.redact(THREAD, "I'm John Smith", user="U1")
    assert await second_redactor.restore(THREAD, "Hi <PERSON_1>") == "Hi John Smith"
    assert await second_redactor.restorable(THREAD) == {"<PERSON_1>": "John Smith"}


@pytest.mark.parametrize(
    ("text", "ready", "held"),
    [
        ("Hello <PERS", "Hello ", "<PERS"),
        ("Hello <PERSON_1", "Hello ", "<PERSON_1"),
        ("Hello <", "Hello ", "<"),
        ("Hello <PERSON_1>", "Hello <PERSON_1>", ""),
        ("if a < b then", "if a < b then", ""),
        ("see <https://example.com", "see <https://example.com", ""),
    ],
)
def test_split_partial_holds_back_only_a_half_placeholder(text: str, ready: str, held: str) -> None:
    assert split_partial(text) == (ready, held)


async def test_streaming_never_flashes_a_half_placeholder(redactor: Redactor) -> None:
    await redactor.redact(THREAD, "I'm John Smith, john.smith@acme.com", user="U1")
    shown, held = await redactor.restore_partial(THREAD, "Hi <PERSON_1>, I wrote to <EMAIL_AD")
    assert (shown, held) == ("Hi John Smith, I wrote to ", "<EMAIL_AD")

    stream = await redactor.stream(THREAD)
    chunks = ["Hi <PER", "SON_1>", ", mail <EMAIL", "_ADDRESS_1> or <PERSON_7> <", "3 done <X"]
    shown_parts = [stream.feed(c) for c in chunks]
    assert shown_parts == [
        "Hi ",
        "John Smith",
        ", mail ",
        "john.smith@acme.com or <PERSON_7> ",
        "<3 done ",
    ]
    assert stream.flush() == "<X"
    assert restore_text("<PERSON_1> <EMA", {"<PERSON_1>": "John"}, partial=True) == "John "


def test_stream_restorer_without_values_passes_text_through() -> None:
    stream = StreamRestorer({})
    assert stream.feed("plain text") == "plain text"
    assert stream.flush() == ""


async def test_forget_user_drops_the_values_that_user_wrote(
    redactor: Redactor, sync_redis: redis.Redis
) -> None:
    await redactor.redact(THREAD, "I'm John Smith, john.smith@acme.com", user="UALICE")
    await redactor.redact(THREAD, "and I'm Mary Jones, mary@acme.com", user="UBOB")
    await redactor.redact(THREAD, "John Smith is on leave", user="UCAROL")
    assert await redactor.forget_user(THREAD, "UALICE") == 2
    assert await redactor.restorable(THREAD) == {
        "<PERSON_2>": "Mary Jones",
        "<EMAIL_ADDRESS_2>": "mary@acme.com",
    }
    assert await redactor.restore(THREAD, "<PERSON_1>") == "<PERSON_1>"
    # A value met again after erasure gets a new number, never a forgotten one.
    again = await redactor.redact(THREAD, "John Smith is back", user="UBOB")
    assert again.text == "<PERSON_3> is back"
    assert "UALICE" not in redis_dump(sync_redis)
    assert await redactor.forget_user(THREAD, "UNOBODY") == 0


async def test_forget_thread_drops_the_whole_map(
    redactor: Redactor, sync_redis: redis.Redis
) -> None:
    await redactor.redact(THREAD, "I'm John Smith", user="U1")
    await redactor.redact(OTHER_THREAD, "I'm Mary Jones", user="U1")
    await redactor.forget_thread(THREAD)
    assert sync_redis.exists(vault_key(THREAD)) == 0
    assert await redactor.restorable(THREAD) == {}
    assert await redactor.restorable(OTHER_THREAD) == {"<PERSON_1>": "Mary Jones"}


async def test_another_key_cannot_read_the_map(redis_url: str, aredis: Redis) -> None:
    ours = create_redactor(make_settings(redis_url=redis_url), aredis)
    await ours.redact(THREAD, "I'm John Smith", user="U1")
    theirs = create_redactor(
        make_settings(redis_url=redis_url, encryption_key="A" * 43 + "="), aredis
    )
    assert await theirs.restore(THREAD, "Hi <PERSON_1>") == "Hi <PERSON_1>"
    assert await theirs.restorable(THREAD) == {}


def test_the_encryption_key_is_required(redis_url: str, aredis: Redis) -> None:
    settings = make_settings(redis_url=redis_url, encryption_key=None)
    with pytest.raises(SettingsError, match="PARLEY_ENCRYPTION_KEY"):
        create_redactor(settings, aredis)
