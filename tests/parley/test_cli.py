"""`parley` as an operator meets it: clear messages, no tracebacks, for wrong setups."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

from tests.support.config import ENCRYPTION_KEY
from tests.support.processes import free_port


def _parley(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "SLACK_", "TGI_"))}
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


KEY = {"PARLEY_ENCRYPTION_KEY": ENCRYPTION_KEY}


def test_keygen_prints_a_usable_key() -> None:
    result = _parley("keygen")
    assert result.returncode == 0
    assert len(base64.b64decode(result.stdout.strip(), validate=True)) == 32


def test_serve_and_worker_refuse_to_start_without_an_encryption_key() -> None:
    for command in ("serve", "worker"):
        result = _parley(command, SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s")
        assert result.returncode == 2
        assert "PARLEY_ENCRYPTION_KEY not set" in result.stderr
        assert "parley keygen" in result.stderr


def test_serve_without_a_platform_says_what_to_set() -> None:
    result = _parley("serve", **KEY)
    assert result.returncode == 2
    assert "No chat platform configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_invalid_setting_names_the_variable() -> None:
    result = _parley("worker", PARLEY_MAX_NEW_TOKENS="lots", **KEY)
    assert result.returncode == 2
    assert "PARLEY_MAX_NEW_TOKENS" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_redis_says_how_to_start_it() -> None:
    result = _parley(
        "serve",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
        PARLEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        **KEY,
    )
    assert result.returncode == 3
    assert "is not reachable" in result.stderr
    assert "redis-server" in result.stderr
    assert "Traceback" not in result.stderr
