"""Load benchmark: signed Slack deliveries into a real `parley serve` and workers.

    parley bench [--quick] [--rates 50,200,500] [--duration 10] [--out bench.json]
                 [--plot bench.png] [--profile DIR]
    .venv/bin/python -m bench.load ...            (the same)

It starts `parley serve` and two `parley worker` processes (real Celery on Redis, database
13 by default, flushed before and after: give it a database nothing else uses), a TGI
emulator in its own process (tests.fakes.tgi.FakeTGI: first token after 150 ms, a token
every 20 ms, 200-token answers, at most 128 generations decoding at once, the rest queued),
the fake Slack Web API, and a bare slack-bolt app that only acknowledges. For each rate it
sends signed Events API deliveries for `--duration` seconds, open loop, first to the bare
app and then to Parley, waits until every acknowledged message is answered, and reports:

- acknowledgement latency p50/p99, Parley's and the bare app's, and their ratio;
- the most generations in flight at the emulator;
- Parley's overhead on the time to first visible text: (first text in the fake Slack - send)
  - (first token at the emulator - request received there), so that time queued in the
  model server is the model's, not Parley's;
- end-to-end completion time, throughput, CPU seconds per answer (serve and workers, from
  /proc), Redis bytes per thread turn (MEMORY USAGE of the parley:* keys, and used_memory),
  redaction milliseconds per message (measured apart, on one core, on the same texts);
- errors: refused deliveries, messages without exactly one complete answer, stuck streams.

Messages are helpdesk texts with personal data (tests/privacy/data), each tagged with a
`msg-NNNNNN` reference that the emulator's answer repeats; most start a thread, a share
(--follow-ups) continue a thread answered in an earlier round. The model server is the
bottleneck by design at these rates (128 / 4.13 s is about 31 answers a second), so
end-to-end times include queueing for it.

`--target URL` measures a Parley you started yourself instead: start it with
TGI_URL=http://127.0.0.1:<--tgi-port>, SLACK_API_URL=http://127.0.0.1:<--slack-port>/api/,
PARLEY_REDIS_URL=<--redis-url>/<--redis-db>, SLACK_BOT_TOKEN=xoxb-test-bot-token, the
rate limits off and the signing secret given here; `--pids` names its processes for CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench.drive import Plan
from bench.emulator import answer_for, marker_of
from bench.forward import Forwarder
from bench.profile import record as profile_record
from bench.profile import stop as profile_stop
from bench.profile import summarize as profile_summary
from bench.slack import MessageKey, RecordingSlack
from tests.support import slack_events
from tests.support.processes import ParleyProcess, free_port
from tests.support.service import ParleyService

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ROOT / "tests" / "privacy" / "data" / "helpdesk_messages.jsonl"
QUEUE = "parley-bench"
CHANNELS = 50
USERS = 400


@dataclass(frozen=True)
class Targets:
    """The issue's targets on the 2-core development machine."""

    ack_rate: float = 200.0  # events/s at which ...
    ack_p99_ms: float = 50.0  # ... acknowledgement p99 is at most this
    ttft_rate: float = 50.0  # events/s at which the overhead on time to first text is ...
    ttft_p50_ms: float = 25.0
    ttft_p99_ms: float = 100.0
    peak_in_flight: int = 128  # generations at the model server, with two workers
    errors: int = 0


TARGETS = Targets()


@dataclass
class Config:
    rates: list[float]
    duration: float
    warmup: int
    workers: int
    worker_concurrency: int
    follow_ups: float
    ttft: float
    token_interval: float
    tokens: int
    max_batch: int
    max_concurrent: int
    reply_mode: str
    redis_url: str
    redis_db: int
    baseline: bool
    ingress_alone: bool
    target: str | None
    signing_secret: str
    tgi_port: int
    slack_port: int
    pids: list[int]
    log_dir: Path
    profile: Path | None
    out: Path | None
    plot: Path | None

    @property
    def redis_db_url(self) -> str:
        return f"{self.redis_url.rstrip('/')}/{self.redis_db}"

    @property
    def model_capacity(self) -> float:
        """Answers per second the emulator can finish with a full batch."""
        return self.max_batch / (self.ttft + (self.tokens - 1) * self.token_interval)


# -- the messages -------------------------------------------------------------------------


def helpdesk_texts() -> list[str]:
    texts = []
    for line in TEXTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            texts.append(" ".join(str(json.loads(line)["text"]).split()))
    return texts


@dataclass(frozen=True)
class Planned:
    marker: str
    channel: str
    thread_ts: str
    user: str
    follow_up: bool
    text: str
    body: str
    ts: str = ""  # the message's own timestamp (a follow-up's differs from its thread's)

    @property
    def message_key(self) -> str:
        return f"slack:{slack_events.TEAM}:{self.channel}:{self.ts}"


@dataclass(frozen=True)
class ThreadRef:
    channel: str
    thread_ts: str
    user: str


