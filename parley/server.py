"""`parley serve`: the HTTP ingress. Verifies, normalizes, deduplicates, enqueues, answers.

Routes: each platform's webhook (POST /slack/events, POST /api/messages for Teams),
GET /healthz (the process is up), GET /readyz (Redis and the broker are reachable),
GET /metrics (Prometheus).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.asyncio import Redis

from parley import metrics

log = logging.getLogger(__name__)

# Slack's payloads are a few KB; anything much larger is refused with 413 before parsing.
MAX_BODY_BYTES = 256 * 1024

BrokerCheck = Callable[[], Awaitable[None]]
Collect = Callable[[], Awaitable[None]]  # refreshes gauges read at scrape time


def create_web_app(
    *,
    routes: list[web.RouteDef],
    redis: Redis,
    broker_check: BrokerCheck | None = None,
    collect: Collect | None = None,
) -> web.Application:
    """The ingress: each platform contributes its routes (e.g. bots.slack.inbound)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(redis.ping(), timeout=2)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {exc.__class__.__name__}"
        if broker_check is not None:
            try:
                await asyncio.wait_for(broker_check(), timeout=3)
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = f"unreachable: {exc.__class__.__name__}"
        ok = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", **checks}, status=200 if ok else 503
        )

    async def metrics_page(_: web.Request) -> web.Response:
        if collect is not None:
            try:
                await asyncio.wait_for(collect(), timeout=3)
            except Exception as exc:  # stale gauges beat a failed scrape
                log.warning("could not refresh the metrics gauges: %r", exc)
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/readyz", readyz)

    app.router.add_routes(routes)
    return app
