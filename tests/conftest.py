"""Shared fixtures: the real Redis, the fake Slack and TGI servers, Parley's settings."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from hypothesis import settings
from redis.asyncio import Redis as AsyncRedis

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev

# The test command is deterministic, so that CI never turns red by chance; search new
# examples with HYPOTHESIS_PROFILE=explore scripts/test.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

# A database of its own, flushed around every test; the broker queue lives in it too.
# PARLEY_TEST_REDIS_URL lets test runs side by side use separate databases.
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(
            "Redis is not running at 127.0.0.1:6379. Start it: redis-server --daemonize yes "
            "(.ci/run does this)."
        )
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[AsyncRedis]:
    client = AsyncRedis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def fake_tgi() -> Iterator[FakeTGI]:
    with FakeTGI() as tgi:
        yield tgi


def slack_for_parley() -> FakeSlack:
    """A fake Slack whose credentials and ids match tests.support.slack_events."""
    return FakeSlack(
        ev.BOT_TOKEN,
        app_token=ev.APP_TOKEN,
        team_id=ev.TEAM,
        bot_user_id=ev.BOT_USER,
        bot_id=ev.BOT_ID,
    )


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with slack_for_parley() as slack:
        yield slack
