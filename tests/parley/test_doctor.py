"""`parley doctor` as an operator runs it: every service checked, a clear fix for each fault."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.fakes.slack_api import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.config import ENCRYPTION_KEY
from tests.support.processes import free_port


def _doctor(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARLEY_", "SLACK_", "TGI_", "Microsoft"))
    }
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", "doctor"],
        env={**clean, "PARLEY_ENCRYPTION_KEY": ENCRYPTION_KEY, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_a_healthy_setup_passes(redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack) -> None:
    result = _doctor(
        PARLEY_REDIS_URL=redis_url,
        TGI_URL=fake_tgi.url,
        SLACK_BOT_TOKEN=ev.BOT_TOKEN,
        SLACK_SIGNING_SECRET=ev.SIGNING_SECRET,
        SLACK_API_URL=fake_slack.url,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"✓ Redis ({redis_url}): reachable" in result.stdout
    assert "! Workers: none running" in result.stdout, "a warning, not a failure"
    assert "✓ Model (TGI at" in result.stdout
    assert "Meta-Llama-3-8B-Instruct" in result.stdout
    assert "✓ Slack auth.test: bot" in result.stdout
    assert "All good." in result.stdout


def test_a_stopped_redis_a_dead_model_and_a_bad_slack_token_are_explained(
    fake_slack: FakeSlack,
) -> None:
    fake_slack.fail("auth.test", error="invalid_auth", status=200, times=None)
    result = _doctor(
        PARLEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TGI_URL=f"http://127.0.0.1:{free_port()}",
        SLACK_BOT_TOKEN="xoxb-revoked",
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=fake_slack.url,
    )
    assert result.returncode == 1
    out = result.stdout
    assert "✗ Redis (redis://127.0.0.1:" in out
    assert "not reachable" in out
    assert "fix: start Redis (`redis-server --daemonize yes`" in out
    assert "✗ Model (TGI at" in out
    assert "fix: start TGI" in out
    assert "✗ Slack auth.test: refused: invalid_auth" in out
    assert "Bot User OAuth Token" in out
    assert "Traceback" not in out + result.stderr


def test_a_wrong_context_size_and_a_dead_broker_are_failures(
    redis_url: str, fake_tgi: FakeTGI
) -> None:
    result = _doctor(
        PARLEY_REDIS_URL=redis_url,
        TGI_URL=fake_tgi.url,
        PARLEY_CONTEXT_TOKENS="1000000",
        PARLEY_MAX_NEW_TOKENS="512",
        PARLEY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//",
    )
    assert result.returncode == 1
    assert "✗ Context size: PARLEY_CONTEXT_TOKENS=1000000 exceeds" in result.stdout
    assert "✗ Broker (amqp://guest:***@127.0.0.1:" in result.stdout
    assert "rabbitmq-server" in result.stdout
