"""A running Parley: `parley serve` and `parley worker` subprocesses wired to the fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import slack_events
from tests.support.config import ENCRYPTION_KEY
from tests.support.processes import ParleyProcess, free_port


def parley_env(
    *, redis_url: str, tgi_url: str, slack_api_url: str, **overrides: str
) -> dict[str, str]:
    """Settings for test processes: fast retries and throttles, loopback fakes only."""
    env = {
        "PARLEY_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "SLACK_BOT_TOKEN": slack_events.BOT_TOKEN,
        "SLACK_SIGNING_SECRET": slack_events.SIGNING_SECRET,
        "SLACK_APP_TOKEN": slack_events.APP_TOKEN,
        "SLACK_API_URL": slack_api_url,
        "TGI_URL": tgi_url,
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_HOST": "127.0.0.1",
        "PARLEY_PORT": str(free_port()),
        "PARLEY_QUEUE": "parley-test",
        "PARLEY_REPLY_UPDATE_INTERVAL": "0.05",
        "PARLEY_GENERATION_TIMEOUT": "5",
        "PARLEY_TOKEN_TIMEOUT": "2",
        "PARLEY_MODEL_RETRIES": "2",
        "PARLEY_RETRY_BASE_DELAY": "0.05",
        "PARLEY_RETRY_MAX_DELAY": "0.2",
        "PARLEY_VISIBILITY_TIMEOUT": "30",
        "PARLEY_WORKER_CONCURRENCY": "16",
        "PARLEY_LOG_LEVEL": "INFO",
        # Many workers share this host: a test that reads a worker's metrics sets a port.
        "PARLEY_METRICS_PORT": "0",
    }
    env.update(overrides)
    return env


class ParleyService:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[ParleyProcess] = []
        self.url = f"http://127.0.0.1:{env['PARLEY_PORT']}"

    def start_serve(self, *args: str) -> ParleyProcess:
        proc = self._spawn(["serve", *args], "serve")
        proc.wait_http(f"{self.url}/healthz")
        return proc

    def start_worker(self) -> ParleyProcess:
        proc = self._spawn(["worker"], "worker")
        proc.wait_for_log(" ready.")
        return proc

    def _spawn(self, args: list[str], name: str) -> ParleyProcess:
        log = self.log_dir / f"{name}-{len(self.processes)}.log"
        proc = ParleyProcess(args, self.env, log).start()
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.logs()}" for p in self.processes)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def deliver(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> tuple[int, str]:
        """POST a signed Events API delivery, as Slack does."""
        body = json.dumps(slack_events.envelope(event, event_id=event_id)).encode()
        headers = slack_events.sign(body)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return self.post("/slack/events", body, headers)

    def command(
        self, text: str, *, user: str, channel: str = "C0HELP", response_url: str
    ) -> dict[str, Any]:
        """Type `/parley <text>` as Slack delivers it; returns the (ephemeral) answer."""
        body = slack_events.slash_command(
            text, response_url=response_url, user=user, channel=channel
        )
        status, answer = self.post("/slack/events", body, slack_events.command_headers(body))
        assert status == 200, answer
        reply: dict[str, Any] = json.loads(answer)
        return reply

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `parley <args>` with this service's settings, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "parley.cli", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")
