"""Sampling profiles of running processes with py-spy, and their heaviest frames.

    .venv/bin/python -m bench.profile profile.txt [--top 25]

`record` starts `py-spy record --format raw` (collapsed stacks, one line per distinct stack
with its sample count) on a process for a while; `summarize` reads such a file and lists
the frames that take most samples, inclusive (the frame or anything it called) and self.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH; None when not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, out: Path, *, rate: int = 100) -> subprocess.Popen[bytes] | None:
    """Profile `pid` into `out` (collapsed stacks) until stop(); None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid", str(pid),
            "--rate", str(rate),
            "--format", "raw",
            "--threads",
            "--nonblocking",
            "--output", str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(recorder: subprocess.Popen[bytes]) -> None:
    """End a recording; py-spy writes its file on SIGINT."""
    if recorder.poll() is None:
        recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


@dataclass(frozen=True)
class Frame:
    name: str
    inclusive: float  # share of samples with this frame anywhere on the stack
    self: float  # share of samples with this frame on top


def summarize(path: Path, top: int = 25) -> tuple[int, list[Frame]]:
    """(samples, the `top` frames by inclusive share), idle waits left out of the shares."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        # py-spy --threads starts each stack with "thread (id): name"; not a frame.
        frames = [_short(f) for f in stack.split(";") if not f.startswith("thread (")]
        # Threads parked in a wait (the thread pool, select, a lock) are not work.
        if not frames or _idle(frames[-1]):
            continue
        count = int(count_text)
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return 0, []
    ranked = sorted(inclusive, key=lambda n: inclusive[n], reverse=True)[:top]
    return total, [Frame(n, inclusive[n] / total, own[n] / total) for n in ranked]


_IDLE = (
    "wait (threading.py)",
    "acquire",
    "EpollSelector.select (",
    "select (selectors.py)",
    "_epoll.poll (",
    "poll (",
    "_worker (futures/thread.py)",
    "_wait_for_tstate_lock (",
)


def _idle(frame: str) -> bool:
    return frame.startswith(_IDLE)


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (to/module.py)`, stable across lines."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        samples, frames = summarize(path, args.top)
        print(f"== {path} ({samples} busy samples)")
        print(f"{'incl':>6} {'self':>6}  frame")
        for frame in frames:
            print(f"{frame.inclusive:6.1%} {frame.self:6.1%}  {frame.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
