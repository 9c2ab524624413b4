"""The benchmark's TGI emulator: answers of an exact length naming their question, and its
control protocol over stdin/stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.emulator import answer_for, bench_responder, marker_of
from tests.fakes.tgi import render_llama3, split_answer

ROOT = Path(__file__).resolve().parents[2]


def test_answers_have_exactly_the_asked_tokens_and_name_the_question() -> None:
    answer = answer_for("msg-000042", 200)
    assert len(split_answer(answer)) == 199  # FakeTGI adds <|eot_id|> as the 200th
    assert answer.startswith("Answer for msg-000042:")
    assert marker_of(answer) == "msg-000042"
    prompt = render_llama3(
        [
            {"role": "user", "content": "earlier (ref msg-000001)"},
            {"role": "assistant", "content": answer_for("msg-000001", 20)},
            {"role": "user", "content": "printer jammed (ref msg-000002)"},
        ]
    )
    assert bench_responder(30)(prompt) == answer_for("msg-000002", 30)
    assert marker_of("no reference") is None


def test_the_emulator_process_reports_requests_and_first_tokens() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.emulator", "--ttft", "0", "--token-interval", "0",
         "--tokens", "12"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        url = json.loads(proc.stdout.readline())["url"]
        prompt = render_llama3([{"role": "user", "content": "hi (ref msg-000007)"}])
        body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 50}}).encode()
        request = urllib.request.Request(
            f"{url}/generate_stream", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            events = [line for line in resp.read().decode().split("\n\n") if line]
        assert len(events) == 12

        proc.stdin.write("stats\n")
        proc.stdin.flush()
        stats = json.loads(proc.stdout.readline())
        assert stats["max_in_flight"] == 1
        [generation] = stats["generations"]
        assert generation["marker"] == "msg-000007"
        assert generation["first_token"] >= generation["received"]

        proc.stdin.write("reset\nstats\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"ok": True}
        assert json.loads(proc.stdout.readline())["generations"] == []
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
