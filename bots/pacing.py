"""Pacing the writes of one reply: the latest text asked for is written at most once per
interval by a background task, so generation never waits on the chat platform.

Shared by every outbound half (Slack edits and appends, Teams stream chunks and updates).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Pacer:
    def __init__(
        self,
        write: Callable[[str], Awaitable[None]],
        interval: Callable[[], float],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self._write = write  # writes a text; it must set `flushed` when done
        self._interval = interval
        self._tasks = tasks  # keeps pump tasks referenced until they end
        self.want = ""  # the latest text asked for
        self.flushed = ""  # the text the reply shows
        self.closing = False
        self._next_at = 0.0
        self._pump: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._error: Exception | None = None

    def request(self, text: str) -> None:
        """Ask for `text` to be shown; raises the error of a failed background write."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self.closing:
            return
        self.want = text
        if (self._pump is None or self._pump.done()) and self.want != self.flushed:
            self._pump = asyncio.create_task(self._run())
            self._tasks.add(self._pump)
            self._pump.add_done_callback(self._tasks.discard)

    def wrote(self) -> None:
        """A write just went out: the next may go one interval from now."""
        self._next_at = asyncio.get_running_loop().time() + self._interval()

    async def quiesce(self) -> None:
        """Stop pacing; a write already begun is completed, not cut in half."""
        self.closing = True
        self._hurry.set()
        if self._pump is not None:
            await asyncio.wait([self._pump])
        self._error = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.closing and self.want != self.flushed:
                delay = self._next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), delay)
                    continue
                await self._write(self.want)
        except Exception as exc:  # surfaced by the next request()
            self._error = exc
