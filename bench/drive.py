"""The load generator: signed Slack Events API deliveries at a fixed rate, open loop.

    .venv/bin/python -m bench.drive < plan.json > results.json

Runs in a process of its own so that the fakes and the bookkeeping of the benchmark never
delay a send or the reading of an acknowledgement. The plan (JSON on stdin) gives the URL,
the signing secret, the rate and the request bodies; each body is signed just before it is
sent (Slack's 5-minute window), on schedule whether or not earlier ones were answered.
Prints `{"results": [[sent, acked, status], ...]}` (time.monotonic() seconds, comparable
across processes of this machine; status -1 for a connection error or timeout).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.support.slack_events import sign

START_DELAY = 0.2  # seconds between the plan being read and the first send
TIMEOUT = 30.0  # seconds an acknowledgement may take before it counts as an error


@dataclass(frozen=True)
class Plan:
    url: str
    secret: str
    rate: float
    bodies: list[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(str(data["url"]), str(data["secret"]), float(data["rate"]), list(data["bodies"]))

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "secret": self.secret, "rate": self.rate, "bodies": self.bodies}


Result = tuple[float, float, int]  # sent, acknowledged (monotonic seconds), HTTP status


async def drive(plan: Plan) -> list[Result]:
    results: list[Result] = [(0.0, 0.0, 0)] * len(plan.bodies)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(index: int, body: bytes) -> None:
            headers = sign(body, secret=plan.secret)
            sent = time.monotonic()
            try:
                async with session.post(plan.url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = -1
            results[index] = (sent, time.monotonic(), status)

        start = time.monotonic() + START_DELAY
        tasks: list[asyncio.Task[None]] = []
        for index, body in enumerate(plan.bodies):
            delay = start + index / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(index, body.encode())))
        await asyncio.gather(*tasks)
    return results


def main() -> int:
    plan = Plan.from_json(json.load(sys.stdin))
    results = asyncio.run(drive(plan))
    json.dump({"results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
