"""The TGI emulator of the load benchmark, in a process of its own.

    .venv/bin/python -m bench.emulator [--ttft 0.15] [--token-interval 0.02] [--tokens 200]
                                       [--max-batch 128] [--max-concurrent 1024] [--port 0]

It is tests.fakes.tgi.FakeTGI (TGI's wire format, at most `--max-batch` generations decoding
at once, the others queued) with an answer of exactly `--tokens` tokens per request, the last
one <|eot_id|>. The answer names the `msg-NNNNNN` reference of the question it answers, so
that the benchmark can match requests, first tokens and Slack messages.

It runs apart from the process that drives the load so that neither slows the other's clock.
Its first line on stdout is `{"url": ...}`; then it answers one JSON line per command read on
stdin: `stats` (requests, first tokens, peak and sampled generations in flight), `reset`
(forget them) and `quit`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.forward import Forwarder
from tests.fakes.tgi import FakeTGI, last_user_message, split_answer

MARKER = re.compile(r"\bmsg-\d{6}\b")
_FILLER = (" the", " service", " desk", " can", " help", " with", " that", " request", ".")
SAMPLE_INTERVAL = 0.05  # seconds between two samples of the generations in flight


def marker_of(text: str) -> str | None:
    """The last `msg-NNNNNN` reference in `text`, or None."""
    found = MARKER.findall(text)
    return found[-1] if found else None


def answer_for(marker: str, tokens: int) -> str:
    """An answer of exactly `tokens` tokens once FakeTGI appends <|eot_id|>."""
    pieces = split_answer(f"Answer for {marker}:")
    if tokens - 1 < len(pieces):
        raise ValueError(f"answers need at least {len(pieces) + 1} tokens")
    filler = itertools.cycle(_FILLER)
    pieces += [next(filler) for _ in range(tokens - 1 - len(pieces))]
    return "".join(pieces)


def bench_responder(tokens: int) -> Callable[[str], str]:
    def respond(prompt: str) -> str:
        question = last_user_message(prompt) or prompt
        return answer_for(marker_of(question) or "msg-000000", tokens)

    return respond


class Emulator:
    """FakeTGI plus a sampler of its generations in flight."""

    def __init__(self, tgi: FakeTGI) -> None:
        self.tgi = tgi
        self.timeline: list[tuple[float, int, int]] = []  # (monotonic, in flight, queued)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self.tgi.start()
        self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join(timeout=5)
        self.tgi.stop()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.timeline.append((time.monotonic(), self.tgi.in_flight, self.tgi.queued))

    def reset(self) -> None:
        self.tgi.reset()
        self.timeline.clear()

    def stats(self) -> dict[str, Any]:
        first = {f.index: f.monotonic for f in list(self.tgi.first_token_times)}
        generations = []
        for request in self.tgi.generations:
            body = request.body
            prompt = body.get("inputs") if isinstance(body, dict) else None
            question = last_user_message(prompt) if isinstance(prompt, str) else None
            generations.append(
                {
                    "marker": marker_of(question) if question is not None else None,
                    "received": request.received,
                    "first_token": first.get(request.index),
                }
            )
        return {
            "max_in_flight": self.tgi.max_in_flight,
            "in_flight": self.tgi.in_flight,
            "queued": self.tgi.queued,
            "generations": generations,
            "timeline": list(self.timeline),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator", description=__doc__)
    parser.add_argument("--ttft", type=float, default=0.15, help="seconds to the first token")
    parser.add_argument("--token-interval", type=float, default=0.02, help="seconds per token")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    parser.add_argument("--max-batch", type=int, default=128, help="generations decoding at once")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=1024,
        help="admitted requests (TGI --max-concurrent-requests); beyond it 429",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    tgi = FakeTGI(
        responder=bench_responder(args.tokens),
        ttft=args.ttft,
        token_interval=args.token_interval,
        max_batch=args.max_batch,
        max_concurrent_requests=args.max_concurrent,
    )
    emulator = Emulator(tgi)
    emulator.start()
    url = tgi.url
    forward = None
    if args.port:  # for a Parley started elsewhere with a fixed TGI_URL
        forward = Forwarder(args.port, int(tgi.url.rsplit(":", 1)[1]))
        forward.start()
        url = f"http://127.0.0.1:{args.port}"
    print(json.dumps({"url": url}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                reply: dict[str, Any] = emulator.stats()
            elif command == "reset":
                emulator.reset()
                reply = {"ok": True}
            elif command == "quit":
                break
            else:
                reply = {"error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        if forward is not None:
            forward.stop()
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