class Planner:
    """Builds the deliveries of each round; numbering and thread pool span the rounds."""

    def __init__(self, texts: list[str]) -> None:
        self._texts = texts
        self._n = 0
        self.answered: list[ThreadRef] = []  # threads whose every turn was answered

    def round(self, count: int, follow_ups: float) -> list[Planned]:
        n_follow = min(int(count * follow_ups), len(self.answered))
        step = count / n_follow if n_follow else math.inf
        pool = list(self.answered)
        planned = []
        for i in range(count):
            self._n += 1
            marker = f"msg-{self._n:06d}"
            text = f"{self._texts[self._n % len(self._texts)]} (ref {marker})"
            ts = f"{int(time.time())}.{self._n:06d}"
            event_id = f"EvBench{self._n:09d}"
            if pool and n_follow and i % step < 1:
                ref = pool.pop(0)
                channel, thread_ts, user = ref.channel, ref.thread_ts, ref.user
                event = slack_events.message(
                    text, channel=channel, user=user, ts=ts, thread_ts=thread_ts
                )
            else:
                channel, thread_ts = f"CB{self._n % CHANNELS:04d}", ts
                user = f"UB{self._n % USERS:05d}"
                event = slack_events.mention(text, channel=channel, user=user, ts=ts)
            body = json.dumps(slack_events.envelope(event, event_id=event_id))
            follow_up = thread_ts != ts
            planned.append(Planned(marker, channel, thread_ts, user, follow_up, text, body, ts))
        return planned


