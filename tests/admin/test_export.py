from __future__ import annotations

import io
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from admin.channels import ChannelStore, Field
from admin.export import ExportOptions, TranscriptExporter
from admin.feedback import FeedbackStore
from parley.message import thread_key
from tests.support.config import make_sealer, make_settings
from workers.memory import ThreadMemory, Turn

THREAD = thread_key("slack", "T1", "C1", "1700000000.000100")
OTHER = thread_key("teams", "tenant-1", "19:abc@thread.tacv2", "1700000000123")


async def _conversation(aredis: Redis) -> None:
    memory = ThreadMemory(aredis, make_sealer(), ttl=600, max_turns=50)
    feedback = FeedbackStore(aredis, ttl=600)
    turns = {
        THREAD: [
            Turn("user", "I'm <PERSON_1>, my VPN fails", 9, "m1", user="UANN"),
            Turn("assistant", "Restart the VPN client, <PERSON_1>.", 9, "m1", model="llama-3"),
            Turn("user", "Still failing. Token ghp_abcdefghijklmnopqrstuvwxyz0123456789", 9, "m2"),
            Turn("assistant", "Open a ticket.", 4, "m2", model="llama-3"),
        ],
        OTHER: [
            Turn("user", "How many vacation days?", 5, "t1", user="aad-1"),
            Turn("assistant", "25 days.", 3, "t1", model="llama-3"),
        ],
    }
    for key, items in turns.items():
        async with aredis.pipeline(transaction=True) as pipe:
            memory.stage_append(pipe, key, items)
            for turn in items:
                if turn.role == "assistant":
                    platform = key.split(":", 1)[0]
                    feedback.stage_answer(
                        pipe,
                        platform=platform,
                        tenant=key.split(":")[1],
                        channel="C1" if platform == "slack" else "19:abc@thread.tacv2",
                        message_ids=[f"answer-{turn.message_key}"],
                        message_key=turn.message_key,
                        model="llama-3",
                    )
            await pipe.execute()
    await feedback.rate("slack", "T1", "answer-m1", "UANN", "good")
    await feedback.rate("slack", "T1", "answer-m2", "UANN", "bad")
    await feedback.rate("slack", "T1", "answer-m2", "UBOB", "bad")
    await ChannelStore(aredis, make_settings()).change(
        "slack", "T1", "C1", Field.PERSONA, "You are the IT helpdesk."
    )


async def _export(aredis: Redis, **options: Any) -> tuple[list[dict[str, Any]], Any]:
    out = io.StringIO()
    report = await TranscriptExporter(aredis, make_settings()).export(out, ExportOptions(**options))
    return [json.loads(line) for line in out.getvalue().splitlines()], report


async def test_sft_records_carry_context_ratings_and_leave_out_bad_answers(
    aredis: Redis,
) -> None:
    await _conversation(aredis)
    records, report = await _export(aredis)
    assert (report.threads, report.records, report.skipped_bad) == (2, 2, 1)
    slack = next(r for r in records if r["metadata"]["platform"] == "slack")
    assert slack["messages"] == [
        {"role": "system", "content": "You are the IT helpdesk."},
        {"role": "user", "content": "I'm <PERSON_1>, my VPN fails"},
        {"role": "assistant", "content": "Restart the VPN client, <PERSON_1>."},
    ]
    assert slack["metadata"]["rating"] == {"good": 1, "bad": 0}
    assert slack["metadata"]["model"] == "llama-3"
    assert slack["metadata"]["channel"] == "C1"
    assert THREAD not in json.dumps(records), "threads are grouped by a hash, not named"
    teams = next(r for r in records if r["metadata"]["platform"] == "teams")
    assert teams["metadata"]["channel"] == "19:abc@thread.tacv2"
    assert teams["messages"][0]["content"] == make_settings().system_prompt

    records, report = await _export(aredis, include_bad=True)
    assert report.records == 3
    text = json.dumps(records)
    assert "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in text, "secrets are masked"
    assert "UANN" not in text, "no user ids"


async def test_kto_records_are_labelled_rated_answers_only(aredis: Redis) -> None:
    await _conversation(aredis)
    records, _ = await _export(aredis, format="kto")
    assert [r["label"] for r in records] == [True, False]
    first, second = records
    assert first["completion"] == [
        {"role": "assistant", "content": "Restart the VPN client, <PERSON_1>."}
    ]
    assert first["prompt"][-1]["role"] == "user"
    assert len(second["prompt"]) == 4, "system + the earlier turns + the question"


@pytest.mark.parametrize(
    ("option", "value", "count"), [("platform", "teams", 1), ("channel", "C1", 1)]
)
async def test_exports_can_be_narrowed(aredis: Redis, option: str, value: str, count: int) -> None:
    await _conversation(aredis)
    _, report = await _export(aredis, **{option: value})
    assert report.threads == count


async def test_threads_sealed_with_another_key_are_counted_not_fatal(aredis: Redis) -> None:
    await _conversation(aredis)
    other = make_settings(encryption_key="b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMzI=")
    report = await TranscriptExporter(aredis, other).export(io.StringIO(), ExportOptions())
    assert (report.records, report.unreadable) == (0, 2)
