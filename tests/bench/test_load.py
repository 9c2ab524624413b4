"""The load benchmark: its arithmetic, its plan of messages, and a short real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import Planner, ThreadRef, main, pct, summary, table
from parley import cli


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert pct(values, 50) == 50.0
    assert pct(values, 99) == 99.0
    assert pct(values, 100) == 100.0
    assert pct([], 50) is None
    assert summary([2.0, 4.0])["mean"] == 3.0


def test_the_planner_numbers_messages_and_continues_distinct_answered_threads() -> None:
    planner = Planner(["printer jammed", "vpn down"])
    first = planner.round(4, follow_ups=0.5)
    assert [p.marker for p in first] == [f"msg-00000{i}" for i in range(1, 5)]
    assert not any(p.follow_up for p in first)  # no answered thread to continue yet
    assert all(p.text.endswith(f"(ref {p.marker})") for p in first)
    planner.answered += [ThreadRef(p.channel, p.thread_ts, p.user) for p in first]
    second = planner.round(10, follow_ups=0.3)
    follow = [p for p in second if p.follow_up]
    assert len(follow) == 3
    assert len({(p.channel, p.thread_ts) for p in follow}) == 3
    assert {(p.channel, p.thread_ts) for p in follow} <= {(p.channel, p.thread_ts) for p in first}
    body = json.loads(follow[0].body)
    assert body["event"]["type"] == "message"
    assert body["event"]["thread_ts"] == follow[0].thread_ts


def test_parley_bench_forwards_to_the_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "usage: parley bench" in capsys.readouterr().out


def test_a_short_run_answers_everything_and_reports_it(redis_url: str, tmp_path: Path) -> None:
    base, _, db = redis_url.rpartition("/")
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(
        [
            "--rates", "20", "--duration", "1", "--warmup", "2", "--workers", "1",
            "--worker-concurrency", "32", "--tokens", "20", "--token-interval", "0.01",
            "--redis-url", base, "--redis-db", db, "--log-dir", str(tmp_path / "logs"),
            "--out", str(out), "--plot", str(png),
        ]
    )  # fmt: skip
    report = json.loads(out.read_text())
    [round_] = report["rounds"]
    assert code == 0, round_["error_detail"]
    assert round_["sent"] == round_["answered"] == 20
    assert round_["errors"] == 0
    assert round_["ack_ms"]["p99"] is not None
    assert round_["baseline_ack_ms"]["n"] == 20
    assert round_["ttft_overhead_ms"]["n"] == 20
    assert round_["cpu_s_per_answer"] > 0
    assert round_["redis"]["bytes_per_turn"] > 0
    assert report["redaction_ms"]["n"] == 20
    assert png.read_bytes().startswith(b"\x89PNG")
    text = table(report)
    assert "first-text overhead" in text
    assert "errors" in text
