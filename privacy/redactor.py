"""Redaction before anything is stored or sent to the model, and restoration for display.

`redact` replaces personal values with per-thread placeholders (<PERSON_1>, <EMAIL_ADDRESS_2>)
kept in the PlaceholderVault; `restore_text` puts the values back into an answer, holding
back a placeholder that is still being streamed in. Secrets are never restored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import regex
from presidio_analyzer import AnalyzerEngine, RecognizerResult
from redis.asyncio import Redis

from parley.settings import Settings
from privacy.analyzer import entities, get_analyzer
from privacy.crypto import Sealer
from privacy.vault import PlaceholderVault, lookup_key

log = logging.getLogger(__name__)

SCORE_THRESHOLD = 0.5
NEVER_RESTORED = frozenset({"SECRET"})
# Overlapping findings: the more specific entity wins (a URL's credentials over the e-mail
# that seems to follow them; a card number over a phone number).
_PRIORITY = {
    "SECRET": 3,
    "CREDIT_CARD": 2,
    "IBAN_CODE": 2,
    "ES_NIF": 2,
    "ES_NIE": 2,
    "US_SSN": 2,
    "EMAIL_ADDRESS": 1,
}
_PLACEHOLDER = regex.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
_PARTIAL_PLACEHOLDER = regex.compile(r"<[A-Z0-9_]{0,40}$")
# spaCy sometimes tags commands or URLs as people: a name has no digits, slashes or @.
_NOT_A_NAME = regex.compile(r"[\d/@:\\=<>{}\[\]|]")


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: dict[str, int] = field(default_factory=dict)  # entity type -> values replaced


class Redactor:
    def __init__(
        self, analyzer: AnalyzerEngine, entity_types: Sequence[str], vault: PlaceholderVault
    ) -> None:
        self._analyzer = analyzer
        self._entities = list(entity_types)
        self._vault = vault

    def find(self, text: str) -> list[RecognizerResult]:
        """The personal values in `text`, without overlaps. CPU-bound: call off the loop."""
        results = self._analyzer.analyze(
            text, language="en", entities=self._entities, score_threshold=SCORE_THRESHOLD
        )
        kept: list[RecognizerResult] = []
        ranked = sorted(
            results,
            key=lambda r: (-_PRIORITY.get(r.entity_type, 0), -r.score, r.start - r.end),
        )
        for result in ranked:
            value = text[result.start : result.end]
            if result.entity_type == "PERSON" and (
                _NOT_A_NAME.search(value) or len(value.split()) > 5
            ):
                continue
            if all(result.end <= k.start or result.start >= k.end for k in kept):
                kept.append(result)
        return sorted(kept, key=lambda r: r.start)

    async def redact(self, thread_key: str, text: str, *, user: str) -> Redaction:
        # Presidio is CPU-bound: analyzing in a thread keeps the worker's loop streaming.
        found = await asyncio.to_thread(self.find, text)
        counts: Counter[str] = Counter()
        pieces: list[str] = []
        cursor = 0
        for result in found:
            value = text[result.start : result.end]
            placeholder = await self._vault.placeholder(thread_key, result.entity_type, value, user)
            pieces += [text[cursor : result.start], placeholder]
            cursor = result.end
            counts[result.entity_type] += 1
        pieces.append(text[cursor:])
        return Redaction("".join(pieces), dict(counts))

    async def restorable(self, thread_key: str) -> dict[str, str]:
        """placeholder -> value for the values people may see again (no secrets)."""
        return {
            e.placeholder: e.value
            for e in await self._vault.entries(thread_key)
            if e.entity not in NEVER_RESTORED
        }

    async def forget_thread(self, thread_key: str) -> None:
        await self._vault.forget_thread(thread_key)

    async def forget_user(self, thread_key: str, user: str) -> int:
        return await self._vault.forget_user(thread_key, user)


def restore_text(text: str, values: Mapping[str, str], *, partial: bool = False) -> str:
    """Put known values back; placeholders the model invented stay as they are. With
    `partial`, a placeholder cut off at the end of streamed text is held back."""
    restored = _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)
    if partial:
        restored = _PARTIAL_PLACEHOLDER.sub("", restored)
    return restored


def create_redactor(settings: Settings, redis: Redis) -> Redactor:
    key = settings.require_encryption_key()
    vault = PlaceholderVault(redis, Sealer(key), lookup_key(key), ttl=settings.memory_ttl_seconds)
    analyzer = get_analyzer(settings.spacy_model, settings.redaction_patterns)
    return Redactor(analyzer, entities(settings.redaction_patterns), vault)
