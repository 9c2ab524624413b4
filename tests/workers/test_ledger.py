from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from workers.ledger import ReplyLedger

KEY = "slack:T1:C1:100.1"


async def test_reply_state_survives_and_finish_is_seen(aredis: Redis) -> None:
    ledger = ReplyLedger(aredis, ttl=60, lease_ttl=5)
    assert not (await ledger.load(KEY)).finished
    await ledger.save_reply_state(KEY, {"parts": [{"ts": "1.2"}]})
    entry = await ledger.load(KEY)
    assert entry.reply_state == {"parts": [{"ts": "1.2"}]}
    assert not entry.finished
    async with aredis.pipeline(transaction=True) as pipe:
        ledger.stage_finished(pipe, KEY, "answered")
        await pipe.execute()
    entry = await ledger.load(KEY)
    assert entry.finished
    assert entry.reply_state == {"parts": [{"ts": "1.2"}]}
    assert 0 < await aredis.ttl(f"parley:reply:{KEY}") <= 60


async def test_lease_admits_one_runner_and_the_second_sees_it_finished(aredis: Redis) -> None:
    ledger = ReplyLedger(aredis, ttl=60, lease_ttl=5, poll_interval=0.01)
    entered: list[str] = []

    async def first() -> None:
        async with ledger.lease(KEY) as holder:
            assert holder
            entered.append("first")
            await asyncio.sleep(0.1)
            async with aredis.pipeline(transaction=True) as pipe:
                ledger.stage_finished(pipe, KEY, "answered")
                await pipe.execute()

    async def second() -> None:
        await asyncio.sleep(0.02)
        async with ledger.lease(KEY) as holder:
            entered.append("second" if holder else "second-skipped")

    await asyncio.gather(first(), second())
    assert entered == ["first", "second-skipped"]
    assert await aredis.exists(f"parley:lease:{KEY}") == 0


async def test_a_crashed_runners_lease_lapses(aredis: Redis) -> None:
    ledger = ReplyLedger(aredis, ttl=60, lease_ttl=0.2, poll_interval=0.01)
    await aredis.set(f"parley:lease:{KEY}", "dead-worker", px=200)
    async with asyncio.timeout(2), ledger.lease(KEY) as holder:
        assert holder