# -- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Emulator:
    """bench.emulator in a subprocess, driven over its stdin/stdout."""

    def __init__(self, cfg: Config, log_dir: Path) -> None:
        self._log = open(log_dir / "emulator.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "bench.emulator",
                "--ttft", str(cfg.ttft),
                "--token-interval", str(cfg.token_interval),
                "--tokens", str(cfg.tokens),
                "--max-batch", str(cfg.max_batch),
                "--max-concurrent", str(cfg.max_concurrent),
                "--port", str(cfg.tgi_port if cfg.target else 0),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        self.url = str(self._read()["url"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the TGI emulator exited; see emulator.log")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(OSError, RuntimeError, ValueError):
                self.command("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def bench_env(cfg: Config, tgi_url: str, slack_url: str) -> dict[str, str]:
    """Parley's production defaults, except what a benchmark on loopback needs."""
    from privacy.crypto import generate_key

    return {
        "PARLEY_ENCRYPTION_KEY": generate_key(),
        "SLACK_BOT_TOKEN": slack_events.BOT_TOKEN,
        "SLACK_SIGNING_SECRET": cfg.signing_secret,
        "SLACK_API_URL": slack_url,
        "TGI_URL": tgi_url,
        "PARLEY_REDIS_URL": cfg.redis_db_url,
        "PARLEY_HOST": "127.0.0.1",
        "PARLEY_PORT": str(free_port()),
        "PARLEY_QUEUE": QUEUE,
        "PARLEY_WORKER_CONCURRENCY": str(cfg.worker_concurrency),
        "PARLEY_SLACK_REPLY_MODE": cfg.reply_mode,
        # A few hundred simulated people asking many times a minute: limits off.
        "PARLEY_RATE_LIMIT_USER_PER_MINUTE": "0",
        "PARLEY_RATE_LIMIT_CHANNEL_PER_MINUTE": "0",
        "PARLEY_CONTEXT_TOKENS": "8192",
        "PARLEY_METRICS_PORT": "0",  # several workers on one host
        "PARLEY_LOG_FORMAT": "json",  # the bench reads queue waits from the workers' logs
    }


@dataclass
class Stack:
    cfg: Config
    emulator: Emulator
    slack: RecordingSlack
    parley_url: str
    pids: dict[str, int]  # name -> pid of Parley's processes
    service: ParleyService | None
    baseline_url: str | None
    baseline_pid: int | None


@contextmanager
def running(cfg: Config) -> Iterator[Stack]:
    with ExitStack() as stack:
        emulator = Emulator(cfg, cfg.log_dir)
        stack.callback(emulator.stop)
        slack = RecordingSlack()
        stack.enter_context(slack)
        slack_url = slack.url
        if cfg.target:
            forward = Forwarder(cfg.slack_port, int(slack.url.split(":")[2].split("/")[0]))
            forward.start()
            stack.callback(forward.stop)
            slack_url = f"{forward.url}/api/"
        env = bench_env(cfg, emulator.url, slack_url)
        service = None
        pids: dict[str, int] = {}
        if cfg.target:
            parley_url = cfg.target.rstrip("/")
            pids = {f"pid-{pid}": pid for pid in cfg.pids}
        else:
            service = ParleyService(env, cfg.log_dir)
            stack.callback(service.stop)
            serve = service.start_serve()
            pids["serve"] = _pid(serve)
            for i in range(cfg.workers):
                pids[f"worker-{i}"] = _pid(service.start_worker())
            parley_url = service.url
        baseline_url = baseline_pid = None
        if cfg.baseline:
            port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-m", "bench.bare_bolt", "--port", str(port)],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            )
            stack.callback(_terminate, bare)
            assert bare.stdout is not None
            if bare.stdout.readline().strip() != b"listening":
                raise RuntimeError("the bare slack-bolt app did not start")
            baseline_url, baseline_pid = f"http://127.0.0.1:{port}", bare.pid
        yield Stack(cfg, emulator, slack, parley_url, pids, service, baseline_url, baseline_pid)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pid(proc: ParleyProcess) -> int:
    assert proc.proc is not None
    return proc.proc.pid


def drive(url: str, secret: str, rate: float, planned: list[Planned]) -> list[tuple[float, ...]]:
    """Run bench.drive in its own process; returns (sent, acked, status) per delivery."""
    plan = Plan(f"{url}/slack/events", secret, rate, [p.body for p in planned])
    done = subprocess.run(
        [sys.executable, "-m", "bench.drive"],
        input=json.dumps(plan.to_json()).encode(),
        capture_output=True,
        cwd=ROOT,
        check=True,
    )
    results: list[list[float]] = json.loads(done.stdout)["results"]
    return [tuple(r) for r in results]


# -- measuring ----------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
        "mean": statistics.fmean(values) if values else None,
    }


def redis_bytes(client: redis.Redis) -> tuple[dict[str, int], int]:
    """MEMORY USAGE of Parley's keys by kind (parley:<kind>:...), and INFO used_memory."""
    kinds: dict[str, int] = {}
    keys = list(client.scan_iter("parley:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    for key, size in zip(keys, pipe.execute(), strict=True):
        kind = key.decode().split(":")[1] if isinstance(key, bytes) else str(key).split(":")[1]
        kinds[kind] = kinds.get(kind, 0) + int(size or 0)
    used = int(client.info("memory")["used_memory"])
    return kinds, used


Ack = tuple[float, ...]  # sent, acknowledged (monotonic seconds), HTTP status


@dataclass
class Probe:
    """Acknowledgements measured apart, and the CPU seconds the server spent on them."""

    acks: list[Ack]
    cpu_s: float


@dataclass
class Round:
    rate: float
    planned: list[Planned]
    acks: list[Ack]
    baseline: Probe | None = None  # the bare slack-bolt app
    alone: Probe | None = None  # Parley's ingress with the workers paused


def wait_answered(stack: Stack, planned: list[Planned], known: set[MessageKey]) -> float:
    """Until every acknowledged message of `planned` has a complete answer and no stream is
    open, or no progress for a minute; returns seconds waited."""
    threads = {(p.channel, p.thread_ts) for p in planned}
    started = last_progress = time.monotonic()
    expected, last_count = len(planned), -1
    budget = max(60.0, 2.0 * expected / stack.cfg.model_capacity + 30.0)
    while time.monotonic() - started < budget:
        _, completed = stack.slack.timings()
        count = sum(
            1 for key in completed if key not in known and stack.slack.thread_of.get(key) in threads
        )
        if count >= expected and not stack.slack.open_streams():
            break
        if count != last_count:
            last_count, last_progress = count, time.monotonic()
        elif time.monotonic() - last_progress > 60:
            break
        time.sleep(0.25)
    time.sleep(1.0)  # a late duplicate would show up now
    return time.monotonic() - started


def _acked(planned: list[Planned], acks: list[Ack]) -> list[Planned]:
    return [p for p, a in zip(planned, acks, strict=True) if int(a[2]) == 200]


def probe(url: str, pid: int | None, cfg: Config, rate: float, planned: list[Planned]) -> Probe:
    before = cpu_seconds(pid) if pid else 0.0
    acks = drive(url, cfg.signing_secret, rate, planned)
    return Probe(acks, (cpu_seconds(pid) - before) if pid else 0.0)


def ingress_alone(stack: Stack, client: redis.Redis, rate: float, planned: list[Planned]) -> Probe:
    """Parley's acknowledgements with its workers stopped (SIGSTOP), so that they do not
    compete for the CPU; the tasks queued meanwhile are deleted before the workers go on."""
    workers = [pid for name, pid in stack.pids.items() if name.startswith("worker")]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        return probe(stack.parley_url, stack.pids.get("serve"), stack.cfg, rate, planned)
    finally:
        queued = list(client.scan_iter(f"{QUEUE}*"))
        if queued:
            client.delete(*queued)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


def queue_waits(log_dir: Path) -> dict[str, float]:
    """message key -> seconds it waited before a worker began answering it (in the broker,
    then for its lease and its thread's turn), from the workers' JSON logs."""
    waits: dict[str, float] = {}
    for path in log_dir.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"queued_seconds"' not in line:
                continue
            with suppress(ValueError):
                record = json.loads(line)
                waits[str(record["message_key"])] = float(record["queued_seconds"])
    return waits


def count_errors_in_logs(log_dir: Path, offsets: dict[str, int]) -> tuple[int, dict[str, int]]:
    """ERROR lines written to the process logs since `offsets`; returns the new offsets."""
    errors = 0
    new: dict[str, int] = {}
    for path in sorted(log_dir.glob("*.log")):
        data = path.read_bytes()
        start = offsets.get(path.name, 0)
        errors += sum(
            1
            for line in data[start:].splitlines()
            if b" ERROR " in line or b'"level": "ERROR"' in line
        )
        new[path.name] = len(data)
    return errors, new


def analyse(
    stack: Stack,
    rnd: Round,
    emu: dict[str, Any],
    known: set[tuple[str, str]],
    cpu: dict[str, float],
    redis_delta: dict[str, Any],
    log_errors: int,
    waited: float,
) -> dict[str, Any]:
    cfg = stack.cfg
    planned = rnd.planned
    acked = [(p, a) for p, a in zip(planned, rnd.acks, strict=True) if int(a[2]) == 200]
    refused = len(planned) - len(acked)
    first_text, completed = stack.slack.timings()
    threads = stack.slack.replies_by_thread()
    by_marker: dict[str, list[dict[str, Any]]] = {}
    failure_replies = 0
    touched = {(p.channel, p.thread_ts) for p in planned}
    for thread in touched:
        for reply in threads.get(thread, []):
            key = (thread[0], str(reply["ts"]))
            if key in known:
                continue
            known.add(key)
            marker = marker_of(str(reply["text"]))
            if marker is None:
                failure_replies += 1
            else:
                by_marker.setdefault(marker, []).append(reply)
    gens: dict[str, tuple[float, float]] = {}
    for gen in emu["generations"]:
        if gen["marker"] and gen["first_token"] is not None:
            gens[gen["marker"]] = (gen["received"], gen["first_token"])
    unanswered = duplicates = incomplete = 0
    overhead, visible, model_ttft, e2e = [], [], [], []
    before_model, after_token, waited_s, own, decode = [], [], [], [], []
    waits = queue_waits(stack.cfg.log_dir)
    last_done = 0.0
    for p, (sent, _ack, _status) in acked:
        replies = by_marker.get(p.marker, [])
        if not replies:
            unanswered += 1
            continue
        duplicates += len(replies) - 1
        reply = replies[0]
        if reply["streaming"] or str(reply["text"]).strip() != answer_for(p.marker, cfg.tokens):
            incomplete += 1
            continue
        key = (p.channel, str(reply["ts"]))
        if key in completed:
            e2e.append(completed[key] - sent)
            last_done = max(last_done, completed[key])
        if key in first_text and p.marker in gens:
            received, first_token = gens[p.marker]
            visible.append(first_text[key] - sent)
            model_ttft.append(first_token - received)
            overhead.append((first_text[key] - sent) - (first_token - received))
            before_model.append(received - sent)
            after_token.append(first_text[key] - first_token)
            if p.message_key in waits:
                waited_s.append(waits[p.message_key])
                own.append(overhead[-1] - waits[p.message_key])
        if key in completed and p.marker in gens:
            decode.append(completed[key] - gens[p.marker][1])
    answered = len(e2e)
    open_streams = len(stack.slack.open_streams())
    errors = refused + unanswered + duplicates + incomplete + failure_replies + open_streams
    first_sent = min((a[0] for a in rnd.acks), default=0.0)
    last_sent = max((a[0] for a in rnd.acks), default=0.0)
    ms = [1000 * (a[1] - a[0]) for _, a in acked]
    base_ms = _latencies_ms(rnd.baseline)
    alone_ms = _latencies_ms(rnd.alone)
    parley_cpu = sum(v for k, v in cpu.items() if k in stack.pids)
    result: dict[str, Any] = {
        "rate": rnd.rate,
        "sent": len(planned),
        "follow_ups": sum(p.follow_up for p in planned),
        "achieved_rate": (len(planned) - 1) / (last_sent - first_sent)
        if last_sent > first_sent
        else None,
        "ack_ms": summary(ms),
        "baseline_ack_ms": summary(base_ms) if rnd.baseline else None,
        "ingress_alone_ack_ms": summary(alone_ms) if rnd.alone else None,
        "baseline_cpu_ms_per_event": _cpu_ms(rnd.baseline),
        "ingress_alone_cpu_ms_per_event": _cpu_ms(rnd.alone),
        "probe_refused": {
            "baseline": _refused(rnd.baseline),
            "ingress_alone": _refused(rnd.alone),
        },
        "peak_in_flight": emu["max_in_flight"],
        "ttft_overhead_ms": summary([1000 * v for v in overhead]),
        "time_to_first_text_ms": summary([1000 * v for v in visible]),
        "model_ttft_ms": summary([1000 * v for v in model_ttft]),
        "before_model_ms": summary([1000 * v for v in before_model]),
        "after_first_token_ms": summary([1000 * v for v in after_token]),
        "queued_ms": summary([1000 * v for v in waited_s]),
        "own_overhead_ms": summary([1000 * v for v in own]),
        "model_decode_s": summary(decode),
        "end_to_end_s": summary(e2e),
        "answered": answered,
        "throughput_per_s": answered / (last_done - first_sent) if last_done > first_sent else None,
        "cpu_s": cpu,
        "cpu_s_per_answer": parley_cpu / answered if answered else None,
        "redis": redis_delta,
        "errors": errors,
        "error_detail": {
            "refused": refused,
            "unanswered": unanswered,
            "duplicates": duplicates,
            "incomplete": incomplete,
            "failure_replies": failure_replies,
            "open_streams": open_streams,
            "error_log_lines": log_errors,
        },
        "drain_wait_s": waited,
        "timeline": emu["timeline"],
        "values": {
            "ack_ms": ms,
            "baseline_ack_ms": base_ms,
            "ttft_overhead_ms": [1000 * v for v in overhead],
            "ingress_alone_ack_ms": alone_ms,
            "end_to_end_s": e2e,
        },
    }
    if alone_ms and base_ms:
        result["ack_ratio"] = {
            "p50": (pct(alone_ms, 50) or 0) / (pct(base_ms, 50) or 1),
            "p99": (pct(alone_ms, 99) or 0) / (pct(base_ms, 99) or 1),
        }
    return result


def _latencies_ms(found: Probe | None) -> list[float]:
    return [1000 * (a[1] - a[0]) for a in found.acks if int(a[2]) == 200] if found else []


def _cpu_ms(found: Probe | None) -> float | None:
    return 1000 * found.cpu_s / len(found.acks) if found and found.acks and found.cpu_s else None


def _refused(found: Probe | None) -> int:
    return sum(1 for a in found.acks if int(a[2]) != 200) if found else 0


def redaction_ms(texts: list[str]) -> dict[str, Any]:
    """The analysis behind each redaction, one message at a time on this thread."""
    from privacy.analyzer import get_analyzer

    analyzer = get_analyzer()
    for text in texts[:10]:
        analyzer.find(text)  # warm up
    times = []
    for text in texts:
        started = time.perf_counter()
        analyzer.find(text)
        times.append(1000 * (time.perf_counter() - started))
    return summary(times)


def measure(
    stack: Stack,
    client: redis.Redis,
    planner: Planner,
    rate: float,
    known: set[MessageKey],
    offsets: dict[str, int],
) -> dict[str, Any]:
    """One rate: the bare app, Parley's ingress alone, then Parley answering; the figures."""
    cfg = stack.cfg
    count = max(1, round(rate * cfg.duration))
    print(f"bench: {count} events at {rate:g}/s ...", file=sys.stderr, flush=True)
    baseline = alone = None
    if stack.baseline_url is not None:
        baseline = probe(stack.baseline_url, stack.baseline_pid, cfg, rate, planner.round(count, 0))
    if stack.service is not None and cfg.ingress_alone:
        recorder = None
        if cfg.profile is not None and "serve" in stack.pids:
            cfg.profile.mkdir(parents=True, exist_ok=True)
            recorder = profile_record(stack.pids["serve"], cfg.profile / f"{rate:g}-alone.txt")
        alone = ingress_alone(stack, client, rate, planner.round(count, 0))
        if recorder is not None:
            profile_stop(recorder)
        time.sleep(1.0)  # a task a worker had taken just before it stopped is answered now
        known |= set(stack.slack.timings()[1])
    planned = planner.round(count, cfg.follow_ups)
    stack.emulator.command("reset")
    bytes_before, used_before = redis_bytes(client)
    cpu_pids = {**stack.pids, "emulator": stack.emulator.proc.pid, "bench": os.getpid()}
    cpu_before = {name: cpu_seconds(pid) for name, pid in cpu_pids.items()}
    recorders: list[tuple[Path, subprocess.Popen[bytes]]] = []
    if cfg.profile is not None:
        cfg.profile.mkdir(parents=True, exist_ok=True)
        for name, pid in stack.pids.items():
            out = cfg.profile / f"{rate:g}-{name}.txt"
            if (recorder := profile_record(pid, out)) is not None:
                recorders.append((out, recorder))
    acks = drive(stack.parley_url, cfg.signing_secret, rate, planned)
    waited = wait_answered(stack, _acked(planned, acks), known)
    for _, recorder in recorders:
        profile_stop(recorder)
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in cpu_pids.items()}
    bytes_after, used_after = redis_bytes(client)
    emu = stack.emulator.command("stats")
    log_errors, new_offsets = count_errors_in_logs(cfg.log_dir, offsets)
    offsets.update(new_offsets)
    turns = len(_acked(planned, acks)) or 1
    kinds = sorted(set(bytes_before) | set(bytes_after))
    delta = {k: bytes_after.get(k, 0) - bytes_before.get(k, 0) for k in kinds}
    redis_delta = {
        "bytes_per_turn": sum(delta.values()) / turns,
        "by_kind_per_turn": {k: v / turns for k, v in delta.items()},
        "used_memory_per_turn": (used_after - used_before) / turns,
    }
    rnd = Round(rate, planned, acks, baseline, alone)
    result = analyse(stack, rnd, emu, known, cpu, redis_delta, log_errors, waited)
    result["profiles"] = [str(out) for out, _ in recorders]
    result["_texts"] = [p.text for p in planned]
    planner.answered += [
        ThreadRef(p.channel, p.thread_ts, p.user) for p in planned if not p.follow_up
    ]
    return result


def run(cfg: Config) -> dict[str, Any]:
    client = redis.Redis.from_url(cfg.redis_db_url)
    client.flushdb()
    planner = Planner(helpdesk_texts())
    rounds: list[dict[str, Any]] = []
    texts: list[str] = []
    with running(cfg) as stack:
        known: set[tuple[str, str]] = set()
        offsets: dict[str, int] = {}
        # Warm-up: every worker loads its models; these threads take the first follow-ups.
        warm = planner.round(cfg.warmup, 0.0)
        acks = drive(stack.parley_url, cfg.signing_secret, 10.0, warm)
        wait_answered(stack, _acked(warm, acks), known)
        known |= set(stack.slack.timings()[1])
        planner.answered += [ThreadRef(p.channel, p.thread_ts, p.user) for p in warm]
        _, offsets = count_errors_in_logs(cfg.log_dir, offsets)
        for rate in cfg.rates:
            result = measure(stack, client, planner, rate, known, offsets)
            texts += result.pop("_texts")
            rounds.append(result)
            print(
                f"bench: {rate:g}/s done: {result['answered']} answered, {result['errors']} errors",
                file=sys.stderr,
                flush=True,
            )
    client.flushdb()
    client.close()
    return {
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(cfg).items()
            if k not in ("signing_secret",)
        },
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "targets": asdict(TARGETS),
        "rounds": rounds,
        "redaction_ms": redaction_ms(sorted(set(texts))) if texts else None,
    }


# -- reporting ----------------------------------------------------------------------------


def _pair(s: dict[str, Any] | None, scale: float = 1.0, digits: int = 1) -> str:
    if s is None or s.get("p50") is None:
        return "-"
    return f"{s['p50'] * scale:.{digits}f} / {s['p99'] * scale:.{digits}f}"


def _cpu_pair(r: dict[str, Any]) -> str:
    ours, bare = r["ingress_alone_cpu_ms_per_event"], r["baseline_cpu_ms_per_event"]
    if ours is None and bare is None:
        return "-"
    return f"{ours or 0:.2f} ({bare or 0:.2f})"


def _check(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISSED")


def table(report: dict[str, Any]) -> str:
    rounds = report["rounds"]
    cfg = report["config"]
    heads = [f"{r['rate']:g} ev/s" for r in rounds]

    def at(rate: float) -> dict[str, Any] | None:
        return next((r for r in rounds if r["rate"] == rate), None)

    t = TARGETS
    ack_rate, ack_max = t.ack_rate, t.ack_p99_ms
    ttft_rate, ttft_p50, ttft_p99 = t.ttft_rate, t.ttft_p50_ms, t.ttft_p99_ms
    r_ack, r_ttft = at(ack_rate), at(ttft_rate)
    ack_ok = None if r_ack is None else (r_ack["ack_ms"]["p99"] or math.inf) <= ack_max
    ttft_ok = None
    if r_ttft is not None and r_ttft["ttft_overhead_ms"]["p50"] is not None:
        ttft_ok = (
            r_ttft["ttft_overhead_ms"]["p50"] <= ttft_p50
            and r_ttft["ttft_overhead_ms"]["p99"] <= ttft_p99
        )
    peak_ok = any(r["peak_in_flight"] >= t.peak_in_flight for r in rounds)
    errors_ok = all(r["errors"] == 0 for r in rounds)
    red = report.get("redaction_ms")
    rows: list[tuple[str, list[str], str]] = [
        (
            "events sent (achieved ev/s)",
            [f"{r['sent']} ({r['achieved_rate'] or 0:.0f})" for r in rounds],
            "",
        ),
        ("ack p50 / p99 ms, under load", [_pair(r["ack_ms"]) for r in rounds],
         f"p99 <= {ack_max:g} at {ack_rate:g}/s{_check(ack_ok)}"),
        ("ack p50 / p99 ms, ingress alone", [_pair(r["ingress_alone_ack_ms"]) for r in rounds],
         "workers paused"),
        ("bare bolt ack p50 / p99 ms", [_pair(r["baseline_ack_ms"]) for r in rounds], ""),
        ("ingress / bare bolt, p50 / p99",
         [f"{r['ack_ratio']['p50']:.1f}x / {r['ack_ratio']['p99']:.1f}x" if "ack_ratio" in r
          else "-" for r in rounds], ""),
        ("ingress CPU ms/event (bare bolt)",
         [_cpu_pair(r) for r in rounds], ""),
        ("peak generations in flight", [str(r["peak_in_flight"]) for r in rounds],
         f"{t.peak_in_flight}{_check(peak_ok)}"),
        ("first-text overhead p50 / p99 ms", [_pair(r["ttft_overhead_ms"]) for r in rounds],
         f"<= {ttft_p50:g} / {ttft_p99:g} at {ttft_rate:g}/s{_check(ttft_ok)}"),
        ("  send -> model request", [_pair(r["before_model_ms"]) for r in rounds], ""),
        ("  of it queued (broker, thread)", [_pair(r["queued_ms"]) for r in rounds], ""),
        ("  of it not queued", [_pair(r["own_overhead_ms"]) for r in rounds], ""),
        ("  first token -> text in Slack", [_pair(r["after_first_token_ms"]) for r in rounds],
         ""),
        ("time to first text p50 / p99 ms", [_pair(r["time_to_first_text_ms"]) for r in rounds],
         ""),
        ("model TTFT incl. its queue p50/p99", [_pair(r["model_ttft_ms"]) for r in rounds], ""),
        ("model first token -> done p50/p99 s", [_pair(r["model_decode_s"]) for r in rounds],
         f"nominal {cfg_decode(cfg):.2f}"),
        ("end-to-end p50 / p99 s", [_pair(r["end_to_end_s"]) for r in rounds], ""),
        ("throughput answers/s",
         [f"{r['throughput_per_s']:.1f}" if r["throughput_per_s"] else "-" for r in rounds],
         f"model max {cfg_capacity(cfg):.1f}"),
        ("CPU s per answer (serve+workers)",
         [f"{r['cpu_s_per_answer']:.3f}" if r["cpu_s_per_answer"] else "-" for r in rounds], ""),
        ("Redis bytes per thread turn",
         [f"{r['redis']['bytes_per_turn']:.0f}" for r in rounds], ""),
        ("redaction ms/message p50 / p99",
         [_pair(red) for _ in rounds] if red else ["-" for _ in rounds], "measured apart, 1 core"),
        ("errors", [str(r["errors"]) for r in rounds], f"0{_check(errors_ok)}"),
    ]  # fmt: skip
    width = max(len(label) for label, _, _ in rows) + 2
    col = max(16, *(len(v) + 2 for _, values, _ in rows for v in values))
    lines = [
        "Parley load benchmark: "
        + (
            f"Parley at {cfg['target']}, "
            if cfg["target"]
            else f"{cfg['workers']} workers x {cfg['worker_concurrency']}, "
        )
        + f"TGI emulator TTFT {cfg['ttft'] * 1000:.0f} ms, {cfg['token_interval'] * 1000:.0f} "
        f"ms/token, {cfg['tokens']} tokens, batch <= {cfg['max_batch']}; "
        f"{report['machine']['cpus']} CPUs, {cfg['duration']:g} s per rate",
        "".ljust(width) + "".join(h.rjust(col) for h in heads) + "   target",
    ]
    for label, values, target in rows:
        lines.append(label.ljust(width) + "".join(v.rjust(col) for v in values) + f"   {target}")
    details = [
        f"  {r['rate']:g}/s: " + ", ".join(f"{k} {v}" for k, v in r["error_detail"].items() if v)
        for r in rounds
        if any(r["error_detail"].values())
    ]
    if details:
        lines += ["error detail:", *details]
    return "\n".join(lines)


def cfg_decode(cfg: dict[str, Any]) -> float:
    return float((cfg["tokens"] - 1) * cfg["token_interval"])


def cfg_capacity(cfg: dict[str, Any]) -> float:
    step: float = cfg["ttft"] + (cfg["tokens"] - 1) * cfg["token_interval"]
    return float(cfg["max_batch"]) / step


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    rates = [r["rate"] for r in rounds]
    for key, label, style in (
        ("ack_ms", "Parley under load", "o-"),
        ("ingress_alone_ack_ms", "Parley, workers paused", "^-."),
        ("baseline_ack_ms", "bare slack-bolt", "s--"),
    ):
        for q, alpha in (("p50", 1.0), ("p99", 0.5)):
            values = [(r[key] or {}).get(q) for r in rounds]
            if any(v is not None for v in values):
                ax.plot(rates, values, style, alpha=alpha, label=f"{label} {q}")
    ax.axhline(
        TARGETS.ack_p99_ms,
        color="red",
        linestyle=":",
        label=f"target p99 at {TARGETS.ack_rate:g}/s",
    )
    ax.set(xlabel="events/s", ylabel="ms", title="acknowledgement latency", yscale="log")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for r in rounds:
        t0 = r["timeline"][0][0] if r["timeline"] else 0.0
        ax.plot(
            [t - t0 for t, _, _ in r["timeline"]],
            [n for _, n, _ in r["timeline"]],
            label=f"{r['rate']:g}/s",
        )
    ax.axhline(TARGETS.peak_in_flight, color="red", linestyle=":")
    ax.set(xlabel="s", ylabel="generations", title="generations in flight at the emulator")
    ax.legend(fontsize=7)
    for ax, key, title, unit in (
        (axes[1][0], "ttft_overhead_ms", "Parley's overhead on time to first text", "ms"),
        (axes[1][1], "end_to_end_s", "end-to-end completion", "s"),
    ):
        for r in rounds:
            values = r["values"][key]
            if values:
                ordered = sorted(values)
                ax.plot(
                    ordered,
                    [(i + 1) / len(ordered) for i in range(len(ordered))],
                    label=f"{r['rate']:g}/s",
                )
        ax.set(xlabel=unit, ylabel="fraction of messages", title=title, xscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- command line -------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="parley bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50/s for 2 s")
    parser.add_argument("--rates", default="50,200,500", help="events per second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    parser.add_argument("--warmup", type=int, default=32, help="messages answered before")
    parser.add_argument("--workers", type=int, default=2, help="`parley worker` processes")
    parser.add_argument("--worker-concurrency", type=int, default=128)
    parser.add_argument(
        "--follow-ups", type=float, default=0.1, help="share of messages that continue a thread"
    )
    parser.add_argument("--ttft", type=float, default=0.15, help="emulator: seconds to 1st token")
    parser.add_argument("--token-interval", type=float, default=0.02, help="emulator: s/token")
    parser.add_argument("--tokens", type=int, default=200, help="emulator: tokens per answer")
    parser.add_argument("--max-batch", type=int, default=128, help="emulator: batch size")
    parser.add_argument(
        "--max-concurrent", type=int, default=1024, help="emulator: admitted requests"
    )
    parser.add_argument("--reply-mode", choices=["stream", "update"], default="stream")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--redis-db", type=int, default=13, help="a database of its own, flushed (default 13)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare bolt app")
    parser.add_argument(
        "--no-ingress-alone",
        action="store_true",
        help="skip measuring Parley's acknowledgements with its workers paused",
    )
    parser.add_argument("--target", help="URL of a Parley started by you (see above)")
    parser.add_argument(
        "--signing-secret",
        default=os.environ.get("SLACK_SIGNING_SECRET", slack_events.SIGNING_SECRET),
        help="with --target: its SLACK_SIGNING_SECRET",
    )
    parser.add_argument("--tgi-port", type=int, default=18080, help="with --target")
    parser.add_argument("--slack-port", type=int, default=18081, help="with --target")
    parser.add_argument("--pids", default="", help="with --target: its process ids, for CPU")
    parser.add_argument("--log-dir", type=Path, help="process logs (default: a temporary dir)")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of each round, here")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG latency plot here")
    args = parser.parse_args(argv)
    rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    duration, warmup = args.duration, args.warmup
    if args.quick:
        rates, duration, warmup = [50.0], 2.0, 8
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="parley-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return Config(
        rates=rates,
        duration=duration,
        warmup=warmup,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency,
        follow_ups=args.follow_ups,
        ttft=args.ttft,
        token_interval=args.token_interval,
        tokens=args.tokens,
        max_batch=args.max_batch,
        max_concurrent=args.max_concurrent,
        reply_mode=args.reply_mode,
        redis_url=args.redis_url,
        redis_db=args.redis_db,
        baseline=not args.no_baseline,
        ingress_alone=not args.no_ingress_alone,
        target=args.target,
        signing_secret=args.signing_secret,
        tgi_port=args.tgi_port,
        slack_port=args.slack_port,
        pids=[int(p) for p in str(args.pids).split(",") if p.strip()],
        log_dir=log_dir,
        profile=args.profile,
        out=args.out,
        plot=args.plot,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse(argv)
    print(f"bench: process logs in {cfg.log_dir}", file=sys.stderr)
    report = run(cfg)
    print(table(report))
    if cfg.profile is not None:
        for r in report["rounds"]:
            for path in r.get("profiles", []):
                samples, frames = profile_summary(Path(path), top=12)
                print(f"\nprofile {path} ({samples} busy samples), inclusive / self:")
                for frame in frames:
                    print(f"  {frame.inclusive:6.1%} {frame.self:6.1%}  {frame.name}")
    if cfg.out is not None:
        cfg.out.write_text(json.dumps(report, indent=1, default=str))
        print(f"figures written to {cfg.out}")
    if cfg.plot is not None:
        plot(report, cfg.plot)
        print(f"plot written to {cfg.plot}")
    return 0 if all(r["errors"] == 0 for r in report["rounds"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
