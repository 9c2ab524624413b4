"""The placeholder vault on its own: atomic numbering across connections and threads, and
what a thread's hash holds (keyed digests, sealed values, user tags; never clear text)."""

from __future__ import annotations

import asyncio
import threading
from typing import cast

import redis
from redis.asyncio import Redis

from privacy.vault import PlaceholderVault, vault_key
from tests.support.config import make_settings

THREAD = "teams:tenant-1:19:abc@thread.v2:1700000000"
KEY = make_settings().require_encryption_key()


def _worker(redis_url: str, values: list[str], out: list[str]) -> None:
    """A separate thread with its own event loop and connection: another worker."""

    async def run() -> None:
        client = Redis.from_url(redis_url)
        vault = PlaceholderVault(client, KEY, ttl=600)
        try:
            for value in values:
                out.extend(
                    await vault.placeholders(
                        THREAD, [("PERSON", value), ("PERSON", "Shared Name")], user="U1"
                    )
                )
        finally:
            await client.aclose()

    asyncio.run(run())


def test_placeholders_are_assigned_atomically_across_workers(redis_url: str) -> None:
    outputs: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(
            target=_worker,
            args=(redis_url, [f"Person {w}-{i}" for i in range(25)], outputs[w]),
        )
        for w in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    own = [p for out in outputs for p in out[0::2]]
    shared = {p for out in outputs for p in out[1::2]}
    assert len(own) == len(set(own)) == 100
    assert len(shared) == 1
    assert shared.isdisjoint(own)
    assert sorted(int(p[len("<PERSON_") : -1]) for p in [*own, *shared]) == list(range(1, 102))


async def test_the_hash_holds_digests_sealed_values_and_user_tags(
    aredis: Redis, sync_redis: redis.Redis
) -> None:
    vault = PlaceholderVault(aredis, KEY, ttl=600)
    assert await vault.placeholders(THREAD, [], user="U1") == []
    placeholders = await vault.placeholders(
        THREAD, [("PERSON", "Ana García"), ("EMAIL_ADDRESS", "ana@empresa.es")], user="U1"
    )
    assert placeholders == ["<PERSON_1>", "<EMAIL_ADDRESS_1>"]
    fields = cast(dict[str, str], sync_redis.hgetall(vault_key(THREAD)))
    kinds = sorted(f.split(":", 1)[0] for f in fields)
    assert kinds == ["n", "n", "p", "p", "u", "u", "v", "v"]
    assert fields["n:PERSON"] == "1"
    assert fields["p:<PERSON_1>"] != "Ana García"
    for field, value in fields.items():
        assert "Ana" not in field + value
        assert "ana@" not in field + value
        assert "U1" not in field
    entries = await vault.lookup(THREAD, ["<PERSON_1>", "<PERSON_2>"])
    assert list(entries) == ["<PERSON_1>"]
    assert (entries["<PERSON_1>"].entity, entries["<PERSON_1>"].value) == ("PERSON", "Ana García")


async def test_one_value_of_two_types_gets_two_placeholders(aredis: Redis) -> None:
    vault = PlaceholderVault(aredis, KEY, ttl=600)
    got = await vault.placeholders(
        THREAD, [("PHONE_NUMBER", "612345678"), ("US_SSN", "612345678")], user="U1"
    )
    assert got == ["<PHONE_NUMBER_1>", "<US_SSN_1>"]


async def test_a_sealed_value_copied_into_another_thread_does_not_open(
    aredis: Redis, sync_redis: redis.Redis
) -> None:
    vault = PlaceholderVault(aredis, KEY, ttl=600)
    await vault.placeholders(THREAD, [("PERSON", "Ana García")], user="U1")
    sealed = sync_redis.hget(vault_key(THREAD), "p:<PERSON_1>")
    assert sealed is not None
    sync_redis.hset(vault_key("slack:T1:C9:1"), "p:<PERSON_1>", sealed)
    assert await vault.lookup("slack:T1:C9:1", ["<PERSON_1>"]) == {}
    assert await vault.entries("slack:T1:C9:1") == []
