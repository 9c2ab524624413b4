"""The `parley` command line: the edge where settings are read, once, and passed in."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley import admin_cli, knowledge_cli
from parley.logs import configure as configure_logging
from parley.settings import Settings, SettingsError, load_settings

log = logging.getLogger("parley")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        return _bench(args_list[1:])
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the HTTP ingress (Slack and Teams webhooks, health)"
    )
    serve.add_argument(
        "--socket-mode",
        action="store_true",
        help="receive Slack events over Socket Mode (needs SLACK_APP_TOKEN) instead of HTTP",
    )
    worker = commands.add_parser("worker", help="run a Celery worker that answers messages")
    worker.add_argument(
        "--concurrency", type=int, default=None, help="generations in flight per process"
    )
    commands.add_parser("keygen", help="print a new PARLEY_ENCRYPTION_KEY")
    commands.add_parser(
        "bench", help="run the load benchmark (from a source checkout; parley bench --help)"
    )
    commands.add_parser(
        "chat", help="talk to Parley from this terminal (needs Redis and a running worker)"
    )
    commands.add_parser(
        "doctor",
        help="check Redis, the broker, the model server, Slack, Teams and the knowledge bases; "
        "say how to fix",
    )
    admin_cli.add_parsers(commands)
    knowledge_cli.add_parser(commands)
    args = parser.parse_args(argv)

    if args.command == "keygen":
        from privacy.crypto import generate_key

        print(generate_key())
        return 0
    if args.command == knowledge_cli.COMMAND:  # needs no encryption key
        return knowledge_cli.run(args)
    try:
        settings = load_settings()
        settings.require_encryption_key()
        if args.command == "serve":
            settings.require_platform(socket_mode=args.socket_mode)
    except SettingsError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command in admin_cli.COMMANDS:
        return admin_cli.run(args, settings)
    if args.command == "doctor":
        from parley.doctor import run_doctor

        return asyncio.run(run_doctor(settings, sys.stdout))
    try:
        if args.command == "serve":
            asyncio.run(_serve(settings, socket_mode=args.socket_mode))
            return 0
        if args.command == "chat":
            asyncio.run(_chat(settings))
            return 0
        return _worker(settings, concurrency=args.concurrency)
    except ServiceUnreachable as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0


def _bench(argv: list[str]) -> int:
    """`parley bench ...` is bench.load's command line; bench/ and its fakes in tests/ are
    not installed, so it runs from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    if (root / "bench" / "load.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from bench.load import main as bench_main
    except ImportError as exc:
        print(f"parley: bench needs a source checkout of Parley ({exc})", file=sys.stderr)
        return 2
    return bench_main(argv)


class ServiceUnreachable(Exception):
    pass


async def _check_redis(settings: Settings) -> None:
    client = Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        await client.ping()
    except RedisError as exc:
        raise ServiceUnreachable(
            f"Redis at {settings.redis_url} is not reachable ({exc}). Start it (for example "
            "`redis-server --daemonize yes` or `docker compose up -d redis`) or set "
            "PARLEY_REDIS_URL."
        ) from None
    finally:
        await client.aclose()


async def _serve(settings: Settings, *, socket_mode: bool) -> None:
    from aiohttp import web

    from bots.slack.inbound import create_slack_app, slack_routes
    from parley.ingress import create_ingress
    from parley.server import create_web_app

    await _check_redis(settings)
    ingress = create_ingress(settings)
    celery, redis, admin, intake = ingress.celery, ingress.redis, ingress.admin, ingress.intake
    routes: list[web.RouteDef] = []
    slack = None
    if settings.slack_enabled or socket_mode:
        slack = create_slack_app(
            settings,
            intake,
            commands=admin.commands,
            feedback=admin.feedback,
            socket_mode=socket_mode,
        )
        if not socket_mode:
            routes += slack_routes(slack, settings)
    if settings.teams_enabled:
        from bots.teams.inbound import teams_routes

        routes += teams_routes(settings, intake, commands=admin.commands, feedback=admin.feedback)

    async def broker_check() -> None:
        def connect() -> None:
            with celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)

        await asyncio.to_thread(connect)

    app = create_web_app(
        routes=routes, redis=redis, broker_check=broker_check, collect=ingress.collect_metrics
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info(
        "listening on http://%s:%d (%s, GET /healthz, GET /readyz)",
        settings.host,
        settings.port,
        ", ".join(f"{r.method} {r.path}" for r in routes) or "no webhook routes",
    )

    handler = None
    if socket_mode and slack is not None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert settings.slack_app_token is not None
        handler = AsyncSocketModeHandler(slack, settings.slack_app_token.get_secret_value())
        await handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("connected to Slack over Socket Mode")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if handler is not None:
        await handler.close_async()  # type: ignore[no-untyped-call]
    await runner.cleanup()
    await ingress.aclose()


async def _chat(settings: Settings) -> None:
    from bots.console.chat import ConsoleChat, stdin_lines
    from bots.console.transport import Transport
    from parley.ingress import create_ingress

    await _check_redis(settings)
    if settings.log_level == "INFO":
        # The terminal is for the conversation: only warnings, unless asked for DEBUG.
        logging.getLogger().setLevel(logging.WARNING)
    ingress = create_ingress(settings, max_connections=8)
    chat = ConsoleChat(
        intake=ingress.intake,
        commands=ingress.admin.commands,
        transport=Transport(ingress.redis, ingress.sealer),
        out=sys.stdout,
        answer_timeout=settings.longest_task_seconds + 60,
    )
    try:
        await chat.run(stdin_lines())
    finally:
        await ingress.aclose()


def _worker(settings: Settings, *, concurrency: int | None) -> int:
    from workers.celery_app import create_celery

    asyncio.run(_check_redis(settings))
    asyncio.run(_check_model(settings))
    if settings.metrics_port:
        _serve_worker_metrics(settings)
    app = create_celery(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            "--pool=threads",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--queues={settings.queue_name}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def _serve_worker_metrics(settings: Settings) -> None:
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.metrics_port, addr=settings.host)
    except OSError as exc:
        raise ServiceUnreachable(
            f"cannot serve metrics on {settings.host}:{settings.metrics_port} ({exc}); set "
            "PARLEY_METRICS_PORT to a free port, or to 0 when several workers share a host"
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)


async def _check_model(settings: Settings) -> None:
    """Warn (not fail: TGI may still be loading weights) when the model server disagrees."""
    from llm.factory import create_model, describe_backend

    model = create_model(settings)
    try:
        info = await asyncio.wait_for(model.server_info(), timeout=5)
    except Exception as exc:
        log.warning(
            "%s not reachable yet (%s: %s); answers will fail politely until it is",
            describe_backend(settings),
            exc.__class__.__name__,
            exc,
        )
        return
    finally:
        await model.aclose()
    max_total = info.get("max_total_tokens")
    if isinstance(max_total, int) and max_total < settings.context_tokens:
        log.warning(
            "PARLEY_CONTEXT_TOKENS=%d exceeds TGI's --max-total-tokens=%d: long threads will be "
            "rejected; set PARLEY_CONTEXT_TOKENS=%d",
            settings.context_tokens,
            max_total,
            max_total,
        )


if __name__ == "__main__":
    raise SystemExit(main())
