"""`parley chat`: the console's inbound half and its terminal.

Each line typed is queued like a Slack message (deduplicated, sealed, ordered) and answered
by a `parley worker`; the answer streams back through the session's stream. Lines starting
with `/` are the admin commands (`/parley status`, `/status`, `/persona set …`), plus
`/new` for a new thread and `/quit`.
"""

from __future__ import annotations

import asyncio
import getpass
import secrets
import time
from collections.abc import AsyncIterator
from typing import TextIO

from bots.base import CommandCall, Commands, Intake
from bots.console.transport import CHANNEL, PLATFORM, TENANT, Event, Transport
from bots.shortcodes import render_shortcodes
from parley.message import InboundMessage

PROMPT = "you> "
ANSWER = "parley> "
# After this long without a word from a worker, say what may be wrong (once per question).
HINT_AFTER_SECONDS = 10.0
WAITING_HINT = (
    "(still waiting: is a worker running? Start one with `parley worker` in another terminal, "
    "or use scripts/run, which starts everything)"
)
INTRO = (
    "Parley console: ask anything; /help lists the admin commands, /new starts a new thread, "
    "/quit leaves."
)


class ConsolePlatform:
    """bots.base.CommandPlatform: whoever holds the terminal runs this deployment, so they
    are its admin; there are no message links (`/forget thread` means the current one)."""

    async def is_platform_admin(self, user: str) -> bool:
        return True

    async def resolve_user(self, token: str) -> str | None:
        name = token.removeprefix("@")
        return name or None

    def parse_thread_link(self, link: str) -> tuple[str, str] | None:
        return None

    def show_user(self, user: str) -> str:
        return f"@{user}"


class ConsoleChat:
    def __init__(
        self,
        *,
        intake: Intake,
        commands: Commands,
        transport: Transport,
        out: TextIO,
        answer_timeout: float,
        user: str | None = None,
    ) -> None:
        self._intake = intake
        self._commands = commands
        self._transport = transport
        self._out = out
        self._answer_timeout = answer_timeout
        self.user = user or getpass.getuser() or "console"
        self.session = secrets.token_hex(8)
        self._thread = 1
        self._count = 0
        self._last_id = "0-0"

    @property
    def thread(self) -> str:
        return f"{self.session}-{self._thread}"

    async def run(self, lines: AsyncIterator[str]) -> None:
        self._say(INTRO)
        try:
            async for line in lines:
                text = line.strip()
                if not text:
                    continue
                if text in ("/quit", "/exit"):
                    break
                if text == "/new":
                    self._thread += 1
                    self._say("(a new thread: earlier turns are not remembered here)")
                elif text.startswith("/"):
                    await self.command(text)
                else:
                    await self.ask(text)
        finally:
            await self._transport.close(self.session)

    async def command(self, text: str) -> None:
        words = text.removeprefix("/parley").removeprefix("/").strip()
        call = CommandCall(
            platform=PLATFORM,
            tenant=TENANT,
            channel=CHANNEL,
            user=self.user,
            text=words,
            prefix="/parley",
            direct=True,
            thread=self.thread,
        )
        self._say(render_shortcodes(await self._commands.run(call, ConsolePlatform())))

    async def ask(self, text: str) -> str:
        """Queue one question and print its answer as it streams; returns the answer."""
        self._count += 1
        message_id = f"{self.session}:{self._count}"
        message = InboundMessage(
            platform=PLATFORM,
            tenant=TENANT,
            channel=CHANNEL,
            thread=self.thread,
            user=self.user,
            text=text,
            message_id=message_id,
            reply_to={"session": self.session, "message_id": message_id},
            received_at=time.time(),
            direct=True,
        )
        await self._intake.submit(message)
        return await self._follow(message_id)

    async def _follow(self, message_id: str) -> str:
        shown = ""
        started = time.monotonic()
        hinted = False
        self._out.write(ANSWER)
        self._out.flush()
        while time.monotonic() - started < self._answer_timeout:
            events = await self._transport.receive(self.session, self._last_id, block_ms=1000)
            if not events and not hinted and time.monotonic() - started > HINT_AFTER_SECONDS:
                self._out.write(f"\n{WAITING_HINT}\n{ANSWER}")
                self._out.flush()
                hinted = True
            for stream_id, event in events:
                self._last_id = stream_id
                if event.message_id != message_id:
                    continue  # a late event of an earlier question
                hinted = True  # a worker has it: no hint about starting one
                shown, done = self._show(event, shown)
                if done:
                    return shown
        self._out.write("\n(no answer in time; the question stays queued)\n")
        return shown

    def _show(self, event: Event, shown: str) -> tuple[str, bool]:
        if event.op == "open":
            return shown, False
        if event.op == "append":
            self._out.write(event.text)
            shown += event.text
        elif event.op == "replace":
            # A retried generation starts over: say so rather than leave both versions.
            if shown:
                self._out.write(f"\n{ANSWER}")
            self._out.write(event.text)
            shown = event.text
        elif event.op == "fail":
            if shown:
                self._out.write(f"\n{ANSWER}")
            self._out.write(render_shortcodes(event.text) + "\n")
            self._out.flush()
            return event.text, True
        else:  # final
            self._out.write("\n")
            self._out.flush()
            return shown, True
        self._out.flush()
        return shown, False

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()


async def stdin_lines(prompt: str = PROMPT) -> AsyncIterator[str]:
    """Lines typed at the terminal, read on a thread so the event loop keeps running."""
    while True:
        try:
            line = await asyncio.to_thread(input, prompt)
        except EOFError:
            return
        yield line
