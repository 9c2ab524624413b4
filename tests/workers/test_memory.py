from __future__ import annotations

from redis.asyncio import Redis

from tests.support.config import make_sealer
from workers.memory import ThreadMemory, Turn

THREAD = "slack:T1:C1:100.1"


async def test_turns_round_trip_trimmed_with_ttl(aredis: Redis) -> None:
    memory = ThreadMemory(aredis, make_sealer(), ttl=120, max_turns=4)
    for i in range(3):
        async with aredis.pipeline(transaction=True) as pipe:
            memory.stage_append(
                pipe,
                THREAD,
                [Turn("user", f"q{i}", 2, f"m{i}"), Turn("assistant", f"a{i}", 3, f"m{i}")],
            )
            await pipe.execute()
    turns = await memory.load(THREAD)
    assert [t.content for t in turns] == ["q1", "a1", "q2", "a2"]
    assert turns[0] == Turn("user", "q1", 2, "m1")
    assert 0 < await aredis.ttl(f"parley:memory:{THREAD}") <= 120
    await memory.forget(THREAD)
    assert await memory.load(THREAD) == []
