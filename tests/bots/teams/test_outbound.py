"""TeamsOutbound against the fake Bot Framework (login + Bot Connector) over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bots.base import ReplyState
from bots.registry import outbound_factory
from bots.teams.connector import TeamsDeliveryError
from bots.teams.inbound import read_message
from bots.teams.outbound import (
    INFORMATIVE,
    MESSAGE_LIMIT,
    THINKING,
    TeamsOutbound,
    TeamsReply,
    create_outbound,
)
from parley.settings import Settings, SettingsError
from tests.fakes.bot_framework import (
    APP_ID,
    APP_PASSWORD,
    TENANT_ID,
    Call,
    FakeBotFramework,
    Op,
)

INTERVAL = 0.05
MakeOutbound = Callable[..., TeamsOutbound]


@pytest.fixture
def fake_bf() -> Iterator[FakeBotFramework]:
    with FakeBotFramework() as bf:
        yield bf


def _settings(bf: FakeBotFramework, **values: Any) -> Settings:
    return Settings(
        **{
            "microsoft_app_id": APP_ID,
            "microsoft_app_password": APP_PASSWORD,
            "microsoft_app_tenant_id": TENANT_ID,
            "teams_login_url": bf.login_url,
            "reply_update_interval": INTERVAL,
            **values,
        }
    )


@pytest.fixture
async def make_outbound(fake_bf: FakeBotFramework) -> AsyncIterator[MakeOutbound]:
    made: list[TeamsOutbound] = []

    def make(**values: Any) -> TeamsOutbound:
        outbound = create_outbound(_settings(fake_bf, **values))
        made.append(outbound)
        return outbound

    yield make
    for outbound in made:
        await outbound.aclose()


class States:
    """A save_state that keeps every state, and how many connector calls preceded each."""

    def __init__(self, bf: FakeBotFramework) -> None:
        self._bf = bf
        self.saved: list[ReplyState] = []
        self.calls_before: list[int] = []

    async def __call__(self, state: ReplyState) -> None:
        self.saved.append(json.loads(json.dumps(state)))  # as the ledger stores it
        self.calls_before.append(len([c for c in self._bf.calls if c.op != "token"]))

    @property
    def last(self) -> ReplyState:
        return self.saved[-1]


def _reply_to(activity: dict[str, Any]) -> dict[str, Any]:
    """What the ingress puts in reply_to for this activity."""
    from botbuilder.schema import Activity

    incoming = read_message(Activity().deserialize(activity), activity, app_id=APP_ID)
    assert incoming is not None
    return incoming.reply_to


def _personal(bf: FakeBotFramework) -> tuple[dict[str, Any], str]:
    activity = bf.personal_message("a question")
    return _reply_to(activity), activity["conversation"]["id"]


def _thread(bf: FakeBotFramework, root: str = "1700000000042") -> tuple[dict[str, Any], str]:
    activity = bf.channel_message("a question", root=root)
    return _reply_to(activity), activity["conversation"]["id"]


def _answer(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


async def _type(reply: TeamsReply, text: str, *, step: int = 8, pause: float = 0.0) -> None:
    """Feed `text` the way a generation does: the whole answer so far, growing."""
    for end in range(step, len(text) + step, step):
        await reply.update(text[:end])
        await asyncio.sleep(pause)


def _stream_calls(bf: FakeBotFramework) -> list[Call]:
    return [c for c in bf.calls_to("send") if c.body and "entities" in c.body]


def _info(body: dict[str, Any]) -> dict[str, Any]:
    [entity] = [e for e in body["entities"] if e["type"] == "streaminfo"]
    stream = {k: v for k, v in body["channelData"].items() if k != "feedbackLoopEnabled"}
    assert stream == {k: v for k, v in entity.items() if k != "type"}
    return dict(entity)


def _rateable(body: dict[str, Any]) -> bool:
    """Whether Teams shows its feedback buttons under this message."""
    return bool((body.get("channelData") or {}).get("feedbackLoopEnabled"))


async def test_a_personal_chat_streams_with_teams_streaming_protocol(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, conversation = _personal(fake_bf)
    states = States(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, states)

    # The typing indicator at once: an informative update that opens the stream.
    [first] = _stream_calls(fake_bf)
    assert first.body["type"] == "typing"
    assert first.body["text"] == INFORMATIVE
    assert _info(first.body) == {
        "type": "streaminfo",
        "streamType": "informative",
        "streamSequence": 1,
    }
    stream_id = fake_bf.messages(conversation)[0]["id"]
    assert states.saved == [{"mode": "stream", "parts": [{"id": stream_id, "streaming": True}]}]
    assert states.calls_before == [1]  # saved before any text went out

    answer = "Here is **the** answer: " + _answer(80)
    await _type(reply, answer, pause=0.01)
    await reply.finish(answer)

    calls = _stream_calls(fake_bf)
    chunks, final = calls[1:-1], calls[-1]
    assert len(chunks) >= 2  # text appeared while it was being written
    previous = ""
    for n, call in enumerate(chunks, start=2):
        assert call.body["type"] == "typing"
        assert _info(call.body) == {
            "type": "streaminfo",
            "streamId": stream_id,
            "streamType": "streaming",
            "streamSequence": n,
        }
        # Each chunk holds all the text so far.
        assert call.body["text"].startswith(previous)
        assert answer.startswith(call.body["text"])
        previous = call.body["text"]
    assert final.body["type"] == "message"
    assert final.body["text"] == answer
    assert final.body["textFormat"] == "markdown"
    assert _info(final.body) == {"type": "streaminfo", "streamId": stream_id, "streamType": "final"}
    # Only the complete answer carries Teams' feedback buttons.
    assert _rateable(final.body)
    assert not any(_rateable(c.body) for c in calls[:-1])
    assert fake_bf.message(stream_id)["feedback_loop"]
    assert all(c.status < 300 for c in fake_bf.calls)
    assert fake_bf.texts(conversation) == [answer]
    assert fake_bf.open_streams() == []
    # Addressed from the bot to the person, with the token from the login endpoint.
    assert final.body["from"]["id"] == fake_bf.bot_id
    assert final.body["recipient"]["id"] == "29:alice"
    [login] = fake_bf.token_requests
    assert login.body["tenant"] == TENANT_ID
    tokens = {c.headers["Authorization"] for c in fake_bf.calls if c.op != "token"}
    assert len(tokens) == 1


async def test_stream_chunks_are_throttled(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    interval = 0.2
    reply_to, conversation = _personal(fake_bf)
    reply = await make_outbound(reply_update_interval=interval).open_reply(
        reply_to, None, States(fake_bf)
    )
    answer = _answer(300)
    began = time.monotonic()
    await _type(reply, answer, step=4, pause=0.001)  # hundreds of updates
    elapsed = time.monotonic() - began
    await reply.finish(answer)
    times = [c.at for c in _stream_calls(fake_bf)]
    assert len(times) <= elapsed / interval + 3
    gaps = [b - a for a, b in itertools.pairwise(times)][1:-1]
    assert all(gap >= interval * 0.8 for gap in gaps)
    assert fake_bf.texts(conversation) == [answer]


async def test_a_channel_reply_is_threaded_and_its_edits_are_throttled(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    interval = 0.2
    reply_to, thread = _thread(fake_bf)
    assert thread.endswith(";messageid=1700000000042")
    states = States(fake_bf)
    reply = await make_outbound(reply_update_interval=interval).open_reply(reply_to, None, states)
    assert fake_bf.texts(thread) == [THINKING]
    [placeholder] = fake_bf.messages(thread)
    assert states.saved == [
        {"mode": "update", "parts": [{"id": placeholder["id"], "streaming": False}]}
    ]

    answer = "## Leave\nYou carry over **five** days.\n- ask HR\n- check the portal\n" + _answer(
        250
    )
    began = time.monotonic()
    await _type(reply, answer, step=4, pause=0.001)
    elapsed = time.monotonic() - began
    await reply.finish(answer)

    updates = fake_bf.calls_to("update")
    assert len(updates) <= elapsed / interval + 2
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)][:-1]
    assert all(gap >= interval * 0.8 for gap in gaps)
    assert fake_bf.texts(thread) == [answer]
    assert all(c.conversation_id == thread for c in fake_bf.calls if c.op != "token")
    assert not _stream_calls(fake_bf), "channels cannot stream"
    assert updates[-1].body["textFormat"] == "markdown"
    assert _rateable(updates[-1].body)
    assert not any(_rateable(c.body) for c in updates[:-1])
    assert fake_bf.messages(thread)[0]["feedback_loop"]


async def test_many_updates_within_one_interval_make_one_edit(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, thread = _thread(fake_bf)
    reply = await make_outbound(reply_update_interval=5.0).open_reply(
        reply_to, None, States(fake_bf)
    )
    for n in range(1, 200):
        await reply.update(_answer(n))
    await reply.finish(_answer(200))
    assert len(fake_bf.calls_to("update")) == 1
    assert fake_bf.texts(thread) == [_answer(200)]


async def test_channel_reply_once_sends_the_answer_when_it_is_complete(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    activity = fake_bf.group_message("a question")
    chat = activity["conversation"]["id"]
    reply = await make_outbound(teams_channel_reply="once").open_reply(
        _reply_to(activity), None, States(fake_bf)
    )
    [typing] = fake_bf.calls_to("send")
    assert typing.body["type"] == "typing"
    assert "entities" not in typing.body
    await _type(reply, _answer(100), pause=0.001)
    assert fake_bf.texts(chat) == []
    await reply.finish(_answer(100))
    assert fake_bf.texts(chat) == [_answer(100)]
    assert fake_bf.calls_to("update") == []
    [answer] = fake_bf.messages(chat)
    assert answer["feedback_loop"]


@pytest.mark.parametrize(
    ("kind", "op", "status", "retry_after"),
    [
        ("personal", "send", 429, 0.3),
        ("personal", "send", 412, None),
        ("personal", "send", 502, None),
        ("channel", "update", 429, 0.3),
        ("channel", "update", 504, None),
    ],
)
async def test_throttling_and_gateway_errors_are_retried(
    fake_bf: FakeBotFramework,
    make_outbound: MakeOutbound,
    kind: str,
    op: Op,
    status: int,
    retry_after: float | None,
) -> None:
    reply_to, conversation = _personal(fake_bf) if kind == "personal" else _thread(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, States(fake_bf))
    fake_bf.fail(op, status, retry_after=retry_after, times=2)
    began = time.monotonic()
    await _type(reply, _answer(30), pause=0.01)
    await reply.finish(_answer(30))
    refused = fake_bf.calls_to(op, status=status)
    assert len(refused) == 2
    if retry_after is not None:
        assert time.monotonic() - began >= 2 * retry_after
        answered = [c for c in fake_bf.calls if c.op == op and c.at > refused[-1].at]
        assert answered[0].at - refused[-1].at >= retry_after * 0.9
    assert fake_bf.texts(conversation) == [_answer(30)]
    assert fake_bf.open_streams() == []


async def test_refusals_raise_typed_errors(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, _ = _thread(fake_bf)
    outbound = make_outbound()
    fake_bf.fail("send", 429, retry_after=0, times=None)
    with pytest.raises(TeamsDeliveryError) as busy:
        await outbound.open_reply(reply_to, None, States(fake_bf))
    assert busy.value.retryable
    assert busy.value.status == 429
    assert len(fake_bf.calls_to("send")) == 6  # the first try and five retries

    fake_bf.clear_failures()
    fake_bf.fail("send", 429, retry_after=120)  # longer than a task should wait
    began = time.monotonic()
    with pytest.raises(TeamsDeliveryError) as later:
        await outbound.open_reply(reply_to, None, States(fake_bf))
    assert later.value.retryable
    assert time.monotonic() - began < 5

    fake_bf.fail("send", 403, code="BotNotInConversationRoster", message="bot removed")
    with pytest.raises(TeamsDeliveryError) as gone:
        await outbound.open_reply(reply_to, None, States(fake_bf))
    assert not gone.value.retryable
    assert (gone.value.status, gone.value.code) == (403, "BotNotInConversationRoster")

    with pytest.raises(TeamsDeliveryError) as bad:
        await outbound.open_reply({"conversation": {"id": "x"}}, None, States(fake_bf))
    assert bad.value.code == "invalid_reply_to"
    assert not bad.value.retryable


@pytest.mark.parametrize("kind", ["personal", "channel"])
async def test_a_run_after_a_crash_takes_the_reply_over_and_makes_no_second_message(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound, kind: str
) -> None:
    reply_to, conversation = _personal(fake_bf) if kind == "personal" else _thread(fake_bf)
    states = States(fake_bf)
    crashed = make_outbound()
    reply = await crashed.open_reply(reply_to, None, states)
    first_try = _answer(40)
    await _type(reply, first_try, pause=0.01)
    await asyncio.sleep(INTERVAL * 3)
    assert fake_bf.texts(conversation) == [first_try]
    await crashed.aclose()  # the worker dies mid-answer; its state was saved

    second = States(fake_bf)
    reply = await make_outbound().open_reply(reply_to, states.last, second)
    assert fake_bf.texts(conversation) == [THINKING]
    answer = "The second attempt: " + _answer(30)
    await _type(reply, answer, pause=0.005)
    await reply.finish(answer)
    assert fake_bf.texts(conversation) == [answer]
    assert fake_bf.open_streams() == []
    first_id = states.last["parts"][0]["id"]
    assert second.last == {"mode": "update", "parts": [{"id": first_id, "streaming": False}]}


async def test_a_crash_after_the_final_chunk_still_makes_one_message(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, conversation = _personal(fake_bf)
    states = States(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, states)
    stale = states.last  # says "streaming", as the crash came before the next save
    await reply.finish("done before the crash")
    assert fake_bf.open_streams() == []
    reply = await make_outbound().open_reply(reply_to, stale, States(fake_bf))
    await reply.finish("done again")
    assert fake_bf.texts(conversation) == ["done again"]
    assert fake_bf.calls_to("send", status=400) == []


async def test_a_message_deleted_meanwhile_is_sent_again(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, thread = _thread(fake_bf)
    states = States(fake_bf)
    await make_outbound().open_reply(reply_to, None, states)
    [placeholder] = fake_bf.messages(thread)
    fake_bf.delete_message(placeholder["id"])  # someone deleted it
    reply = await make_outbound().open_reply(reply_to, states.last, States(fake_bf))
    await reply.finish("here you are")
    assert fake_bf.texts(thread) == ["here you are"]


@pytest.mark.parametrize("kind", ["personal", "channel"])
async def test_a_long_answer_is_split_into_messages_teams_accepts(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound, kind: str
) -> None:
    reply_to, conversation = _personal(fake_bf) if kind == "personal" else _thread(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, States(fake_bf))
    paragraph = " ".join(f"clause{i} of the leave policy." for i in range(40))
    answer = "\n\n".join(f"{n}. {paragraph}" for n in range(120))
    assert len(answer.encode("utf-16-le")) > 80 * 1024
    for end in range(0, len(answer), 4000):
        await reply.update(answer[: end + 4000])
        await asyncio.sleep(0.005)
    await reply.finish(answer)
    texts = fake_bf.texts(conversation)
    assert len(texts) >= 2
    assert all(len(t) <= MESSAGE_LIMIT for t in texts)
    assert all(len(t.encode("utf-16-le")) <= 80 * 1024 for t in texts)
    assert "\n\n".join(texts) == answer
    assert fake_bf.open_streams() == []
    assert [c for c in fake_bf.calls if c.status >= 400] == []
    assert fake_bf.messages(conversation)[-1]["feedback_loop"], "the end of it can be rated"


async def test_a_restarted_generation_replaces_what_the_stream_showed(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, conversation = _personal(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, States(fake_bf))
    await _type(reply, "A first attempt that broke off", pause=0.01)
    await asyncio.sleep(INTERVAL * 2)
    retried = "The retried answer, complete."
    await _type(reply, retried, pause=0.01)
    await reply.finish(retried)
    assert fake_bf.texts(conversation) == [retried]
    assert [c for c in fake_bf.calls if c.status >= 400] == []


@pytest.mark.parametrize("kind", ["personal", "channel"])
async def test_fail_replaces_the_progress_with_a_notice(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound, kind: str
) -> None:
    reply_to, conversation = _personal(fake_bf) if kind == "personal" else _thread(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, States(fake_bf))
    await _type(reply, _answer(20), pause=0.01)
    await reply.fail(":warning: Sorry, the language model is not reachable right now.")
    assert fake_bf.texts(conversation) == [
        "⚠️ Sorry, the language model is not reachable right now."
    ]
    assert fake_bf.open_streams() == []
    assert not fake_bf.messages(conversation)[0]["feedback_loop"], "a notice is not rated"


async def test_the_user_stopping_the_stream_ends_the_answer_there(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, conversation = _personal(fake_bf)
    reply = await make_outbound().open_reply(reply_to, None, States(fake_bf))
    await _type(reply, _answer(10), pause=0.01)
    await asyncio.sleep(INTERVAL * 2)
    [message] = fake_bf.messages(conversation)
    fake_bf.stop_stream(message["id"])
    await _type(reply, _answer(60), pause=0.01)
    await reply.finish(_answer(60))
    calls = len(fake_bf.calls)
    assert fake_bf.texts(conversation) == [_answer(10)]
    await reply.fail("nothing more")
    assert len(fake_bf.calls) == calls


async def test_a_stream_is_ended_before_teams_time_limit_and_edited_after(
    fake_bf: FakeBotFramework,
) -> None:
    reply_to, conversation = _personal(fake_bf)
    outbound = create_outbound(_settings(fake_bf), stream_time_limit=0.3)
    try:
        reply = await outbound.open_reply(reply_to, None, States(fake_bf))
        answer = _answer(80)
        await _type(reply, answer, pause=0.02)
        await reply.finish(answer)
    finally:
        await outbound.aclose()
    assert fake_bf.texts(conversation) == [answer]
    finals = [c for c in _stream_calls(fake_bf) if _info(c.body)["streamType"] == "final"]
    assert len(finals) == 1
    updates = fake_bf.calls_to("update")
    assert updates, "edited after its stream ended"
    assert finals[0].at < updates[0].at


async def test_where_streaming_is_refused_the_answer_is_edited_instead(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, conversation = _personal(fake_bf)
    fake_bf.fail(
        "send", 403, code="ContentStreamNotAllowed", message="Content stream is not allowed"
    )
    reply = await make_outbound().open_reply(reply_to, None, States(fake_bf))
    assert fake_bf.texts(conversation) == [THINKING]
    await _type(reply, _answer(30), pause=0.01)
    await reply.finish(_answer(30))
    assert fake_bf.texts(conversation) == [_answer(30)]
    assert fake_bf.calls_to("update")


async def test_tokens_are_cached_renewed_before_expiry_and_after_a_401(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    outbound = make_outbound()
    reply_to, _ = _thread(fake_bf)
    for _ in range(3):
        await (await outbound.open_reply(reply_to, None, States(fake_bf))).finish("ok")
    assert len(fake_bf.token_requests) == 1

    fake_bf.fail("send", 401, times=1)  # the token was revoked
    await (await outbound.open_reply(reply_to, None, States(fake_bf))).finish("ok")
    assert len(fake_bf.token_requests) == 2

    fake_bf.access_token_lifetime = 2  # renewed half-way through its life
    short = make_outbound()
    await (await short.open_reply(reply_to, None, States(fake_bf))).finish("ok")
    assert len(fake_bf.token_requests) == 3
    await asyncio.sleep(1.1)
    await (await short.open_reply(reply_to, None, States(fake_bf))).finish("ok")
    assert len(fake_bf.token_requests) == 4


async def test_login_failures(fake_bf: FakeBotFramework, make_outbound: MakeOutbound) -> None:
    reply_to, _ = _thread(fake_bf)
    fake_bf.fail("token", 503, times=1)
    await (await make_outbound().open_reply(reply_to, None, States(fake_bf))).finish("ok")
    with pytest.raises(TeamsDeliveryError) as refused:
        await make_outbound(microsoft_app_password="wrong").open_reply(
            reply_to, None, States(fake_bf)
        )
    assert refused.value.code == "invalid_client"
    assert not refused.value.retryable
    assert "wrong" not in str(refused.value)


async def test_multi_tenant_bots_get_tokens_from_botframework_com(
    fake_bf: FakeBotFramework, make_outbound: MakeOutbound
) -> None:
    reply_to, _ = _thread(fake_bf)
    outbound = make_outbound(microsoft_app_type="MultiTenant", microsoft_app_tenant_id=None)
    await (await outbound.open_reply(reply_to, None, States(fake_bf))).finish("ok")
    assert [c.body["tenant"] for c in fake_bf.token_requests] == ["botframework.com"]


def test_create_outbound_explains_missing_settings(fake_bf: FakeBotFramework) -> None:
    with pytest.raises(SettingsError, match="MicrosoftAppPassword"):
        create_outbound(_settings(fake_bf, microsoft_app_password=None))
    with pytest.raises(SettingsError, match="MicrosoftAppTenantId"):
        create_outbound(_settings(fake_bf, microsoft_app_tenant_id=None))
    with pytest.raises(SettingsError, match="MicrosoftAppId"):
        create_outbound(_settings(fake_bf, microsoft_app_id=None))
    with pytest.raises(SettingsError, match="UserAssignedMSI"):
        create_outbound(_settings(fake_bf, microsoft_app_type="UserAssignedMSI"))
    assert outbound_factory("teams") is create_outbound


def test_workers_and_llm_import_nothing_from_the_bot_framework() -> None:
    code = (
        "import sys, workers.pipeline, workers.runtime, workers.celery_app, llm.tgi;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botbuilder', 'botframework')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
