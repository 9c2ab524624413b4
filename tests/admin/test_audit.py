from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from admin.audit import AuditLog
from workers import keys


async def _record(log: AuditLog, n: int, channel: str = "C1") -> None:
    await log.record(
        platform="slack",
        tenant="T1",
        channel=channel,
        actor=f"U{n}",
        action="set temperature",
        outcome="done",
        old="0.7",
        new=str(n),
    )


async def test_entries_come_back_oldest_first_across_pages(aredis: Redis) -> None:
    log = AuditLog(aredis, max_entries=5000)
    for n in range(1203):
        await _record(log, n, channel="C1" if n % 2 else "C2")
    entries = [e async for e in log.entries()]
    assert [e.actor for e in entries] == [f"U{n}" for n in range(1203)]
    assert entries[0].id
    assert entries[0].at.endswith("+00:00")
    only = [e async for e in log.entries(channel="C1")]
    assert len(only) == 601
    assert all(e.channel == "C1" for e in only)
    line = json.loads(entries[5].to_json())
    assert line["old"] == "0.7"
    assert line["new"] == "5"
    assert line["outcome"] == "done"


async def test_since_skips_older_entries(aredis: Redis) -> None:
    log = AuditLog(aredis, max_entries=1000)
    await _record(log, 1)
    later = datetime.now(UTC) + timedelta(seconds=60)
    assert [e async for e in log.entries(since=later)] == []
    earlier = datetime.now(UTC) - timedelta(seconds=60)
    assert len([e async for e in log.entries(since=earlier)]) == 1


async def test_the_log_is_capped(aredis: Redis) -> None:
    log = AuditLog(aredis, max_entries=100)
    for n in range(1000):
        await _record(log, n)
    length = await log.length()
    # Approximate trimming: about the cap, never the whole history.
    assert 100 <= length < 300
    assert await aredis.type(keys.AUDIT) == "stream"
