"""Redaction before anything is stored or sent to the model; restoration for display.

`redact` replaces personal values with per-thread placeholders (<PERSON_1>,
<EMAIL_ADDRESS_2>) kept in the PlaceholderVault. `restore` puts the values back into an
answer, leaving alone placeholders the model invented; for streaming, a placeholder still
being typed out ("…<PERS") is held back so it never flashes on screen. Secrets are never
restored: people see <SECRET_1>, never the password again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import regex
from redis.asyncio import Redis

from parley.settings import Settings
from privacy.analyzer import Finding, analyzer_for
from privacy.recognizers import SECRET
from privacy.vault import PlaceholderVault

NEVER_RESTORED = frozenset({SECRET})
PLACEHOLDER = regex.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")
# The start of a placeholder cut off at the end of streamed text.
_PARTIAL_PLACEHOLDER = regex.compile(r"<(?:[A-Z][A-Z0-9_]{0,48})?$")


class Analyzer(Protocol):
    async def afind(self, text: str) -> list[Finding]: ...


@dataclass(frozen=True, slots=True)
class Redaction:
    text: str
    counts: dict[str, int] = field(default_factory=dict)  # entity type -> values replaced


def split_partial(text: str) -> tuple[str, str]:
    """(text safe to show now, a trailing half placeholder to hold back)."""
    match = _PARTIAL_PLACEHOLDER.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start() :]


def restore_text(text: str, values: Mapping[str, str], *, partial: bool = False) -> str:
    """Put known values back; placeholders the model invented stay as they are. With
    `partial` (streaming), a placeholder cut off at the end is held back."""
    if partial:
        text, _ = split_partial(text)
    return PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)


class StreamRestorer:
    """Restores an answer streamed in chunks: `feed` returns what may be shown now."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self._held = ""

    def feed(self, chunk: str) -> str:
        ready, self._held = split_partial(self._held + chunk)
        return restore_text(ready, self._values)

    def flush(self) -> str:
        """The end of the stream: a held-back fragment was not a placeholder after all."""
        rest, self._held = self._held, ""
        return rest


class Redactor:
    def __init__(self, analyzer: Analyzer, vault: PlaceholderVault) -> None:
        self._analyzer = analyzer
        self._vault = vault

    async def redact(self, thread_key: str, text: str, *, user: str) -> Redaction:
        # Analysis is CPU-bound (ms): it runs off the event loop, on the analyzer's thread.
        findings = await self._analyzer.afind(text)
        placeholders = await self._vault.placeholders(
            thread_key, [(f.entity, text[f.start : f.end]) for f in findings], user=user
        )
        pieces: list[str] = []
        cursor = 0
        for finding, placeholder in zip(findings, placeholders, strict=True):
            pieces += [text[cursor : finding.start], placeholder]
            cursor = finding.end
        pieces.append(text[cursor:])
        return Redaction("".join(pieces), dict(Counter(f.entity for f in findings)))

    async def restore(self, thread_key: str, text: str) -> str:
        """`text` with the values people wrote in place of their placeholders."""
        return restore_text(text, await self._values(thread_key, text))

    async def restore_partial(self, thread_key: str, text: str) -> tuple[str, str]:
        """For streaming: (restored text to show now, the held-back tail to resend)."""
        ready, held = split_partial(text)
        return await self.restore(thread_key, ready), held

    async def restorable(self, thread_key: str) -> dict[str, str]:
        """placeholder -> value, for every value people may see again (no secrets)."""
        return {
            e.placeholder: e.value
            for e in await self._vault.entries(thread_key)
            if e.entity not in NEVER_RESTORED
        }

    async def stream(self, thread_key: str) -> StreamRestorer:
        return StreamRestorer(await self.restorable(thread_key))

    async def forget_thread(self, thread_key: str) -> None:
        await self._vault.forget_thread(thread_key)

    async def forget_user(self, thread_key: str, user: str) -> int:
        """Forgets the values this user wrote in the thread; returns how many."""
        return await self._vault.forget_user(thread_key, user)

    async def _values(self, thread_key: str, text: str) -> dict[str, str]:
        entries = await self._vault.lookup(
            thread_key, (m.group(0) for m in PLACEHOLDER.finditer(text))
        )
        return {p: e.value for p, e in entries.items() if e.entity not in NEVER_RESTORED}


def create_redactor(settings: Settings, redis: Redis) -> Redactor:
    """The redactor for this configuration; SettingsError names PARLEY_ENCRYPTION_KEY when
    it is missing (placeholder maps are never stored unencrypted)."""
    key = settings.require_encryption_key()
    vault = PlaceholderVault(redis, key, ttl=settings.memory_ttl_seconds)
    return Redactor(analyzer_for(settings), vault)
