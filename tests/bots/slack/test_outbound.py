"""SlackOutbound against the fake Slack Web API over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bots.base import DeliveryError, ReplyState
from bots.registry import OutboundFactory, outbound_factory
from bots.slack.mrkdwn import to_mrkdwn
from bots.slack.outbound import (
    THINKING,
    SlackDeliveryError,
    SlackOutbound,
    SlackReply,
    create_outbound,
)
from bots.split import MESSAGE_LIMIT, split_message
from parley.settings import Settings
from tests.fakes.slack_api import TEXT_LIMIT, FakeSlack
from tests.support import slack_events as ev

CHANNEL = "C0ANSWERS"
INTERVAL = 0.05

MakeOutbound = Callable[..., SlackOutbound]


class States:
    """A save_state that keeps every state, and how many Slack calls preceded each."""

    def __init__(self, slack: FakeSlack) -> None:
        self._slack = slack
        self.saved: list[ReplyState] = []
        self.calls_before: list[int] = []

    async def __call__(self, state: ReplyState) -> None:
        self.saved.append(state)
        self.calls_before.append(len(self._slack.calls))

    @property
    def last(self) -> ReplyState:
        return self.saved[-1]


@pytest.fixture
async def make_outbound(fake_slack: FakeSlack) -> AsyncIterator[MakeOutbound]:
    made: list[SlackOutbound] = []

    def make(mode: str = "stream", interval: float = INTERVAL, retries: int = 3) -> SlackOutbound:
        settings = Settings(
            slack_bot_token=ev.BOT_TOKEN,
            slack_api_url=fake_slack.url,
            slack_reply_mode=mode,
            reply_update_interval=interval,
            slack_web_api_max_retries=retries,
        )
        outbound = create_outbound(settings)
        made.append(outbound)
        return outbound

    yield make
    for outbound in made:
        await outbound.aclose()


@pytest.fixture
def thread(fake_slack: FakeSlack) -> dict[str, str]:
    root = fake_slack.add_message(CHANNEL, "a question", user="U0ASKER")
    return {"channel": CHANNEL, "thread_ts": root, "team": ev.TEAM, "user": "U0ASKER"}


def _answer(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


async def _type(reply: SlackReply, text: str, *, step: int = 8, pause: float = 0.0) -> None:
    """Feed `text` the way a generation does: the whole answer so far, growing."""
    for end in range(step, len(text) + step, step):
        await reply.update(text[:end])
        await asyncio.sleep(pause)


def _replies(slack: FakeSlack, thread: dict[str, str]) -> list[dict[str, Any]]:
    return slack.thread_replies(thread["channel"], thread["thread_ts"])


async def test_stream_mode_shows_progress_then_the_answer(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    states = States(fake_slack)
    reply = await make_outbound("stream").open_reply(thread, None, states)

    # Progress at once: a stream is open in the thread before any text exists.
    (shown,) = _replies(fake_slack, thread)
    assert shown["streaming"]
    (start,) = fake_slack.calls_to("chat.startStream")
    assert start["thread_ts"] == thread["thread_ts"]
    assert (start["recipient_team_id"], start["recipient_user_id"]) == (ev.TEAM, "U0ASKER")

    answer = "Here is **the** answer: " + _answer(60)
    await _type(reply, answer, pause=0.01)
    appends = fake_slack.calls_to("chat.appendStream")
    assert len(appends) >= 2  # text appeared while it was being written
    await reply.finish(answer)

    (final,) = _replies(fake_slack, thread)
    assert final["text"] == answer
    assert final["markdown"]
    assert fake_slack.open_streams() == []
    assert fake_slack.methods_called().count("chat.stopStream") == 1


async def test_state_is_saved_right_after_the_message_exists(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    states = States(fake_slack)
    await make_outbound("stream").open_reply(thread, None, states)
    (ts,) = [r["ts"] for r in _replies(fake_slack, thread)]
    assert states.saved == [{"mode": "stream", "parts": [{"ts": ts, "streaming": True}]}]
    assert states.calls_before == [1]  # only the startStream went out before it


async def test_update_mode_posts_a_placeholder_then_edits(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("update").open_reply(thread, None, States(fake_slack))
    (shown,) = _replies(fake_slack, thread)
    assert shown["text"] == THINKING

    answer = "## Result\nSome **bold** & a [link](https://example.com).\n- one\n- two"
    await _type(reply, answer, pause=0.01)
    await reply.finish(answer)

    (final,) = _replies(fake_slack, thread)
    assert final["text"] == to_mrkdwn(answer)
    assert final["text"].startswith("*Result*\nSome *bold* &amp; a <https://example.com|link>")
    assert fake_slack.calls_to("chat.startStream") == []


@pytest.mark.parametrize(
    ("mode", "method"), [("update", "chat.update"), ("stream", "chat.appendStream")]
)
async def test_writes_are_throttled(
    fake_slack: FakeSlack,
    make_outbound: MakeOutbound,
    thread: dict[str, str],
    mode: str,
    method: str,
) -> None:
    interval = 0.2
    reply = await make_outbound(mode, interval=interval).open_reply(
        thread, None, States(fake_slack)
    )
    answer = _answer(300)  # one message
    began = time.monotonic()
    await _type(reply, answer, step=4, pause=0.001)  # hundreds of updates
    elapsed = time.monotonic() - began
    await reply.finish(answer)

    calls = [t for name, _, t in fake_slack.calls if name == method]
    assert len(calls) <= elapsed / interval + 2
    assert len(fake_slack.calls) < 40
    # Spaced by the interval; only finish() writes without waiting.
    gaps = [b - a for a, b in itertools.pairwise(calls)][:-1]
    assert all(gap >= interval * 0.8 for gap in gaps)
    assert _replies(fake_slack, thread)[0]["text"] == answer


async def test_many_updates_within_one_interval_make_one_edit(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("update", interval=5.0).open_reply(thread, None, States(fake_slack))
    for n in range(1, 200):
        await reply.update(_answer(n))
    await reply.finish(_answer(200))
    assert len(fake_slack.calls_to("chat.update")) == 1
    assert _replies(fake_slack, thread)[0]["text"] == _answer(200)


@pytest.mark.parametrize(
    ("mode", "method"),
    [
        ("update", "chat.postMessage"),
        ("update", "chat.update"),
        ("stream", "chat.startStream"),
        ("stream", "chat.appendStream"),
        ("stream", "chat.stopStream"),
    ],
)
async def test_rate_limited_calls_are_retried(
    fake_slack: FakeSlack,
    make_outbound: MakeOutbound,
    thread: dict[str, str],
    mode: str,
    method: str,
) -> None:
    fake_slack.fail(method, retry_after=0)
    reply = await make_outbound(mode).open_reply(thread, None, States(fake_slack))
    answer = _answer(30)
    await _type(reply, answer, pause=0.02)
    await reply.finish(answer)

    assert len(fake_slack.calls_to(method)) >= 2
    (final,) = _replies(fake_slack, thread)
    assert final["text"] == answer
    assert fake_slack.open_streams() == []


async def test_retry_waits_for_retry_after(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    fake_slack.fail("chat.postMessage", retry_after=1)
    await make_outbound("update").open_reply(thread, None, States(fake_slack))
    first, second = [t for name, _, t in fake_slack.calls if name == "chat.postMessage"]
    assert second - first >= 1.0


async def test_rate_limit_that_does_not_end_raises(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    fake_slack.fail("chat.postMessage", retry_after=0, times=None)
    with pytest.raises(SlackDeliveryError) as raised:
        await make_outbound("update", retries=1).open_reply(thread, None, States(fake_slack))
    assert raised.value.error == "ratelimited"
    assert raised.value.retryable
    assert len(fake_slack.calls_to("chat.postMessage")) == 2


async def test_a_crashed_reply_is_taken_over_not_duplicated(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    states = States(fake_slack)
    first = make_outbound("stream")
    reply = await first.open_reply(thread, None, states)
    await _type(reply, "The first attempt, cut short by a crash", pause=0.02)
    await asyncio.sleep(INTERVAL * 2)
    await first.aclose()  # the worker died: no finish, a stream left open
    assert fake_slack.open_streams()

    again = make_outbound("stream")
    retry = await again.open_reply(thread, states.last, states)
    answer = "The **second** attempt, complete."
    await _type(retry, answer, pause=0.01)
    await retry.finish(answer)

    (final,) = _replies(fake_slack, thread)
    assert final["text"] == to_mrkdwn(answer)
    assert fake_slack.open_streams() == []
    assert len(fake_slack.calls_to("chat.startStream")) == 1
    assert fake_slack.calls_to("chat.postMessage") == []
    assert states.last["parts"] == [{"ts": final["ts"], "streaming": False}]


async def test_taking_over_a_longer_reply_deletes_the_extra_messages(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    states = States(fake_slack)
    first = make_outbound("update")
    reply = await first.open_reply(thread, None, states)
    long_answer = "\n\n".join(_answer(120) for _ in range(8))
    await _type(reply, long_answer, step=400, pause=0.02)
    await asyncio.sleep(INTERVAL * 2)
    await first.aclose()
    assert len(_replies(fake_slack, thread)) >= 3

    retry = await make_outbound("update").open_reply(thread, states.last, states)
    await retry.finish("Short this time.")
    (final,) = _replies(fake_slack, thread)
    assert final["text"] == "Short this time."
    assert len(states.last["parts"]) == 1


async def test_taking_over_a_shorter_reply_adds_messages_after_it(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    states = States(fake_slack)
    first = make_outbound("stream")
    await first.open_reply(thread, None, states)
    await first.aclose()

    retry = await make_outbound("stream").open_reply(thread, states.last, states)
    answer = "\n\n".join(_answer(150) for _ in range(5))
    await retry.finish(answer)
    replies = _replies(fake_slack, thread)
    assert [r["text"] for r in replies] == [to_mrkdwn(p).rstrip() for p in split_message(answer)]
    assert replies[0]["ts"] == states.saved[0]["parts"][0]["ts"]


async def test_a_reply_that_does_not_extend_replaces_the_text(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("stream").open_reply(thread, None, States(fake_slack))
    await _type(reply, "A first try that went wrong", pause=0.02)
    await asyncio.sleep(INTERVAL * 2)
    assert fake_slack.calls_to("chat.appendStream")

    answer = "A *second* try, from the start."
    await _type(reply, answer, pause=0.02)
    await reply.finish(answer)

    (final,) = _replies(fake_slack, thread)
    assert final["text"] == to_mrkdwn(answer)
    assert not final["markdown"]  # the streamed Markdown blocks were replaced
    assert reply.mode == "update"
    assert fake_slack.open_streams() == []


@pytest.mark.parametrize("mode", ["stream", "update"])
async def test_a_long_answer_continues_in_further_messages(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str], mode: str
) -> None:
    code = "```python\n" + "\n".join(f"result_{i} = compute({i}) & mask" for i in range(160))
    prose = "\n\n".join(f"Paragraph {i}. " + _answer(60) for i in range(12))
    answer = f"{prose[:4000]}\n\n{code}\n```\n\n{prose[4000:]}"
    assert len(answer) >= 10_000

    reply = await make_outbound(mode).open_reply(thread, None, States(fake_slack))
    await _type(reply, answer, step=120, pause=0.003)
    await reply.finish(answer)

    parts = split_message(answer)
    replies = _replies(fake_slack, thread)
    assert len(replies) == len(parts) >= 4
    for part, shown in zip(parts, replies, strict=True):
        assert len(shown["text"]) <= TEXT_LIMIT
        # Stream mode shows Slack-rendered Markdown, update mode converted mrkdwn.
        assert shown["text"] == (part if mode == "stream" else to_mrkdwn(part).rstrip())
        assert shown["markdown"] == (mode == "stream")
    assert sum(len(p) for p in parts) < len(answer) + 40 * len(parts)
    assert any(p.startswith("```python\n") for p in parts[1:])
    assert max(len(p) for p in parts) <= MESSAGE_LIMIT
    assert fake_slack.open_streams() == []


async def test_a_streamed_part_that_ends_earlier_is_rewritten(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    first, second = "a" * 10 + " " + _answer(220), _answer(180)
    fits = f"{first}\n\n{second}"
    assert len(fits) < MESSAGE_LIMIT
    reply = await make_outbound("stream").open_reply(thread, None, States(fake_slack))
    await reply.update(fits)
    await asyncio.sleep(INTERVAL * 3)  # all of it streamed into the first message

    # Growing past the limit moves the cut back to the paragraph break.
    answer = f"{fits} " + _answer(100)
    await reply.finish(answer)
    parts = split_message(answer)
    assert parts[0].strip() == first
    (fix,) = fake_slack.calls_to("chat.update")
    assert fix["markdown_text"] == parts[0]
    assert [r["text"] for r in _replies(fake_slack, thread)] == parts
    assert fake_slack.open_streams() == []


@pytest.mark.parametrize("mode", ["stream", "update"])
async def test_fail_leaves_the_apology_only(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str], mode: str
) -> None:
    reply = await make_outbound(mode).open_reply(thread, None, States(fake_slack))
    await _type(reply, "\n\n".join(_answer(150) for _ in range(4)), step=300, pause=0.02)
    await asyncio.sleep(INTERVAL * 2)
    assert len(_replies(fake_slack, thread)) >= 2

    await reply.fail("Sorry, I could not answer that.")
    await reply.fail("Sorry again.")  # idempotent
    await reply.finish("too late")

    (final,) = _replies(fake_slack, thread)
    assert final["text"] == "Sorry, I could not answer that."
    assert fake_slack.open_streams() == []


async def test_finish_twice_changes_nothing(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("stream").open_reply(thread, None, States(fake_slack))
    await reply.finish("Done.")
    calls = len(fake_slack.calls)
    await reply.finish("Done.")
    await reply.update("more")
    assert len(fake_slack.calls) == calls
    assert [r["text"] for r in _replies(fake_slack, thread)] == ["Done."]


async def test_an_empty_answer_still_closes_the_stream(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("stream").open_reply(thread, None, States(fake_slack))
    await reply.finish("   ")
    assert fake_slack.open_streams() == []
    assert _replies(fake_slack, thread)[0]["text"]


async def test_slack_errors_raise_a_delivery_error(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    fake_slack.fail("chat.postMessage", error="channel_not_found", status=200)
    with pytest.raises(SlackDeliveryError) as raised:
        await make_outbound("update").open_reply(thread, None, States(fake_slack))
    assert (raised.value.method, raised.value.error) == ("chat.postMessage", "channel_not_found")
    assert isinstance(raised.value, DeliveryError)  # what the pipeline gives up on
    assert not raised.value.retryable
    assert len(fake_slack.calls_to("chat.postMessage")) == 1  # no retry loop


async def test_an_error_while_streaming_surfaces_in_update(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("stream").open_reply(thread, None, States(fake_slack))
    fake_slack.fail("chat.appendStream", error="not_in_channel", status=200, times=None)

    async def keep_typing() -> None:
        for n in range(1, 200):
            await reply.update(_answer(n))
            await asyncio.sleep(INTERVAL / 4)

    with pytest.raises(SlackDeliveryError, match="not_in_channel"):
        await keep_typing()


async def test_message_text_is_never_logged(
    fake_slack: FakeSlack,
    make_outbound: MakeOutbound,
    thread: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    fake_slack.fail("chat.update", error="msg_too_long", status=200)
    reply = await make_outbound("update").open_reply(thread, None, States(fake_slack))
    with pytest.raises(SlackDeliveryError):
        await reply.finish("secret-answer-text")
    assert "msg_too_long" in caplog.text
    assert "secret-answer-text" not in caplog.text


async def test_without_a_recipient_stream_mode_falls_back_to_edits(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    address = {"channel": thread["channel"], "thread_ts": thread["thread_ts"]}
    reply = await make_outbound("stream").open_reply(address, None, States(fake_slack))
    await reply.finish("Hi")
    assert reply.mode == "update"
    assert [r["text"] for r in _replies(fake_slack, thread)] == ["Hi"]


async def test_a_bad_address_is_a_delivery_error(make_outbound: MakeOutbound) -> None:
    with pytest.raises(SlackDeliveryError, match="invalid_reply_to"):
        await make_outbound().open_reply({"channel": "C1"}, None, States(FakeSlack()))


def test_is_the_registered_slack_outbound() -> None:
    factory: OutboundFactory = create_outbound  # mypy checks the Outbound protocol here
    assert outbound_factory("slack") is factory


async def test_the_first_streamed_text_goes_out_without_waiting_an_interval(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    # The empty stream that opened the reply shows no text: pacing starts with the text.
    reply = await make_outbound("stream", interval=5.0).open_reply(thread, None, States(fake_slack))
    await reply.update("Hello there ")
    await asyncio.sleep(0.5)  # well under the 5 s interval
    assert len(fake_slack.calls_to("chat.appendStream")) == 1
    await reply.update("Hello there, friend ")  # the next write waits the interval
    await asyncio.sleep(0.3)
    assert len(fake_slack.calls_to("chat.appendStream")) == 1
    await reply.finish("Hello there, friend")
    assert _replies(fake_slack, thread)[0]["text"] == "Hello there, friend"


async def test_update_mode_paces_the_first_text_after_its_placeholder(
    fake_slack: FakeSlack, make_outbound: MakeOutbound, thread: dict[str, str]
) -> None:
    reply = await make_outbound("update", interval=5.0).open_reply(thread, None, States(fake_slack))
    await reply.update("Hello there ")
    await asyncio.sleep(0.3)
    assert fake_slack.calls_to("chat.update") == []  # "Thinking…" shows meanwhile
    await reply.finish("Hello there")
    assert _replies(fake_slack, thread)[0]["text"] == "Hello there"
