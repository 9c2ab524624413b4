from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient

from admin.channels import ChannelStore
from admin.setup import create_admin
from bots.base import CommandCall, CommandPlatform
from bots.slack.commands import WORKING, SlackCommandPlatform, command_text, render
from bots.slack.inbound import create_slack_app, slack_routes
from parley.server import create_web_app
from parley.settings import Settings
from tests.fakes.slack_api import FakeSlack
from tests.support import slack_events as ev
from tests.support.config import make_sealer, make_settings
from tests.support.service import wait_until
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake


def test_command_text_undoes_slacks_escaping_but_keeps_user_mentions() -> None:
    raw = (
        "persona set Answer for <#C123|it-help> &amp; link <https://wiki.acme.com/vpn|the wiki>"
        " &lt;b&gt; <@U42|ann>"
    )
    assert command_text(raw) == (
        "persona set Answer for #it-help & link https://wiki.acme.com/vpn <b> <@U42|ann>"
    )


async def test_users_and_message_links_are_read() -> None:
    platform = SlackCommandPlatform(AsyncWebClient(token="x"), {})
    assert await platform.resolve_user("<@U012AB|ann>") == "U012AB"
    assert await platform.resolve_user("<@W0123456>") == "W0123456"
    assert await platform.resolve_user("U0123ABC") == "U0123ABC"
    assert await platform.resolve_user("@ann") is None
    link = "https://acme.slack.com/archives/C0HELP/p1700000000000100"
    assert platform.parse_thread_link(link) == ("C0HELP", "1700000000.000100")
    assert platform.parse_thread_link(f"<{link}>") == ("C0HELP", "1700000000.000100")
    reply = f"{link.replace('100', '900')}?thread_ts=1700000000.000100&amp;cid=C0HELP"
    assert platform.parse_thread_link(reply) == ("C0HELP", "1700000000.000100")
    assert platform.parse_thread_link("https://example.com/archives/x") is None
    assert platform.show_user("U1") == "<@U1>"


def test_replies_are_mrkdwn_and_keep_only_user_mentions() -> None:
    assert render("**Admins**: <@U1>, <!channel>") == "*Admins*: <@U1>, &lt;!channel&gt;"


class SlowCommands:
    """A Commands that takes longer than Slack waits for an acknowledgement."""

    async def run(self, call: CommandCall, platform: CommandPlatform) -> str:
        await asyncio.sleep(2.5)
        return f"done: {call.text}"


def _settings(redis_url: str, slack: FakeSlack, **values: Any) -> Settings:
    return make_settings(
        slack_bot_token=ev.BOT_TOKEN,
        slack_signing_secret=ev.SIGNING_SECRET,
        slack_api_url=slack.url,
        redis_url=redis_url,
        queue_name="commands-test",
        **values,
    )


async def _no_model() -> dict[str, Any]:
    raise ConnectionError("no model server here")


async def _client(settings: Settings, aredis: Redis, commands: Any = None) -> TestClient[Any, Any]:
    admin = create_admin(settings, aredis, _no_model)
    intake = QueueIntake(
        aredis,
        publisher(create_celery(settings), settings),
        make_sealer(),
        dedupe_ttl=600,
        thread_ttl=600,
        channels=admin.channels,
    )
    app = create_slack_app(
        settings, intake, commands=commands or admin.commands, feedback=admin.feedback
    )
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_web_app(routes=slack_routes(app, settings), redis=aredis))
    )
    await client.start_server()
    return client


@pytest.fixture
async def client(
    redis_url: str, aredis: Redis, fake_slack: FakeSlack
) -> AsyncIterator[TestClient[Any, Any]]:
    fake_slack.workspace_admins = {"UOWNER"}
    c = await _client(_settings(redis_url, fake_slack, slack_workspace_admins=True), aredis)
    yield c
    await c.close()


async def _command(
    client: TestClient[Any, Any], fake_slack: FakeSlack, text: str, **kwargs: Any
) -> dict[str, Any]:
    body = ev.slash_command(text, response_url=fake_slack.response_url("r"), **kwargs)
    resp = await client.post("/slack/events", data=body, headers=ev.command_headers(body))
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    assert answer["response_type"] == "ephemeral"
    return answer


async def test_workspace_admins_found_by_users_info_may_change_settings(
    client: TestClient[Any, Any], fake_slack: FakeSlack, redis_url: str, aredis: Redis
) -> None:
    answer = await _command(client, fake_slack, "mode all", user="UOWNER")
    assert "every new message" in answer["text"]
    assert fake_slack.calls_to("users.info")[0]["user"] == "UOWNER"
    answer = await _command(client, fake_slack, "mode mentions", user="UANYONE")
    assert "Only admins of this channel can use `/parley mode`" in answer["text"]
    config = await ChannelStore(aredis, make_settings()).load("slack", ev.TEAM, "C0HELP")
    assert config.mode == "all"


async def test_admins_add_takes_an_escaped_mention(
    client: TestClient[Any, Any], fake_slack: FakeSlack
) -> None:
    answer = await _command(client, fake_slack, "admins add <@U0BOBBY|bob>", user="UOWNER")
    assert answer["text"] == ":key: <@U0BOBBY> is now an admin of this channel."
    answer = await _command(client, fake_slack, "disable", user="U0BOBBY")
    assert "no longer answers" in answer["text"]


async def test_a_slow_command_is_acknowledged_at_once_and_answered_by_response_url(
    redis_url: str, aredis: Redis, fake_slack: FakeSlack, sync_redis: redis.Redis
) -> None:
    client = await _client(_settings(redis_url, fake_slack), aredis, commands=SlowCommands())
    try:
        started = time.monotonic()
        answer = await _command(client, fake_slack, "status")
        assert time.monotonic() - started < 2.9, "Slack waits 3 s at most"
        assert answer["text"] == WORKING
        await asyncio.to_thread(
            wait_until, lambda: bool(fake_slack.responses("r")), 10, "the response_url post"
        )
        [later] = fake_slack.responses("r")
        assert later["text"] == "done: status"
        assert later["response_type"] == "ephemeral"
    finally:
        await client.close()
