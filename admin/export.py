"""`parley export`: redacted transcripts with their ratings, as JSONL for fine-tuning.

One record per answer, with the thread's earlier turns as context, in the chat-messages
format that Axolotl (`type: chat_template`) and TRL read:
- sft: {"messages": [system, ..., user, assistant], "metadata": {...}}; answers that
  people rated bad more often than good are left out unless asked for;
- kto: {"prompt": [system, ..., user], "completion": [assistant], "label": true|false}
  (TRL's KTOTrainer), rated answers only.

Memory holds only redacted text (placeholders such as <PERSON_1>), so no raw personal data
can reach the file; secrets are masked once more on the way out as a second line of
defence. Threads expire with memory (PARLEY_MEMORY_TTL_SECONDS): export regularly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from redis.asyncio import Redis

from admin.channels import ChannelStore
from admin.feedback import FeedbackStore
from parley.message import parse_thread_key
from parley.settings import Settings
from privacy.crypto import Sealer, SealError
from privacy.recognizers import redact_secrets
from workers import keys
from workers.memory import ThreadMemory, Turn

Format = Literal["sft", "kto"]


@dataclass(frozen=True, slots=True)
class ExportReport:
    threads: int
    records: int
    skipped_bad: int  # sft: answers left out because people rated them bad
    unreadable: int  # threads that could not be opened (another encryption key)


@dataclass(frozen=True, slots=True)
class ExportOptions:
    format: Format = "sft"
    include_bad: bool = False
    platform: str | None = None
    channel: str | None = None


class TranscriptExporter:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        key = settings.require_encryption_key()
        self._redis = redis
        self._memory = ThreadMemory(
            redis, Sealer(key), ttl=settings.memory_ttl_seconds, max_turns=1
        )
        self._channels = ChannelStore(redis, settings)
        self._feedback = FeedbackStore(redis, ttl=settings.memory_ttl_seconds)

    async def export(self, out: TextIO, options: ExportOptions) -> ExportReport:
        threads = records = skipped = unreadable = 0
        async for thread_key in self._threads():
            platform, tenant, channel, _ = parse_thread_key(thread_key)
            if options.platform and platform != options.platform:
                continue
            if options.channel and channel != options.channel:
                continue
            try:
                turns = await self._memory.load(thread_key)
            except (SealError, ValueError):
                unreadable += 1
                continue
            threads += 1
            policy = await self._channels.resolve(platform, tenant, channel, direct=False)
            system = {"role": "system", "content": policy.system_prompt}
            for index, turn in enumerate(turns):
                if turn.role != "assistant" or index == 0 or turns[index - 1].role != "user":
                    continue
                ratings = await self._feedback.ratings(turn.message_key)
                good, bad = ratings.get("good", 0), ratings.get("bad", 0)
                context = [system, *(_message(t) for t in turns[:index])]
                meta = {
                    "platform": platform,
                    "channel": channel,
                    # A stable id that groups a thread's records without naming the thread.
                    "thread": hashlib.sha256(thread_key.encode()).hexdigest()[:16],
                    "model": turn.model or "unknown",
                    "rating": {"good": good, "bad": bad},
                }
                record: dict[str, Any]
                if options.format == "kto":
                    if good == bad:
                        continue  # unrated or undecided: no label to learn from
                    record = {
                        "prompt": context,
                        "completion": [_message(turn)],
                        "label": good > bad,
                        "metadata": meta,
                    }
                else:
                    if bad > good and not options.include_bad:
                        skipped += 1
                        continue
                    record = {"messages": [*context, _message(turn)], "metadata": meta}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                records += 1
        return ExportReport(threads, records, skipped, unreadable)

    async def _threads(self) -> AsyncIterator[str]:
        prefix = keys.memory("")
        found = [
            (key if isinstance(key, str) else key.decode())[len(prefix) :]
            async for key in self._redis.scan_iter(match=f"{prefix}*", count=500)
        ]
        for thread_key in sorted(found):  # a stable order, for diffs between exports
            yield thread_key


def _message(turn: Turn) -> dict[str, str]:
    return {"role": turn.role, "content": redact_secrets(turn.content)}
