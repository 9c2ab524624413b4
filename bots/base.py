"""The seam between chat platforms and the pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from parley.message import InboundMessage

ReplyState = dict[str, Any]
"""What an outbound half needs to resume a reply after a crash (e.g. Slack message ts)."""

SaveReplyState = Callable[[ReplyState], Awaitable[None]]


class IntakeUnavailable(Exception):
    """The queue or its store is down: the platform must be told to retry (HTTP 503)."""


class DeliveryError(Exception):
    """The platform refused the reply. Not retryable (channel gone, bot removed): give up.
    Retryable (rate limits or outages that outlasted the client's own retries): the task is
    run again later and takes over the same reply."""

    @property
    def retryable(self) -> bool:
        return False


class Intake(Protocol):
    """Deduplicates and enqueues a message; owned by workers/, injected into bots/."""

    async def submit(self, message: InboundMessage) -> bool:
        """Enqueue unless already seen. True if enqueued, False for a duplicate.

        Raises IntakeUnavailable when nothing could be recorded, so the platform retries.
        """
        ...

    async def is_active_thread(self, platform: str, tenant: str, channel: str, thread: str) -> bool:
        """True when Parley takes part in this thread, so follow-ups need no mention."""
        ...

    async def reads_channel(self, platform: str, tenant: str, channel: str) -> bool:
        """True when an admin set the channel to answer every top-level message."""
        ...


class Reply(Protocol):
    """One answer being written into a thread."""

    @property
    def message_ids(self) -> list[str]:
        """The platform ids of the messages showing the answer (people rate these)."""
        ...

    async def update(self, text: str) -> None:
        """Show `text` (the whole answer so far). Implementations throttle platform calls.

        `text` usually extends what was shown before; when it does not (a retried
        generation), the implementation replaces what was shown.
        """
        ...

    async def finish(self, text: str) -> None:
        """Show the complete answer and close the reply. Nothing is left pending."""
        ...

    async def fail(self, text: str) -> None:
        """Replace whatever was shown with a short apology and close the reply."""
        ...


class Outbound(Protocol):
    """The outbound half of one platform."""

    async def open_reply(
        self,
        reply_to: Mapping[str, Any],
        resume: ReplyState | None,
        save_state: SaveReplyState,
    ) -> Reply:
        """Start a reply (or take over one a crashed attempt left), showing progress.

        `save_state` persists what is needed to resume; it is called before any text
        that could be duplicated is posted.
        """
        ...

    async def aclose(self) -> None: ...


# -- administration: commands and feedback, run by the ingress ---------------------------


@dataclass(frozen=True, slots=True)
class CommandCall:
    """One admin command as typed, with where and by whom."""

    platform: str
    tenant: str
    channel: str
    user: str
    text: str  # the words after the command itself, e.g. "mode all"
    prefix: str  # how people type the command here: "/parley", "@Parley config"
    direct: bool = False
    thread: str | None = None  # the thread it was typed in, where the platform allows it


class CommandPlatform(Protocol):
    """What commands need from the platform they were typed on."""

    async def is_platform_admin(self, user: str) -> bool:
        """Workspace admin or owner, where the platform has such a role (else False)."""
        ...

    async def resolve_user(self, token: str) -> str | None:
        """The user id behind a typed mention (`<@U123|ann>`), or None."""
        ...

    def parse_thread_link(self, link: str) -> tuple[str, str] | None:
        """(channel, thread) from a message link, or None when it is not one."""
        ...

    def show_user(self, user: str) -> str:
        """How to name a user in a reply (a mention where the platform renders one)."""
        ...


class Commands(Protocol):
    """Runs an admin command; returns the reply as Markdown. Never raises for bad input."""

    async def run(self, call: CommandCall, platform: CommandPlatform) -> str: ...


Rating = Literal["good", "bad"]


class Feedback(Protocol):
    """Records people's ratings of Parley's answers; `answer` is the platform id of one of
    the answer's messages. Both return False when it is not a (known) answer of Parley's
    or nothing changed."""

    async def rate(
        self, platform: str, tenant: str, answer: str, user: str, rating: Rating
    ) -> bool: ...

    async def withdraw(
        self, platform: str, tenant: str, answer: str, user: str, rating: Rating
    ) -> bool:
        """Remove the user's rating, if it is still `rating` (a removed 👍 after a 👎
        leaves the 👎)."""
        ...
