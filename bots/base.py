"""The seam between chat platforms and the pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

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


class Reply(Protocol):
    """One answer being written into a thread."""

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
